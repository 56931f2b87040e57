"""FLR, adapter hot and fundamental resets, state 1/5 timing, device reset, recovery flow."""

from __future__ import annotations

from dm_helpers import bring_up

from device_model import (
    Adapter,
    EventHistory,
    EventKind,
    ManualClock,
    PeStateCode,
    PeStatus,
    QueueUplink,
    ResetKind,
)
from device_model.nic import registers as R
from device_model.nic.registers import Mbx
from device_model.pci import ids
from device_model.pci.layouts import AER_CAP, SRIOV_CAP
from device_model.testkit import PfDriver, RamGuest, frame
from eeh_abi.papr import RECOVERY_RESET, RECOVERY_SIDE_EFFECT, Status

OTHER = bytes.fromhex("020000000099")


def test_vf_flr_spec_timing(spec_adapter: Adapter, guest: RamGuest, clock: ManualClock,
                            history: EventHistory) -> None:
    a = spec_adapter
    pf, (v0, _) = bring_up(a, guest)
    pf.irqs.fired.clear()
    a.vf(0).config.record_uncorrectable(ids.AerUncorrectable.COMPLETER_ABORT)  # sticky
    v0.write(R.MTU, 3000)
    v0.cfg_write(0x04, ids.CMD_MEMORY, 2)  # bus master off so a descriptor stays pending
    v0.post_tx([frame(OTHER, v0.mac())])
    v0.cfg_write(0x04, 0x6, 2)  # ...and back on: sent
    v0.cfg_write(0x04, ids.CMD_MEMORY, 2)
    v0.post_tx([frame(OTHER, v0.mac())])
    history.clear()
    v0.flr()
    assert v0.cfg_read(0x00) == 0xFFFFFFFF and v0.read(R.MTU) == 0xFFFFFFFF
    led = a.vf(0).nic.ledger
    assert (led.tx_posted, led.tx_sent, led.tx_dropped) == (2, 1, 1)
    clock.advance(0.099)
    assert v0.cfg_read(0x00) == 0xFFFFFFFF
    clock.advance(0.002)
    assert v0.cfg_read(0x04, 2) == 0
    assert v0.cfg_read(AER_CAP + 4) == ids.AerUncorrectable.COMPLETER_ABORT  # sticky
    v0.enable()
    assert v0.read(R.MTU) == R.MTU_DEFAULT and v0.read(R.TX_LEN) == 0
    assert v0.mac() == a.config.mac(1) and v0.read(R.STATUS) & 0b10
    assert pf.read(R.VFLR, 8) == 1 and pf.read(R.ICR) & R.Cause.VFLR
    assert (2, R.Vector.OTHER) in pf.irqs.fired
    assert history.kinds()[0] is EventKind.FLR_STARTED and history.kinds()[-1] is EventKind.FLR_DONE
    assert history.events[-1].time - history.events[0].time == 0.1


