"""PEs: freeze gates, propagation, thaw steps, state codes, error log, recovery info."""

from __future__ import annotations

import pytest

from device_model import (
    Adapter,
    Event,
    EventHistory,
    EventKind,
    PeKind,
    PeStateCode,
    QueueUplink,
)
from device_model.errors import UnknownPeError
from device_model.nic import registers as R
from device_model.testkit import MiniDriver, PfDriver, frame
from eeh_abi.papr import RECOVERY_SIDE_EFFECT, Status
from vfio_user.contract import RegionIndex

Up = tuple[PfDriver, list[MiniDriver]]
OTHER = bytes.fromhex("020000000099")


def codes(adapter: Adapter) -> list[int]:
    return [pe.status().code for pe in adapter.pes]


def test_pe_tree_and_addresses(adapter: Adapter) -> None:
    pes = adapter.pes
    assert len(pes) == 1 + adapter.config.total_vfs
    assert pes.adapter.kind is PeKind.ADAPTER and pes.adapter.address == 0x010000
    assert pes.vf(2).address == (0x01 << 16) | ((0x80 + 2) << 8)
    assert pes.get(pes.vf(2).address) is pes.vf(2) and pes.vf(2).parent is pes.adapter
    assert adapter.function_of(pes.vf(2)) is adapter.vf(2)
    with pytest.raises(UnknownPeError):
        pes.get(0x123)
    with pytest.raises(UnknownPeError):
        pes.vf(99)


def test_adapter_freeze_propagates_with_side_effect(adapter: Adapter,
                                                    history: EventHistory) -> None:
    history.clear()
    assert adapter.pes.adapter.freeze("test") is True
    assert codes(adapter) == [PeStateCode.FROZEN] * len(adapter.pes)
    frozen = history.of(EventKind.PE_FROZEN)
    assert [e.pe for e in frozen] == [pe.address for pe in adapter.pes]  # parent first
    assert [e.data["side_effect"] for e in frozen] == [False] + [True] * len(adapter.vfs)
    assert all(e.data["origin"] == adapter.pes.adapter.address for e in frozen)
    assert adapter.pes.vf(0).recovery_info & RECOVERY_SIDE_EFFECT
    assert not adapter.pes.adapter.recovery_info & RECOVERY_SIDE_EFFECT
    assert adapter.pes.adapter.freeze("again") is False  # no new transition, no new events
    assert len(history.of(EventKind.PE_FROZEN)) == len(adapter.pes)
    assert adapter.pes.adapter.freeze_count == 1


def test_no_vf_access_succeeds_once_the_adapter_pe_froze(adapter: Adapter, uplink: QueueUplink,
                                                         up: Up) -> None:
    """Listener runs on the adapter's PE_FROZEN event, before any VF PE is marked."""
    _, (v0, _) = up
    seen: list[tuple[bytes, int, int]] = []

    def probe(e: Event) -> None:
        if e.kind is EventKind.PE_FROZEN and e.pe == adapter.pes.adapter.address:
            assert not adapter.pes.vf(0).frozen  # VF PE not marked yet...
            before = adapter.vf(0).nic.ledger.rx_missed
            uplink.inject(frame(v0.mac(), OTHER))
            seen.append((adapter.vf(0).region_read(RegionIndex.BAR0, R.MTU, 4),
                         adapter.vf(0).nic.ledger.rx_missed - before,
                         adapter.vf(0).nic.ledger.rx_delivered))

    adapter.events.add_listener(probe)
    adapter.pes.adapter.freeze("test")
    assert seen == [(b"\xff" * 4, 1, 0)]  # ...yet its MMIO and DMA are already gated


@pytest.mark.parametrize("width", [1, 2, 4, 8])
def test_frozen_mmio_loads_all_ones_and_drops_stores(adapter: Adapter, up: Up,
                                                     width: int) -> None:
    _, (v0, _) = up
    pe = adapter.pes.vf(0)
    pe.freeze("test")
    fn = adapter.vf(0)
    assert fn.region_read(RegionIndex.BAR0, R.MTU, width) == b"\xff" * width
    fn.region_write(RegionIndex.BAR0, R.MTU, (0x55).to_bytes(width, "little"))
    assert pe.thaw_mmio() is Status.SUCCESS
    assert v0.read(R.MTU) == R.MTU_DEFAULT


