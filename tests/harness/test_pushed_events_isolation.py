"""Pushed events go to the owner of the PE they concern and to no one else, on the real
platform: a guest never hears about another guest's PE (nor does a caller that owns
nothing). Who gets what is written out here; each channel's events are read up to a
call's reply, which the platform sends after every event it pushed before it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eeh_abi.hcall import Channel, Event
from eeh_abi.papr import SlotReset
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from hypervisor_shim.platform import Platform, PlatformConfig

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
PF, VF0, VF1 = 0x10000, 0x18000, 0x18100
CALLERS = ("svc", "g1", "g2", "nobody")


class Recorder:
    def __init__(self, plat: Platform, owner: str) -> None:
        self.ch = Channel.unix(str(plat.hcall_path(owner)), timeout=5)
        self.lock = threading.Lock()
        self.events: list[Event] = []
        self.ch.subscribe(self._on)
        self.ch.call(Call.QUERY_FUNCTIONS)  # connected and served from here on

    def _on(self, ev: Event) -> None:
        with self.lock:
            self.events.append(ev)

    def take(self) -> list[tuple[str, int | None]]:
        """The events pushed so far (the reply to a call comes after them)."""
        assert self.ch.call(Call.QUERY_FUNCTIONS).status == 0
        with self.lock:
            out = [(ev.name, ev.pe) for ev in self.events]
            self.events.clear()
        return out


Got = dict[str, list[tuple[str, int | None]]]


def received(r: dict[str, Recorder], want: Got, timeout: float = 5.0) -> Got:
    """What each caller received until every event in `want` has arrived (resets complete
    on the model's timers), read to a final reply: nothing may be missing or extra."""
    got: Got = {o: [] for o in r}
    deadline = time.monotonic() + timeout
    while True:
        for o in r:
            got[o] += r[o].take()
        if all(set(want.get(o, [])) <= set(got[o]) for o in r) or time.monotonic() > deadline:
            return {o: sorted(v, key=str) for o, v in got.items()}
        time.sleep(0.02)


def expect(**events: list[tuple[str, int]]) -> Got:
    return {o: sorted(events.get(o, []), key=str) for o in CALLERS}


@pytest.fixture
def rec(tmp_path: Path) -> Iterator[tuple[Platform, dict[str, Recorder]]]:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as p:
        p.add_channel("nobody")
        recs = {o: Recorder(p, o) for o in CALLERS}
        try:
            yield p, recs
        finally:
            for r in recs.values():
                r.ch.close()


def test_a_vf_error_is_told_to_its_owner_only(
        rec: tuple[Platform, dict[str, Recorder]]) -> None:
    plat, r = rec
    plat.inject_vf_error(1)
    want = expect(g2=[(Kind.PE_FROZEN, VF1)])
    assert received(r, want) == want


def test_an_adapter_error_and_its_recovery_reach_each_owner_for_its_own_pes(
        rec: tuple[Platform, dict[str, Recorder]]) -> None:
    plat, r = rec
    plat.inject_adapter_error()
    want = expect(svc=[(Kind.PE_FROZEN, PF)], g1=[(Kind.PE_FROZEN, VF0)],
                  g2=[(Kind.PE_FROZEN, VF1)])
    assert received(r, want) == want
    svc = r["svc"].ch
    assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.HOT).status == 0
    assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.DEACTIVATE).status == 0
    # the adapter PE's reset resets the VF PEs below it: their owners hear of it too
    # (docs/platform-calls.md, pe-reset-done), the caller that owns nothing does not
    want = expect(svc=[(Kind.PE_RESET_DONE, PF)], g1=[(Kind.PE_RESET_DONE, PF)],
                  g2=[(Kind.PE_RESET_DONE, PF)])
    assert received(r, want) == want
    assert svc.call(Call.CONFIGURE_PE, pe=PF).status == 0
    r_allow = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=PF, vf_pes=[VF1])
    assert r_allow.status == 0 and r_allow.get("allowed") == [VF1]
    want = expect(g2=[(Kind.LOCKOUT_LIFTED, VF1)])
    assert received(r, want) == want


def test_a_reset_is_told_to_the_owners_of_the_pes_it_reset(
        rec: tuple[Platform, dict[str, Recorder]]) -> None:
    plat, r = rec
    plat.inject_vf_error(0)
    want = expect(g1=[(Kind.PE_FROZEN, VF0)])
    assert received(r, want) == want
    g1 = r["g1"].ch
    assert g1.call(Call.SET_SLOT_RESET, pe=VF0, function=SlotReset.HOT).status == 0
    assert g1.call(Call.SET_SLOT_RESET, pe=VF0, function=SlotReset.DEACTIVATE).status == 0
    want = expect(g1=[(Kind.PE_RESET_DONE, VF0)])
    assert received(r, want) == want
