"""A bad TX descriptor whose error-status write-back fails is dropped, counted once.

The descriptor would complete with an error status (here BAD_LENGTH), but writing that
status back faults: the ring is in a read-only map, or an armed DMA-write injection hits
it. The descriptor must then count as exactly one TX_DROPPED (not also a TX_ERROR, not
nothing), and the TX books stay balanced: posted = sent + errors + dropped + pending.
"""

from __future__ import annotations

import pytest

from device_model import Adapter, ErrorFunction, ErrorSource, PeStateCode
from device_model.function import Function
from device_model.nic import registers as R
from device_model.nic.descriptor import DESC_SIZE, DESCRIPTOR, STATUS_OFFSET
from device_model.testkit import IrqRecorder, MiniDriver, PfDriver, RamGuest
from vfio_user import DmaMap, GuestMemory

RO_RING = 0x7000_0000
SHORT = 10  # shorter than an Ethernet header: completes with BAD_LENGTH


def _stats(d: MiniDriver) -> dict[str, int]:
    return {name: d.read(R.stat_offset(name), 8) for name in R.STAT_NAMES if "TX" in name}


def _check_books(fn: Function) -> None:
    g, nic = fn.nic.ledger, fn.nic
    assert (g.tx_posted, g.tx_sent, g.tx_errors, g.tx_dropped, nic.tx_pending) == (1, 0, 0, 1, 0)
    assert g.tx_posted == g.tx_sent + g.tx_errors + g.tx_dropped + nic.tx_pending
    assert nic.balanced


def test_read_only_ring_write_back_fault(adapter: Adapter) -> None:
    ring = bytearray(0x1000)
    ring[0:DESC_SIZE] = DESCRIPTOR.pack(0x1000_0000, SHORT, 0, 0, 0)
    guest = RamGuest()
    mem = GuestMemory()
    for m in guest:
        mem.map(m)
    mem.map(DmaMap(RO_RING, len(ring), ring, writable=False))
    pf = PfDriver(adapter.pf, guest, attach=False)
    adapter.pf.attach(mem, IrqRecorder())
    pf.enable()
    pf.write(R.TX_BASE_LO, RO_RING)
    pf.write(R.TX_BASE_HI, 0)
    pf.write(R.TX_LEN, 8)
    pf.write(R.CTRL, R.Ctrl.TXEN)
    pf.write(R.TX_TAIL, 1)

    pe = adapter.pes.adapter
    assert pe.status().code is PeStateCode.FROZEN  # the failed write is a DMA fault
    (entry,) = pe.error_log()
    assert entry.source is ErrorSource.DMA_FAULT and entry.address == RO_RING + STATUS_OFFSET
    assert ring[STATUS_OFFSET : STATUS_OFFSET + 2] == b"\0\0"  # nothing written back
    _check_books(adapter.pf)
    pe.thaw_mmio()
    assert _stats(pf) == {"TX_PACKETS": 0, "TX_BYTES": 0, "TX_ERRORS": 0, "TX_DROPPED": 1}


@pytest.mark.parametrize("error_function", [ErrorFunction.DMA_WRITE_ADDR,
                                            ErrorFunction.DMA_WRITE_TARGET_ABORT])
def test_injected_write_back_fault(adapter: Adapter, up: tuple[PfDriver, list[MiniDriver]],
                                   error_function: ErrorFunction) -> None:
    _, (v0, _) = up
    status_addr = v0.tx_ring + STATUS_OFFSET  # slot 0's status word
    inj = adapter.inject(adapter.pes.vf(0), error_function, status_addr, (1 << 64) - 1)
    (slot,) = v0.post_tx([b"\x02" * SHORT])
    assert slot == 0 and adapter.injector.armed == []  # it fired, on the write-back
    pe = adapter.pes.vf(0)
    assert pe.status().code is PeStateCode.FROZEN
    (entry,) = pe.error_log()
    assert entry.error_function == inj.function and entry.address == status_addr
    assert v0.tx_status(slot) == 0
    _check_books(adapter.vf(0))
    pe.thaw_mmio()
    assert _stats(v0) == {"TX_PACKETS": 0, "TX_BYTES": 0, "TX_ERRORS": 0, "TX_DROPPED": 1}
