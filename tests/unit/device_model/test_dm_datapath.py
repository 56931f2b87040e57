"""TX/RX rings over guest memory, the L2 switch, and exact accounting."""

from __future__ import annotations

import pytest

from device_model import Adapter, ErrorSource, PeStateCode, QueueUplink
from device_model.nic import registers as R
from device_model.nic.descriptor import DD, DescError, error_status
from device_model.pci import ids
from device_model.pci.layouts import AER_CAP
from device_model.testkit import MiniDriver, PfDriver, RamGuest, frame
from vfio_user.memory import DmaMap, GuestMemory

Up = tuple[PfDriver, list[MiniDriver]]
OTHER = bytes.fromhex("020000000099")
BCAST = b"\xff" * 6


def test_vf_to_uplink_and_back(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    _, (v0, _) = up
    f = frame(OTHER, v0.mac(), b"hello")
    (slot,) = v0.post_tx([f])
    assert v0.tx_status(slot) == DD and uplink.take() == [f]
    reply = frame(v0.mac(), OTHER, b"world", size=100)
    uplink.inject(reply)
    assert v0.received() == [(reply, 0)]
    led = adapter.vf(0).nic.ledger
    assert (led.tx_posted, led.tx_sent, led.rx_arrived, led.rx_delivered) == (1, 1, 1, 1)
    assert adapter.switch.uplink_tx == 1 and adapter.switch.uplink_rx == 1


def test_local_unicast_and_broadcast(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    pf, (v0, v1) = up
    v0.post_tx([frame(v1.mac(), v0.mac(), b"to-v1"), frame(pf.mac(), v0.mac(), b"to-pf")])
    assert [f[14:19] for f, _ in v1.received()] == [b"to-v1"]
    assert [f[14:19] for f, _ in pf.received()] == [b"to-pf"]
    assert uplink.take() == []
    b = frame(BCAST, v1.mac(), b"all")
    v1.post_tx([b])
    assert pf.received() == [(b, 0)] and v0.received() == [(b, 0)] and v1.received() == []
    assert uplink.take() == [b]
    uplink.inject(frame(BCAST, OTHER))
    assert len(pf.received()) == len(v0.received()) == len(v1.received()) == 1


def test_unknown_unicast_from_uplink_and_promisc(adapter: Adapter, uplink: QueueUplink,
                                                 up: Up) -> None:
    pf, (v0, _) = up
    assert pf.mac() != v0.mac()
    stray = frame(bytes.fromhex("020000000777"), OTHER)
    uplink.inject(stray)
    assert adapter.switch.dropped == 1 and pf.received() == []
    v0.write(R.CTRL, 0b1110)  # promisc
    uplink.inject(stray)
    assert v0.received() == [(stray, 0)] and pf.received() == []


def test_port_vlans(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    _, (v0, v1) = up
    v0.write(R.VLAN, 100 | 1 << 15)
    f = frame(OTHER, v0.mac(), b"tagged")
    v0.post_tx([f])
    (out,) = uplink.take()
    assert out == f[:12] + b"\x81\x00\x00\x64" + f[12:]  # 802.1Q, VID 100
    v0.post_tx([frame(v1.mac(), v0.mac())])  # v1 is in VLAN 0: not reachable locally
    assert v1.received() == [] and len(uplink.take()) == 1
    tagged_in = v0.mac() + OTHER + b"\x81\x00\x00\x64" + b"\x88\xb5" + bytes(46)
    uplink.inject(tagged_in)
    assert v0.received() == [(tagged_in[:12] + tagged_in[16:], 100)]  # tag stripped, VID reported
    uplink.inject(frame(v0.mac(), OTHER))  # untagged: VLAN 0, v0's MAC is not there
    assert v0.received() == [] and adapter.switch.dropped == 1


def test_switch_ctrl_loopback_and_uplink(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    pf, (v0, v1) = up
    pf.write(R.SWITCH_CTRL, 0b10)  # no loopback: everything goes out of the uplink
    v0.post_tx([frame(v1.mac(), v0.mac())])
    assert v1.received() == [] and len(uplink.take()) == 1
    pf.write(R.SWITCH_CTRL, 0b01)  # no uplink
    v0.post_tx([frame(OTHER, v0.mac())])
    uplink.inject(frame(v0.mac(), OTHER))
    assert uplink.take() == [] and v0.received() == []
    assert pf.read(R.SW_DROPPED, 8) == 2 and pf.read(R.SW_UPLINK_RX, 8) == 1


def test_anti_spoof_and_bad_lengths_complete_with_errors(adapter: Adapter, uplink: QueueUplink,
                                                         up: Up) -> None:
    pf, (v0, _) = up
    pf.write(R.VFCFG + 12, 1)  # anti-spoof on VF 0
    slots = v0.post_tx([frame(OTHER, OTHER), b"\x02" * 10, frame(OTHER, v0.mac(), size=1600),
                        frame(OTHER, v0.mac())])
    statuses = [v0.tx_status(s) for s in slots]
    assert statuses == [error_status(DescError.SPOOFED), error_status(DescError.BAD_LENGTH),
                        error_status(DescError.BAD_LENGTH), DD]
    led = adapter.vf(0).nic.ledger
    assert (led.tx_errors, led.tx_sent) == (3, 1) and len(uplink.take()) == 1
    assert v0.read(R.ICR) & R.Cause.ERROR
    assert adapter.pes.vf(0).status().code is PeStateCode.NORMAL  # bad descriptors don't freeze
    v0.write(R.MTU, 1600)
    v0.post_tx([frame(OTHER, v0.mac(), size=1600)])
    assert len(uplink.take()) == 1


def test_unmapped_buffer_freezes_the_pe_and_accounting_holds(adapter: Adapter,
                                                             uplink: QueueUplink,
                                                             up: Up) -> None:
    pf, (v0, _) = up
    good = frame(OTHER, v0.mac())
    v0.post_tx([good])
    v0.guest.poke(v0._tx_bufs[2], good)
    slots = v0.post_tx([good], addr=0xDEAD0000) + v0.post_tx([good, good])
    pe = adapter.pes.vf(0)
    assert pe.status().code is PeStateCode.FROZEN
    assert adapter.pes.vf(1).status().code is PeStateCode.NORMAL  # only that VF
    led = adapter.vf(0).nic.ledger
    # the doorbell for the last two was dropped by the frozen MMIO gate: never posted
    pending = adapter.vf(0).nic.tx_pending
    assert (led.tx_posted, led.tx_sent, led.tx_dropped, pending) == (2, 1, 1, 0)
    assert v0.tx_status(slots[0]) == 0
    (entry,) = pe.error_log()
    assert entry.source is ErrorSource.DMA_FAULT and entry.address == 0xDEAD0000
    assert entry.aer_bit == ids.AerUncorrectable.UNSUPPORTED_REQUEST
    fn = adapter.vf(0)
    assert fn.config.stored("aer.uncor_status") & ids.AerUncorrectable.UNSUPPORTED_REQUEST
    assert fn.config.stored("status") & ids.STS_RCV_MASTER_ABORT
    assert pf.read(R.VF_ERR, 8) == 1 and pf.read(R.ERR_ADDR, 8) == 0xDEAD0000
    assert pf.read(R.ICR) & R.Cause.ADAPTER  # the PF hears about its VF
    assert len(uplink.take()) == 1
    assert v0.read(R.MTU) == 0xFFFFFFFF and v0.cfg_read(AER_CAP + 4) == 0xFFFFFFFF


def test_pending_tx_resumes_after_thaw(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    _, (v0, _) = up
    pe = adapter.pes.vf(0)
    pe.freeze("test")
    pe.thaw_mmio()  # state 4: stores reach the device, DMA still stopped
    v0.post_tx([frame(OTHER, v0.mac())] * 3)
    assert adapter.vf(0).nic.tx_pending == 3 and uplink.take() == []
    pe.thaw_dma()
    assert adapter.vf(0).nic.tx_pending == 0 and len(uplink.take()) == 3


def test_vf_txen_gates_transmit(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    pf, (v0, _) = up
    pf.write(R.VF_TXEN, 0b10, 8)
    v0.post_tx([frame(OTHER, v0.mac())])
    assert adapter.vf(0).nic.tx_pending == 1
    pf.write(R.VF_TXEN, 0b11, 8)
    assert adapter.vf(0).nic.tx_pending == 0 and len(uplink.take()) == 1


@pytest.mark.parametrize("why", ["frozen", "rx-disabled", "vf-rxen", "detached", "no-buffers",
                                 "reset"])
def test_rx_missed(adapter: Adapter, uplink: QueueUplink, up: Up, why: str) -> None:
    pf, (v0, _) = up
    if why == "frozen":
        adapter.pes.vf(0).freeze("test")
    elif why == "rx-disabled":
        v0.write(R.CTRL, 0b010)
    elif why == "vf-rxen":
        pf.write(R.VF_RXEN, 0b10, 8)
    elif why == "detached":
        adapter.vf(0).detach()
    elif why == "reset":
        adapter.pes.vf(0).activate_reset(1)
    else:
        for _ in range(v0.rx_count - 1):
            uplink.inject(frame(v0.mac(), OTHER))
    before = adapter.vf(0).nic.ledger.rx_missed
    uplink.inject(frame(v0.mac(), OTHER))
    led = adapter.vf(0).nic.ledger
    assert led.rx_missed == before + 1
    if why == "reset":
        adapter.pes.vf(0).deactivate_reset()


def test_rx_errors(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    _, (v0, _) = up
    uplink.inject(frame(v0.mac(), OTHER, size=1600))  # above MTU + 18
    v0.write(R.RX_LEN, 4)  # re-arm with tiny buffers
    v0.rx_count, v0.buf_size, v0.rx_tail, v0.rx_next = 4, 32, 0, 0
    v0.fill_rx()
    uplink.inject(frame(v0.mac(), OTHER, size=64))
    led = adapter.vf(0).nic.ledger
    assert led.rx_errors == 2 and led.rx_delivered == 0
    raw_status = v0.guest.peek(v0.rx_ring + 12, 2)
    assert int.from_bytes(raw_status, "little") == error_status(DescError.BUFFER_TOO_SMALL)
    assert adapter.pes.vf(0).status().code is PeStateCode.NORMAL


def test_rx_dma_fault_freezes(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    _, (v0, _) = up
    v0.write(R.RX_BASE_HI, 0x77)  # ring now points outside guest memory
    v0.write(R.RX_TAIL, 3)
    uplink.inject(frame(v0.mac(), OTHER))
    assert adapter.pes.vf(0).status().code is PeStateCode.FROZEN
    assert adapter.vf(0).nic.ledger.rx_errors == 1


def test_adapter_failed_completes_tx_with_error(adapter: Adapter, uplink: QueueUplink,
                                                up: Up) -> None:
    pf, _ = up
    adapter.inject_adapter_fatal()
    pe = adapter.pes.adapter
    pe.thaw_mmio()
    pe.thaw_dma()
    (slot,) = pf.post_tx([frame(OTHER, pf.mac())])
    assert pf.tx_status(slot) == error_status(DescError.ADAPTER_FAILED) and uplink.take() == []
    assert pf.read(R.STATUS) & 0b100 and pf.read(R.ADAPTER_STATUS) & 0b100


def test_dma_never_touches_memory_outside_its_map(adapter: Adapter, uplink: QueueUplink) -> None:
    backing = bytearray(b"\xAA" * 0x3000)
    mem = GuestMemory()
    mem.map(DmaMap(0x10000, 0x1000, backing, offset=0x1000))  # only the middle page
    guest = RamGuest(size=0x100000, base=0x100000)
    for m in guest:
        mem.map(m)
    pf = PfDriver(adapter.pf, guest, attach=False)
    adapter.pf.attach(mem, pf.irqs)
    pf.enable()
    pf.setup_rings(rx_count=4)
    guest.poke(pf.rx_ring, bytes.fromhex("f00f0100000000000008000000000000"))  # buf 0x10ff0
    uplink.inject(frame(pf.mac(), OTHER, size=64))  # the buffer runs past the map's end
    assert adapter.pes.adapter.status().code is PeStateCode.FROZEN
    assert backing[:0x1000] == b"\xAA" * 0x1000 and backing[0x2000:] == b"\xAA" * 0x1000
    assert backing[0x1FF0:0x2000] == b"\xAA" * 16  # not even the part inside the map
