"""BAR0 NIC registers, BAR3 MSI-X, interrupts, mailbox and the adapter registers."""

from __future__ import annotations

from dm_helpers import bring_up, check_access_rules

from device_model import Adapter, EventHistory, EventKind
from device_model.nic import registers as R
from device_model.nic.registers import Mbx, PfMbx
from device_model.pci import ids
from device_model.testkit import IrqRecorder, MiniDriver, PfDriver, RamGuest
from vfio_user.contract import IrqIndex, RegionIndex

BAR0 = RegionIndex.BAR0
DOORBELLS = {"TX_TAIL", "RX_TAIL"}  # validated doorbells: test_tail_doorbells_are_validated


def test_every_bar0_register_follows_its_access_rules(adapter: Adapter, guest: RamGuest) -> None:
    bring_up(adapter, guest, num_vfs=1)
    checked = 0
    for fn in (adapter.vf(0), adapter.pf):
        for r in fn.bar0.layout.registers:
            if r.name not in DOORBELLS:
                check_access_rules(fn, BAR0, fn.bar0, r)
                checked += 1
    for r in adapter.pf.msix.layout.registers:
        check_access_rules(adapter.pf, R.MSIX_BAR, adapter.pf.msix, r)
        checked += 1
    assert checked > 350


def test_tail_doorbells_are_validated(adapter: Adapter, guest: RamGuest) -> None:
    d = MiniDriver(adapter.pf, guest)
    d.enable()
    d.write(R.TX_TAIL, 1)  # no ring configured
    assert d.read(R.TX_TAIL) == 0 and d.read(R.ICR) & R.Cause.ERROR
    d.write(R.ICR, 0xFF)
    d.setup_rings(tx_count=8, rx_count=8)
    d.cfg_write(0x04, ids.CMD_MEMORY, 2)  # no bus master: descriptors stay pending
    d.write(R.TX_TAIL, 8)  # beyond the ring
    assert d.read(R.TX_TAIL) == 0 and d.read(R.ICR) & R.Cause.ERROR
    d.write(R.TX_TAIL, 7)  # 7 of 8: the most hardware may own
    assert d.read(R.TX_TAIL) == 7 and adapter.pf.nic.tx_pending == 7
    d.write(R.TX_TAIL, 0)  # would hand over an 8th (ring overrun): refused
    assert d.read(R.TX_TAIL) == 7 and adapter.pf.nic.tx_pending == 7
    d.write(R.RX_TAIL, 9)
    assert d.read(R.RX_TAIL) == 7  # fill_rx left it at 7
    d.write(R.TX_LEN, 8)  # reprogramming the ring empties it: pending ones are dropped
    assert d.read(R.TX_TAIL) == 0 and d.read(R.TX_HEAD) == 0
    led = adapter.pf.nic.ledger
    assert led.tx_posted == 7 and led.tx_dropped == 7 and adapter.pf.nic.tx_pending == 0
    assert d.read(R.stat_offset("TX_DROPPED"), 8) == 7


def test_stats_registers_and_soft_reset(adapter: Adapter,
                                       up: tuple[PfDriver, list[MiniDriver]]) -> None:
    _, (v0, v1) = up
    v0.post_tx([v1.mac() + v0.mac() + bytes(52)] * 3)
    assert v1.received()
    assert v0.read(R.stat_offset("TX_PACKETS"), 8) == 3
    tx_bytes = R.stat_offset("TX_BYTES")
    assert v0.read(tx_bytes) == 3 * 64 and v0.read(tx_bytes + 4) == 0  # two 32-bit halves
    assert v1.read(R.stat_offset("RX_PACKETS"), 8) == 3
    assert v1.read(R.stat_offset("RX_BYTES"), 8) == 192
    v0.write(R.stat_offset("TX_PACKETS"), 0, 8)  # read-only
    assert v0.read(R.stat_offset("TX_PACKETS"), 8) == 3
    v0.write(R.MTU, 2000)
    v0.write(R.CTRL, 1)  # CTRL.RST: registers and counters back to reset values
    assert v0.read(R.stat_offset("TX_PACKETS"), 8) == 0 and v0.read(R.MTU) == R.MTU_DEFAULT
    assert v0.read(R.CTRL) == 0 and v0.read(R.TX_LEN) == 0 and v0.read(R.STATUS) & 0b10
    assert adapter.vf(0).nic.ledger.tx_sent == 3  # the model's own books are never reset


