"""FLR and adapter PE resets return the MSI-X table and PBA to their reset values.

Reset values: every vector's address and data 0 and its Mask bit set (all vectors
masked), no pending bit. Functions a reset does not cover keep their table.
"""

from __future__ import annotations

import pytest

from device_model import Adapter, ResetKind
from device_model.function import Function
from device_model.nic import registers as R
from device_model.testkit import MiniDriver, PfDriver
from eeh_abi import nic

Up = tuple[PfDriver, list[MiniDriver]]
RX_PENDING = 1 << nic.Vector.RX
RESET_ENTRY = (0, 0, 0, int(nic.MsixVectorCtrl.MASKED))  # addr lo, addr hi, data, ctrl
ENTRY_REGS = (nic.MSIX_ENTRY_ADDR_LO, nic.MSIX_ENTRY_ADDR_HI, nic.MSIX_ENTRY_DATA,
              nic.MSIX_ENTRY_CTRL)


def _entry(v: int) -> tuple[int, int, int, int]:
    return (0xFEE0_1000 + 0x10 * v, 0x1, 0x40 + v, 0)  # aimed somewhere, unmasked


def _read32(fn: Function, offset: int) -> int:
    return int.from_bytes(fn.region_read(nic.MSIX_BAR, offset, 4), "little")


def _table(fn: Function) -> list[tuple[int, ...]]:
    base = nic.MSIX_TABLE_OFFSET
    return [tuple(_read32(fn, base + nic.MSIX_ENTRY_SIZE * v + r) for r in ENTRY_REGS)
            for v in range(nic.MSIX_VECTORS)]


def _pba(fn: Function) -> int:
    return _read32(fn, nic.MSIX_PBA_OFFSET)


def _program(d: MiniDriver, fn: Function) -> None:
    """Aim and unmask every vector, and leave one pending (latched with bus master off)."""
    for v in range(nic.MSIX_VECTORS):
        for reg, value in zip(ENTRY_REGS, _entry(v), strict=True):
            offset = nic.MSIX_TABLE_OFFSET + nic.MSIX_ENTRY_SIZE * v + reg
            fn.region_write(nic.MSIX_BAR, offset, value.to_bytes(4, "little"))
    assert _table(fn) == [_entry(v) for v in range(nic.MSIX_VECTORS)]
    d.cfg_write(nic.CFG_COMMAND, nic.Command.MEMORY, 2)  # no bus master: interrupts latch
    fn.raise_cause(R.Cause.RX)
    assert _pba(fn) == RX_PENDING


def _decode_only(d: MiniDriver) -> None:
    """Memory decode back on, bus master still off (so nothing replays the PBA)."""
    d.cfg_write(nic.CFG_COMMAND, nic.Command.MEMORY, 2)


def _assert_reset(fn: Function) -> None:
    assert _table(fn) == [RESET_ENTRY] * nic.MSIX_VECTORS, fn.name
    assert _pba(fn) == 0, fn.name


@pytest.mark.parametrize("how", ["pf-flr", "adapter-hot", "adapter-fundamental"])
def test_adapter_wide_resets(adapter: Adapter, up: Up, how: str) -> None:
    pf, (v0, v1) = up
    for d, fn in zip((pf, v0, v1), adapter.functions(), strict=False):
        _program(d, fn)
    if how == "pf-flr":
        pf.flr()
    else:
        kind = ResetKind.HOT if how == "adapter-hot" else ResetKind.FUNDAMENTAL
        assert adapter.pes.adapter.reset(kind) == 0
    _decode_only(pf)
    _assert_reset(adapter.pf)
    pf.enable_vfs(2)  # the reset cleared VF Enable: bring the VFs back to look at them
    for d, fn in ((v0, adapter.vf(0)), (v1, adapter.vf(1))):
        _decode_only(d)
        _assert_reset(fn)


@pytest.mark.parametrize("how", ["vf-flr", "vf-pe-hot"])
def test_vf_resets(adapter: Adapter, up: Up, how: str) -> None:
    pf, (v0, v1) = up
    for d, fn in zip((pf, v0, v1), adapter.functions(), strict=False):
        _program(d, fn)
    if how == "vf-flr":
        v0.flr()
    else:
        assert adapter.pes.vf(0).reset(ResetKind.HOT) == 0
    _decode_only(v0)
    _assert_reset(adapter.vf(0))
    for other in (adapter.pf, adapter.vf(1)):  # untouched by VF 0's reset
        assert _table(other) == [_entry(v) for v in range(nic.MSIX_VECTORS)], other.name
        assert _pba(other) & RX_PENDING  # (the PF also latched VF 0's FLR notice)
