"""A PE's state (`Pe.status`, one walk up the tree since issue 22) is what the rule says
for every combination of its own and its parent's reset, settling and freeze bits: the
nearest busy ancestor decides (unavailable, with its retry hint), then its own reset,
its own settling, then a freeze of MMIO (its own or an ancestor's), then of DMA. Some
combinations are not reachable through the model's calls (a freeze covers the PEs below
it), so the bits are set directly: the rule must hold whatever the path to them."""

from __future__ import annotations

import itertools
import math

from device_model import ManualClock, PeStateCode
from device_model.pe import Pe
from tests.unit.device_model.dm_helpers import make_adapter

BITS = ("_reset_active", "_settle_until", "_mmio_frozen", "_dma_frozen")


def _set(pe: Pe, bits: tuple[bool, ...], now: float) -> None:
    reset, settle, mmio, dma = bits
    pe._reset_active = reset
    pe._release_requested = True  # a hold with a known end: its hint is computed
    pe._hold_until = now + 0.25
    pe._settle_until = now + 1.5 if settle else None
    pe._mmio_frozen, pe._dma_frozen = mmio, dma


def _rule(pe: Pe) -> tuple[PeStateCode, int]:
    """The state by the rule, stated plainly (the model's code before issue 22)."""
    def hint(p: Pe) -> int:
        now = p._clock.now()
        left = (max(0.0, p._hold_until - now) + p._settle if p._reset_active
                else max(0.0, (p._settle_until or now) - now))
        return max(1, math.ceil(left * 1000))
    ancestors = []
    a = pe.parent
    while a is not None:
        ancestors.append(a)
        a = a.parent
    for a in ancestors:
        if a._reset_active or a._settle_until is not None:
            return PeStateCode.UNAVAILABLE, hint(a)
    if pe._reset_active:
        return PeStateCode.RESET, 0
    if pe._settle_until is not None:
        return PeStateCode.UNAVAILABLE, hint(pe)
    if pe._mmio_frozen or any(a._mmio_frozen for a in ancestors):
        return PeStateCode.FROZEN, 0
    if pe._dma_frozen or any(a._dma_frozen for a in ancestors):
        return PeStateCode.DMA_STOPPED, 0
    return PeStateCode.NORMAL, 0


def test_a_vf_pe_state_follows_the_rule_for_every_combination() -> None:
    clock = ManualClock()
    adapter = make_adapter(clock, total_vfs=2)
    top, vf = adapter.pes.adapter, adapter.pes.get(adapter.pes.vfs[0].address)
    assert vf.parent is top
    now = clock.now()
    for mine, theirs in itertools.product(itertools.product((False, True), repeat=4),
                                          repeat=2):
        _set(vf, mine, now)
        _set(top, theirs, now)
        got = vf.status()
        assert (got.code, got.unavailable_ms) == _rule(vf), (dict(zip(BITS, mine, strict=True)),
                                                             dict(zip(BITS, theirs, strict=True)))
        got = top.status()
        assert (got.code, got.unavailable_ms) == _rule(top), dict(zip(BITS, theirs, strict=True))