def test_interrupt_causes_mask_and_vectors(adapter: Adapter, guest: RamGuest) -> None:
    fn = adapter.pf
    d = MiniDriver(fn, guest)
    d.cfg_write(0x04, 0x6, 2)
    fn.raise_cause(R.Cause.RX | R.Cause.MAILBOX)
    assert d.irqs.fired == []  # IMR 0: latched only
    assert d.read(R.ICR) == R.Cause.RX | R.Cause.MAILBOX
    d.write(R.IMR, R.Cause.MAILBOX)  # enabling a pending cause signals it
    assert d.irqs.fired == [(IrqIndex.MSIX, R.Vector.OTHER)]
    d.write(R.IMR, 0xFF)
    assert d.irqs.fired[-1] == (IrqIndex.MSIX, R.Vector.RX)
    d.irqs.fired.clear()
    for cause, vec in ((R.Cause.TX, 1), (R.Cause.ERROR, 3), (R.Cause.ADAPTER, 3),
                       (R.Cause.VFLR, 2), (R.Cause.LINK, 2), (R.Cause.RESET_DONE, 2)):
        fn.raise_cause(cause)
        assert d.irqs.fired[-1] == (IrqIndex.MSIX, vec), cause
    d.fn.region_write(BAR0, R.ICR, b"\x01")  # 1-byte write clears only RX
    assert d.read(R.ICR) == 0xFE


def test_interrupts_without_sink_are_latched_then_delivered(adapter: Adapter,
                                                            guest: RamGuest) -> None:
    fn = adapter.pf
    d = MiniDriver(fn, guest, attach=False)
    d.enable()
    fn.raise_cause(R.Cause.TX)
    assert fn.pending_vectors == 1 << R.Vector.TX
    assert int.from_bytes(fn.region_read(R.MSIX_BAR, 0x800, 8), "little") == 1 << R.Vector.TX
    rec = IrqRecorder()
    fn.attach(guest, rec)
    assert rec.fired == [(IrqIndex.MSIX, R.Vector.TX)] and fn.pending_vectors == 0


def test_msix_table_is_plain_storage(adapter: Adapter, guest: RamGuest) -> None:
    d = MiniDriver(adapter.pf, guest)
    d.enable()
    fn = adapter.pf
    for v in range(R.MSIX_VECTORS):
        assert int.from_bytes(fn.region_read(R.MSIX_BAR, 16 * v + 12, 4), "little") == 1
    fn.region_write(R.MSIX_BAR, 16, (0xFEE00000).to_bytes(4, "little"))
    fn.region_write(R.MSIX_BAR, 24, (0x4041).to_bytes(4, "little"))
    assert fn.region_read(R.MSIX_BAR, 16, 12) == bytes.fromhex("0000e0fe000000004140" + "0000")
    fn.raise_cause(R.Cause.TX)  # masked in our table, but QEMU owns masking: still signalled
    assert d.irqs.fired == [(IrqIndex.MSIX, R.Vector.TX)]


def test_bad_accesses_never_raise(adapter: Adapter) -> None:
    fn = adapter.pf
    assert fn.region_read(BAR0, R.PF_BAR0_SIZE - 2, 4) == b"\xff" * 4
    assert fn.region_read(RegionIndex.BAR1, 0, 4) == b"\xff" * 4
    assert fn.region_read(42, 0, 2) == b"\xff\xff"
    assert fn.region_read(RegionIndex.CONFIG, -4, 4) == b"\xff" * 4
    fn.region_write(RegionIndex.CONFIG, 4094, b"\x01\x02\x03\x04")
    fn.region_write(7, 0x10, b"")
    assert fn.bad_accesses == 6
    sizes = [r.size for r in fn.regions()]
    assert sizes == [R.PF_BAR0_SIZE, 0, 0, R.MSIX_BAR_SIZE, 0, 0, 0, 4096, 0]
    irqs = fn.irqs()
    assert [i.count for i in irqs] == [0, 0, R.MSIX_VECTORS, 0, 0]