def test_adapter_hot_reset_states_and_effects(spec_adapter: Adapter, guest: RamGuest,
                                              clock: ManualClock, history: EventHistory) -> None:
    a = spec_adapter
    pf, (v0, _) = bring_up(a, guest)
    pe = a.pes.adapter
    a.pf.config.record_uncorrectable(ids.AerUncorrectable.ECRC)
    pe.freeze("test")
    history.clear()
    assert pe.activate_reset(ResetKind.HOT) is Status.SUCCESS
    assert pe.status() == PeStatus(PeStateCode.RESET)
    assert a.pes.vf(0).status() == PeStatus(PeStateCode.UNAVAILABLE, 1000)  # no end known yet
    assert pf.cfg_read(0x00) == 0xFFFFFFFF
    clock.advance(0.1)
    pe.deactivate_reset()  # held at least 250 ms
    assert pe.status().code is PeStateCode.RESET
    assert a.pes.vf(0).status() == PeStatus(PeStateCode.UNAVAILABLE, 150 + 1800)
    clock.advance(0.15)
    assert pe.status() == PeStatus(PeStateCode.UNAVAILABLE, 1800)
    assert pe.thaw_mmio() is Status.UNEXPECTED_STATE
    clock.advance(1.0)
    assert pe.status() == PeStatus(PeStateCode.UNAVAILABLE, 800)
    clock.advance(0.8)
    assert pe.status().code is PeStateCode.NORMAL  # the reset also cleared the freeze
    assert pe.recovery_info == RECOVERY_RESET | (1 << 28)  # hot
    assert [e.kind for e in history if e.pe == pe.address and e.kind.name.startswith("PE_")] == [
        EventKind.PE_RESET_ASSERTED, EventKind.PE_RESET_DEASSERTED, EventKind.PE_RESET_DONE]
    t0 = history.of(EventKind.PE_RESET_ASSERTED)[0].time
    done = history.of(EventKind.PE_RESET_DONE)[0].time - t0
    assert abs(done - (0.25 + 1.8)) < 1e-9
    # the adapter came back from reset: PF config cleared (sticky AER kept), VFs disabled
    assert pf.cfg_read(0x04, 2) == 0 and pf.cfg_read(SRIOV_CAP + 0x08, 2) == 0
    assert pf.cfg_read(AER_CAP + 4) == ids.AerUncorrectable.ECRC
    assert not a.vf(0).exists and v0.cfg_read(0) == 0xFFFFFFFF
    # VF PEs stay frozen (side-effect) until their own drivers thaw them
    assert a.pes.vf(0).status().code is PeStateCode.FROZEN
    assert a.pes.vf(0).recovery_info & RECOVERY_SIDE_EFFECT
    assert a.pf_resetting and pf.read(R.ADAPTER_STATUS) == 0xFFFFFFFF  # decode off after reset
    pf.enable()
    assert pf.read(R.ADAPTER_STATUS) & 0b11 == 0b11  # ready, reset in progress


def test_fundamental_reset_clears_sticky_errors(adapter: Adapter, guest: RamGuest) -> None:
    pf = PfDriver(adapter.pf, guest)
    adapter.pf.config.record_uncorrectable(ids.AerUncorrectable.ECRC)
    adapter.pf.config.write(AER_CAP + 0x0C, 4, 0)  # severities: all non-fatal (sticky)
    adapter.pes.adapter.reset(ResetKind.HOT)
    assert pf.cfg_read(AER_CAP + 4) == ids.AerUncorrectable.ECRC and pf.cfg_read(AER_CAP + 0xC) == 0
    adapter.pes.adapter.reset(ResetKind.FUNDAMENTAL)
    assert pf.cfg_read(AER_CAP + 4) == 0
    assert pf.cfg_read(AER_CAP + 0xC) == ids.AER_UNCOR_SEVERITY_DEFAULT
    assert adapter.pes.adapter.recovery_info >> 28 == 0b1010  # reset happened, fundamental


def test_vf_pe_reset_is_an_flr(spec_adapter: Adapter, guest: RamGuest,
                               clock: ManualClock) -> None:
    a = spec_adapter
    pf, (v0, _) = bring_up(a, guest)
    pe = a.pes.vf(0)
    assert pe.activate_reset(ResetKind.FUNDAMENTAL) is Status.NOT_SUPPORTED
    assert pe.activate_reset(7) is Status.PARAM_ERROR
    pe.freeze("test")
    assert pe.reset(ResetKind.HOT) is Status.SUCCESS
    assert pe.status().code is PeStateCode.RESET
    clock.advance(0.1)
    assert pe.status().code is PeStateCode.NORMAL and pe.recovery_info >> 28 == 0b1011  # FLR
    assert v0.cfg_read(0x04, 2) == 0 and pf.read(R.VFLR, 8) == 1
    a.pes.adapter.activate_reset(ResetKind.HOT)
    assert pe.activate_reset(ResetKind.HOT) is Status.UNEXPECTED_STATE
    a.pes.adapter.deactivate_reset()
    clock.run_all()


