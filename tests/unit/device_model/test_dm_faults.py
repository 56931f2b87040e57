"""Faults at the model's edges (issue 13): rings at the top of the address space, the
address a DMA fault records, an error while a PE is in reset, and the reset fault hook."""

from __future__ import annotations

from device_model import Adapter, EventHistory, EventKind, ManualClock, PeStateCode, ResetKind
from device_model.nic import registers as R
from device_model.nic.descriptor import DESC_SIZE, DESCRIPTOR
from device_model.testkit import PfDriver, RamGuest
from vfio_user import DmaMap

TOP = 1 << 64
OTHER = bytes.fromhex("02aa00000001")


def top_mapped_pf(adapter: Adapter) -> tuple[PfDriver, RamGuest, bytearray]:
    """The PF up, with RAM at 0 and the last page of the 64-bit space mapped too."""
    guest = RamGuest(size=1 << 20, base=0)
    top = bytearray(b"\x5a" * 0x1000)
    guest.map(DmaMap(TOP - 0x1000, 0x1000, top))
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.setup_rings()
    pf.reset_done()
    return pf, guest, top


def tx_ring_at(pf: PfDriver, base: int, count: int) -> None:
    pf.write(R.TX_BASE_LO, base & 0xFFFFFFFF)
    pf.write(R.TX_BASE_HI, base >> 32)
    pf.write(R.TX_LEN, count)


def test_a_ring_that_would_wrap_past_2_64_is_not_usable(adapter: Adapter) -> None:
    """The known defect: a TX ring at 0xFFFFFFFF_FFFFFFE0 with 4 descriptors used to fault
    at "address 2**64" (ERR_ADDR and the AER header log then read 0, naming mapped RAM).
    Such a ring is now unusable: its doorbell is refused and nothing is read or written."""
    pf, _, top = top_mapped_pf(adapter)
    pf.write(R.ICR, 0xFFFFFFFF)
    tx_ring_at(pf, TOP - 0x20, 4)
    pf.write(R.TX_TAIL, 3)
    assert pf.read(R.TX_TAIL) == 0 and pf.read(R.ICR) & R.Cause.ERROR
    assert adapter.pes.adapter.status().code is PeStateCode.NORMAL
    assert adapter.pes.adapter.error_log() == ()
    assert adapter.pf.nic.ledger.tx_posted == 0 and top == b"\x5a" * 0x1000


def test_a_ring_ending_exactly_at_2_64_works(adapter: Adapter, uplink: object) -> None:
    pf, _, top = top_mapped_pf(adapter)
    base = TOP - 2 * DESC_SIZE
    tx_ring_at(pf, base, 2)
    frame = OTHER + pf.mac() + b"\x88\xb5" + bytes(50)
    buf = TOP - 0x800
    top[0x800:0x800 + len(frame)] = frame
    top[0x1000 - 32:0x1000 - 16] = DESCRIPTOR.pack(buf, len(frame), 0, 0, 0)
    pf.write(R.TX_TAIL, 1)
    assert adapter.pes.adapter.status().code is PeStateCode.NORMAL
    assert adapter.pf.nic.ledger.tx_sent == 1
    assert DESCRIPTOR.unpack(bytes(top[0x1000 - 32:0x1000 - 16]))[3] == 1  # DD


def test_a_dma_fault_records_the_start_of_the_access_everywhere(adapter: Adapter) -> None:
    """A buffer that starts mapped and runs out of its map: ERR_ADDR, the error log and the
    AER header log all name the access's start address; the detail names the first byte
    no map covers; nothing of the access was read or written."""
    pf, guest, _ = top_mapped_pf(adapter)
    end = guest.base + guest.size
    buf = end - 20
    (slot,) = pf.post_tx([OTHER + pf.mac() + bytes(50)], addr=buf)
    pe = adapter.pes.adapter
    assert pe.status().code is PeStateCode.FROZEN
    (entry,) = pe.error_log()
    assert entry.address == buf and f"0x{end:x}" in entry.detail
    assert (entry.aer["header_log2"], entry.aer["header_log3"]) == (buf >> 32, buf & 0xFFFFFFFF)
    pe.thaw_mmio()
    assert pf.read(R.ERR_ADDR, 8) == buf
    assert pf.tx_status(slot) == 0


def test_a_dma_running_past_2_64_records_its_start(adapter: Adapter) -> None:
    pf, _, top = top_mapped_pf(adapter)
    buf = TOP - 16
    pf.post_tx([OTHER + pf.mac() + bytes(50)], addr=buf)
    (entry,) = adapter.pes.adapter.error_log()
    assert entry.address == buf < TOP and "2**64" in entry.detail
    assert top == b"\x5a" * 0x1000


def test_an_error_during_the_adapter_reset_freezes_it_again_afterwards(
        spec_adapter: Adapter, clock: ManualClock, history: EventHistory) -> None:
    a = spec_adapter
    a.pf.enable_vfs(2)
    pe = a.pes.adapter
    a.inject_adapter_fatal("first")
    assert pe.activate_reset(ResetKind.HOT) == 0 and pe.deactivate_reset() == 0
    for at in (0.1, 0.5):  # reset held (state 1), then settling (state 5)
        clock.advance(at - clock.now())
        assert pe.status().code in (PeStateCode.RESET, PeStateCode.UNAVAILABLE)
        a.inject_adapter_fatal(f"during the reset at {at}")
    clock.run_all()
    # the reset completed, then the PE froze again: a new, countable freeze
    assert pe.status().code is PeStateCode.FROZEN and pe.freeze_count == 2
    kinds = [e.kind for e in history.events if e.pe == pe.address]
    done = kinds.index(EventKind.PE_RESET_DONE)
    assert EventKind.PE_FROZEN in kinds[done:]
    assert all(vf.status().code is PeStateCode.FROZEN for vf in a.pes.vfs[:2])
    assert a.failed  # the adapter error stands until the next reset
    assert pe.reset(ResetKind.HOT) == 0
    clock.run_all()
    assert pe.status().code is PeStateCode.NORMAL and not a.failed


def test_a_vf_error_during_its_flr_freezes_it_after_the_flr(
        spec_adapter: Adapter, clock: ManualClock) -> None:
    a = spec_adapter
    a.pf.enable_vfs(1)
    vf = a.pes.vf(0)
    assert vf.reset(ResetKind.HOT) == 0
    a.inject_vf_error(0)
    assert vf.status().code is PeStateCode.RESET
    clock.run_all()
    assert vf.status().code is PeStateCode.FROZEN and vf.freeze_count == 1


def test_reset_fault_hook_fails_n_resets_then_lets_them_work(
        adapter: Adapter, history: EventHistory) -> None:
    adapter.pf.enable_vfs(1)
    pe = adapter.pes.adapter
    assert pe.fail_resets == 0  # off by default
    adapter.inject_adapter_fatal()
    pe.fail_resets = 2
    for _ in range(2):
        assert pe.reset(ResetKind.FUNDAMENTAL) == 0
        assert pe.status().code is PeStateCode.FROZEN  # did not come back
    assert pe.reset(ResetKind.HOT) == 0
    assert pe.status().code is PeStateCode.NORMAL and pe.fail_resets == 0
    kinds = [e.kind for e in history.events if e.pe == pe.address and e.kind in (
        EventKind.PE_RESET_DONE, EventKind.PE_RESET_FAILED)]
    assert kinds == [EventKind.PE_RESET_FAILED] * 2 + [EventKind.PE_RESET_DONE]
    assert pe.freeze_count == 1  # a failed reset is not a new freeze
