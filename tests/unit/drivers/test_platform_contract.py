"""The platform contract: the same checks against the scripted platform the recovery
tests use (tests/support/scripted_platform.py) and against the real platform
(hypervisor_shim.platform.Platform). What the VF owner's channel answers and receives for
a VF PE that froze alone, froze with the adapter and was locked out, had its lockout
lifted, failed permanently, was reset (and a reset that failed). Expected values are
docs/platform-calls.md's, written here; neither platform computes them.

A check that fails only for "scripted" means the fake drifted from the real platform:
fix the fake (the recovery tests stepped through it would prove nothing otherwise)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from eeh_abi.schema import Call
from tests.support.pe_subjects import ADAPTER_PE, KINDS, PeSubject, make_subject
from tests.support.waiting import wait_for

# what a driver reads from each pushed event (guest_drivers.recovery, vf.py)
PE_FROZEN_FIELDS = {"origin", "side_effect", "reason", "freeze_count", "locked_out"}


@pytest.fixture(params=KINDS)
def s(request: pytest.FixtureRequest) -> Iterator[PeSubject]:
    with make_subject(request.param) as subject:
        yield subject


def state(s: PeSubject) -> tuple[int, int, list[str]]:
    r = s.call(Call.READ_SLOT_RESET_STATE2, pe=s.pe)
    assert r.status == 0, r
    assert {"state", "retry_ms", "flags", "capabilities"} <= set(r.ret), r.ret
    return r.get("state"), r.get("retry_ms"), list(r.get("flags"))


def test_a_pe_that_froze_alone_thaws_mmio_then_dma(s: PeSubject) -> None:
    assert state(s)[0] == PeState.NORMAL
    s.vf_error()
    ev = s.wait_event("pe-frozen")
    assert PE_FROZEN_FIELDS <= set(ev.data), ev.data
    assert (ev.pe, ev.data["side_effect"], ev.data["locked_out"], ev.data["origin"]) == \
        (s.pe, False, False, s.pe)
    assert state(s)[:2] == (PeState.FROZEN, 0)
    # DMA before MMIO: unexpected state
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_DMA).status == \
        Status.UNEXPECTED_STATE
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_MMIO).status == 0
    assert state(s)[0] == PeState.DMA_STOPPED
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_DMA).status == 0
    assert state(s)[0] == PeState.NORMAL
    # a thaw of a PE that is not frozen is a no-op, not an error
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_MMIO).status == 0
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_DMA).status == 0


def test_a_pe_frozen_with_the_adapter_is_locked_out(s: PeSubject) -> None:
    s.adapter_error()
    ev = s.wait_event("pe-frozen")
    assert PE_FROZEN_FIELDS <= set(ev.data), ev.data
    assert (ev.data["side_effect"], ev.data["locked_out"], ev.data["origin"]) == \
        (True, True, ADAPTER_PE)
    st, retry, flags = state(s)
    assert (st, retry) == (PeState.UNAVAILABLE, s.retry_ms) and "locked-out" in flags
    for call, args in ((Call.SET_EEH_OPTION, {"option": int(EehOption.THAW_MMIO)}),
                       (Call.SET_EEH_OPTION, {"option": int(EehOption.THAW_DMA)}),
                       (Call.SET_SLOT_RESET, {"function": int(SlotReset.HOT)}),
                       (Call.SET_SLOT_RESET, {"function": int(SlotReset.DEACTIVATE)}),
                       (Call.CONFIGURE_PE, {})):
        r = s.call(call, pe=s.pe, **args)
        assert (r.status, r.get("retry_ms")) == (Status.BUSY, s.retry_ms), (call, args, r)
    assert state(s)[0] == PeState.UNAVAILABLE  # refused calls changed nothing


def test_a_lifted_lockout_is_pushed_and_the_pe_is_still_frozen(s: PeSubject) -> None:
    s.adapter_error()
    s.lift()
    ev = s.wait_event("lockout-lifted")
    assert ev.pe == s.pe
    st, _, flags = state(s)
    assert st == PeState.FROZEN and "locked-out" not in flags  # the driver thaws it
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_MMIO).status == 0
    assert s.call(Call.SET_EEH_OPTION, pe=s.pe, option=EehOption.THAW_DMA).status == 0
    assert state(s)[0] == PeState.NORMAL


def test_a_permanently_failed_pe(s: PeSubject) -> None:
    s.fail_permanently()
    ev = s.wait_event("permanent-failure")
    assert ev.pe == s.pe and "freeze_count" in ev.data, ev
    st, retry, flags = state(s)
    assert (st, retry) == (PeState.UNAVAILABLE, 0) and "permanent" in flags
    for call, args in ((Call.SET_EEH_OPTION, {"option": int(EehOption.THAW_MMIO)}),
                       (Call.SET_SLOT_RESET, {"function": int(SlotReset.HOT)}),
                       (Call.CONFIGURE_PE, {})):
        assert s.call(call, pe=s.pe, **args).status == Status.HW_ERROR, (call, args)


def test_a_reset_cycle(s: PeSubject) -> None:
    s.vf_error()
    assert s.call(Call.SET_SLOT_RESET, pe=s.pe, function=SlotReset.FUNDAMENTAL).status == \
        Status.NOT_SUPPORTED  # a VF PE: FLR only
    assert s.call(Call.SET_SLOT_RESET, pe=s.pe, function=SlotReset.HOT).status == 0
    assert state(s)[0] == PeState.RESET
    assert s.call(Call.CONFIGURE_PE, pe=s.pe).status == Status.UNEXPECTED_STATE  # held
    assert s.call(Call.SET_SLOT_RESET, pe=s.pe, function=SlotReset.DEACTIVATE).status == 0
    done = s.wait_event("pe-reset-done")
    assert done.pe == s.pe and done.data.get("reset") == "hot" and not done.data.get("failed")
    assert wait_for(lambda: state(s)[0] == PeState.NORMAL, 10)
    assert s.call(Call.CONFIGURE_PE, pe=s.pe).status == 0


def test_a_reset_that_does_not_bring_the_pe_back(s: PeSubject) -> None:
    s.vf_error()
    s.fail_next_reset()
    assert s.call(Call.SET_SLOT_RESET, pe=s.pe, function=SlotReset.HOT).status == 0
    assert s.call(Call.SET_SLOT_RESET, pe=s.pe, function=SlotReset.DEACTIVATE).status == 0
    done = s.wait_event("pe-reset-done")
    assert (done.pe, done.data.get("failed")) == (s.pe, True), done
    assert wait_for(lambda: state(s)[0] == PeState.FROZEN, 10)


def test_error_detail_registration_and_reports(s: PeSubject) -> None:
    s.vf_error()
    r = s.call(Call.SLOT_ERROR_DETAIL, pe=s.pe, function=1)
    assert r.status == 0
    log = r.get("log")
    assert isinstance(log, list) and log and all(
        isinstance(e, dict) and isinstance(e.get("seq"), int) for e in log), log
    assert s.call(Call.REGISTER, addr=s.pe, driver="eeh-vf", handlers=True).status == 0
    assert s.call(Call.REPORT, step="probe", pe=s.pe, detail={}).status == 0