def test_device_reset(adapter: Adapter, guest: RamGuest, history: EventHistory) -> None:
    pf, (v0, _) = bring_up(adapter, guest)
    v0.write(R.MTU, 2222)
    adapter.vf(0).device_reset()
    assert v0.cfg_read(0x04, 2) == 0 and pf.read(R.VFLR, 8) == 1
    v0.enable()
    assert v0.read(R.MTU) == R.MTU_DEFAULT
    adapter.pf.device_reset()  # the PF's: PF state reset, SR-IOV set-up kept
    assert adapter.vf(0).exists and adapter.enabled_vfs() == 2
    assert EventKind.PF_RESET_IN_PROGRESS in history.kinds()
    assert EventKind.VFS_DISABLED not in history.kinds()


def test_full_recovery_flow(adapter: Adapter, guest: RamGuest, uplink: QueueUplink,
                            history: EventHistory) -> None:
    """Adapter error -> all frozen -> adapter reset and reconfigure -> VFs thaw, FLR, resume."""
    pf, vfs = bring_up(adapter, guest, num_vfs=3)
    history.clear()
    adapter.inject(adapter.pes.adapter, 12, now=True)
    assert all(c == PeStateCode.FROZEN for c in (pe.status().code for pe in adapter.pes))
    assert adapter.pes.adapter.reset(ResetKind.HOT) is Status.SUCCESS
    pf.enable()
    pf.setup_rings()
    pf.enable_vfs(3)
    for d in vfs:
        assert d.read(R.VF_MBX) == 0xFFFFFFFF  # VF PEs still frozen: nothing gets through
    pf.reset_done()
    for i, d in enumerate(vfs):
        pe = adapter.pes.vf(i)
        assert pe.thaw_mmio() is Status.SUCCESS and pe.thaw_dma() is Status.SUCCESS
        assert d.read(R.VF_MBX) == 0xFFFFFFFF  # a re-enabled VF decodes nothing yet
        d.enable()
        assert d.read(R.VF_MBX) & (Mbx.RSTI | Mbx.RSTD) == Mbx.RSTD
        d.flr()
        d.enable()
        d.setup_rings()
    for d in vfs:
        d.post_tx([frame(OTHER, d.mac())])
    assert len(uplink.take()) == 3
    kinds = history.kinds()
    first_thaw = kinds.index(EventKind.PE_MMIO_THAWED)
    assert kinds.index(EventKind.PE_RESET_DONE) < kinds.index(EventKind.PF_RESET_DONE) < first_thaw
    assert kinds[:3] == [EventKind.INJECTION_FIRED, EventKind.ERROR_LOGGED, EventKind.PE_FROZEN]


def test_reset_timing_on_an_asyncio_loop(guest: RamGuest) -> None:
    import asyncio

    from device_model import AdapterConfig, AsyncioClock, ResetTiming

    async def main() -> tuple[int, int, float]:
        timing = ResetTiming(hold=0.02, settle=0.03, flr=0.01)
        a = Adapter(AdapterConfig(total_vfs=1, timing=timing), AsyncioClock())
        pe = a.pes.adapter
        t0 = a.clock.now()
        pe.reset(ResetKind.HOT)
        during = pe.status().code
        done = asyncio.Event()
        a.events.add_listener(lambda e: done.set() if e.kind is EventKind.PE_RESET_DONE else None)
        await asyncio.wait_for(done.wait(), 5)
        assert a.internal_errors == []
        return during, pe.status().code, a.clock.now() - t0

    during, after, took = asyncio.run(main())
    assert (during, after) == (PeStateCode.RESET, PeStateCode.NORMAL) and took >= 0.05


def test_model_bugs_are_contained(spec_adapter: Adapter, guest: RamGuest,
                                  clock: ManualClock) -> None:
    a = spec_adapter
    pf = PfDriver(a.pf, guest)
    pf.enable()

    def broken(*args: object) -> bytes:
        raise RuntimeError("model bug")

    a.pf.bar0.read_bytes = broken  # type: ignore[method-assign,assignment]
    assert pf.read(R.MTU) == 0xFFFFFFFF  # the guest sees all-ones, nothing raises
    a.pf._flr_done = broken  # type: ignore[method-assign,assignment]
    pf.flr()
    clock.advance(1.0)  # the timer's exception is kept, not raised into the loop
    assert len(a.internal_errors) == 2 and "model bug" in a.internal_errors[1]
    a.internal_errors.clear()