def test_vf_config_by_the_pf(adapter: Adapter, up: tuple[PfDriver, list[MiniDriver]]) -> None:
    pf, (v0, _) = up
    mac = bytes.fromhex("020000abcdef")
    base = R.VFCFG
    pf.write(base, int.from_bytes(mac[:4], "little"))
    pf.write(base + 4, int.from_bytes(mac[4:], "little") | 1 << 31)  # admin MAC
    pf.write(base + 8, 100 | 1 << 15)  # admin port VLAN 100
    assert v0.mac() == mac and v0.read(R.MAC_HI) >> 31 == 1
    v0.set_mac(bytes.fromhex("02000000beef"))  # ignored while the PF forces one
    assert v0.mac() == mac and v0.read(R.VLAN) == 100 | 1 << 15
    pf.write(base + 4, 0)
    assert v0.mac() == bytes.fromhex("02000000beef")  # the VF's own, kept underneath
    status = pf.read(R.ADAPTER_STATUS)
    assert status & 1 and not status & 2 and (status >> 16) & 0xFF == 2
    assert status >> 24 == adapter.config.total_vfs


def test_mailbox_messages_both_ways(adapter: Adapter, history: EventHistory,
                                    up: tuple[PfDriver, list[MiniDriver]]) -> None:
    pf, (v0, v1) = up
    pf.irqs.fired.clear()
    history.clear()
    for k in range(4):
        v1.write(R.VF_MBX_MEM + 4 * k, 0x11110000 + k)
    v1.write(R.VF_MBX, Mbx.REQ)
    assert pf.read(R.MBX_REQ, 8) == 0b10 and pf.read(R.PF_MBX + 4) & PfMbx.VFREQ
    assert pf.irqs.fired == [(IrqIndex.MSIX, R.Vector.OTHER)] and pf.read(R.ICR) & R.Cause.MAILBOX
    assert pf.read(R.PF_MBX_MEM + 0x40 + 8) == 0x11110002  # VF 1's buffer via the PF window
    pf.write(R.PF_MBX + 4, PfMbx.ACK)
    assert pf.read(R.MBX_REQ, 8) == 0 and v1.read(R.VF_MBX) & Mbx.PFACK
    v1.write(R.VF_MBX, Mbx.PFACK)  # RW1C
    assert not v1.read(R.VF_MBX) & Mbx.PFACK
    pf.write(R.PF_MBX_MEM + 0x40, 0xCAFE)
    pf.write(R.PF_MBX + 4, PfMbx.STS)
    assert v1.read(R.VF_MBX) & Mbx.PFSTS and v1.read(R.VF_MBX_MEM) == 0xCAFE
    assert (IrqIndex.MSIX, R.Vector.OTHER) in v1.irqs.fired
    v1.write(R.VF_MBX, Mbx.ACK)
    assert not v1.read(R.VF_MBX) & Mbx.PFSTS and pf.read(R.MBX_ACK, 8) == 0b10
    assert not v0.read(R.VF_MBX) & (Mbx.PFSTS | Mbx.PFACK)  # VF 0 untouched
    assert history.kinds() == [EventKind.MAILBOX_TO_PF, EventKind.MAILBOX_ACK,
                               EventKind.MAILBOX_TO_VF, EventKind.MAILBOX_ACK]


def test_pf_reset_handshake_in_every_vf_mailbox(adapter: Adapter, guest: RamGuest,
                                                 history: EventHistory) -> None:
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.enable_vfs(2)
    v0 = MiniDriver(adapter.vf(0), guest)
    v0.enable()
    assert v0.read(R.VF_MBX) & (Mbx.RSTI | Mbx.RSTD) == Mbx.RSTI  # power-on: in progress
    assert pf.read(R.ADAPTER_STATUS) & 2
    pf.reset_done()
    assert v0.read(R.VF_MBX) & (Mbx.RSTI | Mbx.RSTD) == Mbx.RSTD
    assert (IrqIndex.MSIX, R.Vector.OTHER) in v0.irqs.fired
    pf.write(R.CTRL, 1)  # PF software reset: every VF sees "reset in progress" again
    assert v0.read(R.VF_MBX) & (Mbx.RSTI | Mbx.RSTD) == Mbx.RSTI
    assert v0.read(R.CTRL) == 0  # and the VF's NIC state was reset with the PF's
    pf.enable()
    pf.reset_done()
    assert v0.read(R.VF_MBX) & (Mbx.RSTI | Mbx.RSTD) == Mbx.RSTD
    kinds = [k for k in history.kinds() if k in (EventKind.PF_RESET_IN_PROGRESS,
                                                  EventKind.PF_RESET_DONE)]
    assert kinds == [EventKind.PF_RESET_DONE, EventKind.PF_RESET_IN_PROGRESS,
                     EventKind.PF_RESET_DONE]