def test_frozen_function_sends_no_interrupts(adapter: Adapter, up: Up) -> None:
    _, (v0, _) = up
    v0.irqs.fired.clear()
    adapter.pes.vf(0).freeze("test")
    adapter.vf(0).raise_cause(R.Cause.RX)
    assert v0.irqs.fired == [] and adapter.vf(0).irq_suppressed == 1
    assert adapter.vf(0).pending_vectors == 0  # a blocked MSI-X write is not replayed


def test_thaw_is_two_steps(adapter: Adapter, history: EventHistory, uplink: QueueUplink,
                           up: Up) -> None:
    _, (v0, _) = up
    pe = adapter.pes.vf(0)
    history.clear()
    pe.freeze("test")
    assert pe.thaw_dma() is Status.UNEXPECTED_STATE  # MMIO first
    assert pe.status().code is PeStateCode.FROZEN
    assert pe.thaw_mmio() is Status.SUCCESS
    assert pe.status().code is PeStateCode.DMA_STOPPED
    assert v0.read(R.MTU) == R.MTU_DEFAULT  # MMIO works in state 4
    uplink.inject(frame(v0.mac(), OTHER))
    assert v0.received() == [] and adapter.vf(0).nic.ledger.rx_missed == 1  # DMA does not
    assert pe.thaw_dma() is Status.SUCCESS
    assert pe.status().code is PeStateCode.NORMAL and not pe.recovery_info
    uplink.inject(frame(v0.mac(), OTHER))
    assert len(v0.received()) == 1
    assert pe.thaw_mmio() is Status.SUCCESS and pe.thaw_dma() is Status.SUCCESS  # idempotent
    kinds = [e.kind for e in history if e.pe == pe.address]
    assert kinds == [EventKind.PE_FROZEN, EventKind.PE_MMIO_THAWED, EventKind.PE_DMA_THAWED]


def test_vf_pe_cannot_thaw_under_a_frozen_adapter_pe(adapter: Adapter) -> None:
    adapter.pes.adapter.freeze("test")
    vf_pe = adapter.pes.vf(1)
    assert vf_pe.thaw_mmio() is Status.UNEXPECTED_STATE
    assert vf_pe.status().code is PeStateCode.FROZEN
    adapter.pes.adapter.thaw_mmio()
    assert vf_pe.thaw_mmio() is Status.SUCCESS
    assert vf_pe.thaw_dma() is Status.UNEXPECTED_STATE  # parent DMA still stopped
    assert vf_pe.status().code is PeStateCode.DMA_STOPPED
    adapter.pes.adapter.thaw_dma()
    assert vf_pe.thaw_dma() is Status.SUCCESS
    assert codes(adapter)[:3] == [0, 2, 0]  # VF 0 still frozen, VF 1 recovered


def test_vf_freeze_is_local(adapter: Adapter, uplink: QueueUplink, up: Up) -> None:
    pf, (v0, v1) = up
    adapter.pes.vf(0).freeze("test")
    assert codes(adapter)[:3] == [0, 2, 0]
    v1.post_tx([frame(pf.mac(), v1.mac())])
    assert len(pf.received()) == 1
    v1.post_tx([frame(v0.mac(), v1.mac())])
    assert adapter.vf(0).nic.ledger.rx_missed == 1


def test_error_log_per_pe(adapter: Adapter) -> None:
    e1 = adapter.inject_vf_error(1, "first")
    e2 = adapter.inject_vf_error(1, "second")
    log = adapter.pes.vf(1).error_log()
    assert log == (e1, e2) and e1.seq < e2.seq and e1.function == "vf1"
    assert adapter.pes.vf(0).error_log() == () and adapter.pes.adapter.error_log() == ()
    j = e1.to_json()
    assert j["source"] == "vf-error" and j["pe"] == adapter.pes.vf(1).address and "aer" in j
    adapter.pes.vf(1).clear_error_log()
    assert adapter.pes.vf(1).error_log() == ()
