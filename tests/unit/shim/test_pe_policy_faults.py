"""The policy under faults: failed resets (3 in a row are a permanent failure), an error
while the adapter PE is in reset (a new freeze after it)."""

from __future__ import annotations

import pytest

from device_model import Adapter, AdapterConfig, ManualClock, ResetTiming
from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from hypervisor_shim.pe import Notice, PeFlag, PePolicy, PolicyConfig
from hypervisor_shim.pe.policy import PolicyError
from tests.unit.shim.test_pe_policy import OWNERS, World


def reset(w: World, rec_name: str, kind: SlotReset = SlotReset.HOT) -> None:
    rec = w.policy.by_name(rec_name)
    assert rec is not None
    assert w.policy.set_slot_reset(rec, kind).status is Status.SUCCESS
    assert w.policy.set_slot_reset(rec, SlotReset.DEACTIVATE).status is Status.SUCCESS
    w.clock.run_all()


@pytest.mark.parametrize("failures", [1, 2])
def test_failed_resets_below_the_limit_are_pushed_and_a_good_one_recovers(
        failures: int) -> None:
    w = World()
    w.adapter.inject_adapter_fatal()
    w.adapter.pes.adapter.fail_resets = failures
    for n in range(failures):
        reset(w, "adapter", SlotReset.FUNDAMENTAL)
        assert w.policy.state(w.a).state is PeState.FROZEN
        assert w.a.reset_failures == n + 1
    pushed = [n for n in w.notices if n.event == "pe-reset-done"]
    assert [n.data for n in pushed] == [{"reset": "fundamental", "failed": True}] * failures
    assert pushed[0].owners == ("svc", "g1", "g2")  # the adapter PE's owners and below
    reset(w, "adapter")
    assert w.policy.state(w.a).state is PeState.NORMAL and w.a.reset_failures == 0
    assert PeFlag.PERMANENT not in w.a.flags
    assert all(PeFlag.LOCKED_OUT in v.flags for v in w.vfs[:3])  # still until allowed


def test_third_failed_reset_in_a_row_is_permanent_for_the_pe_and_below() -> None:
    w = World()
    w.adapter.inject_adapter_fatal()
    w.adapter.pes.adapter.fail_resets = 3
    for kind in (SlotReset.HOT, SlotReset.FUNDAMENTAL, SlotReset.FUNDAMENTAL):
        reset(w, "adapter", kind)
    st = w.policy.state(w.a)
    assert (st.state, st.retry_ms) == (PeState.UNAVAILABLE, 0)
    perm = [(n.pe, n.owners, n.data.get("cause")) for n in w.notices
            if n.kind == "permanent-failure"]
    assert perm == [("adapter", ("svc",), "reset-failed"), ("vf0", ("g1",), "reset-failed"),
                    ("vf1", ("g2",), "reset-failed"), ("vf2", ("g2",), "reset-failed")]
    # vf3, not enabled and unowned, is permanently failed too but named by no notice
    assert w.policy.set_slot_reset(w.a, SlotReset.HOT).status is Status.HW_ERROR
    assert w.policy.set_eeh_option(w.vfs[0], EehOption.THAW_MMIO).status is Status.HW_ERROR
    # the operator may clear it (console eeh-reset-pe): counts restart
    w.policy.clear_permanent(w.a)
    assert w.a.reset_failures == 0 and PeFlag.PERMANENT not in w.vfs[0].flags


def test_a_vf_pe_whose_flr_fails_three_times_fails_alone() -> None:
    w = World()
    w.adapter.inject_vf_error(0)
    w.adapter.pes.vf(0).fail_resets = 3
    for _ in range(3):
        reset(w, "vf0")
    assert PeFlag.PERMANENT in w.vfs[0].flags
    assert PeFlag.PERMANENT not in w.a.flags and PeFlag.PERMANENT not in w.vfs[1].flags


def test_an_error_during_the_adapter_reset_is_a_new_freeze_with_a_new_lockout() -> None:
    clock = ManualClock(1000.0)
    adapter = Adapter(AdapterConfig(total_vfs=4, timing=ResetTiming.SPEC), clock=clock)
    adapter.pf.enable_vfs(3)
    notices: list[Notice] = []
    policy = PePolicy(adapter, OWNERS, clock=clock.now, notify=notices.append)
    a = policy.adapter_record
    adapter.inject_adapter_fatal("first")
    assert policy.set_slot_reset(a, SlotReset.HOT).status is Status.SUCCESS
    assert policy.set_slot_reset(a, SlotReset.DEACTIVATE).status is Status.SUCCESS
    clock.advance(1.0)  # settling
    adapter.inject_adapter_fatal("second, during the reset")
    assert a.freezes.count == 1  # not yet: the PE is unavailable until the reset ends
    clock.run_all()
    assert a.freezes.count == 2 and policy.state(a).state is PeState.FROZEN
    kinds = [(n.kind, n.pe) for n in notices]
    done = kinds.index(("pe-reset-done", "adapter"))
    assert ("pe-frozen", "adapter") in kinds[done:] and ("lockout-start", "adapter") in \
        kinds[done:]
    assert policy.allow_unfreeze(a, [v.address for v in policy.vf_records()[:3]]).status \
        is Status.UNEXPECTED_STATE  # the adapter has not recovered


def test_max_reset_failures_is_checked() -> None:
    with pytest.raises(PolicyError):
        PolicyConfig(max_reset_failures=0)
    assert PolicyConfig().max_reset_failures == 3


def test_absent_vfs_are_named_by_no_notice_and_permanent_vfs_are_not_locked_out() -> None:
    """Issue 19: notices (pushed events, the timeline, console events) name only the PEs
    query-pes lists; a permanently failed VF PE is not locked out by an adapter freeze,
    so no lockout-lifted is ever sent for it."""
    w = World(max_freezes=0)
    w.adapter.inject_vf_error(0)  # the first freeze is past the limit: permanent
    assert PeFlag.PERMANENT in w.vfs[0].flags
    w.policy.set_config(max_freezes=5)
    w.adapter.inject_adapter_fatal()
    assert PeFlag.LOCKED_OUT not in w.vfs[0].flags
    assert PeFlag.LOCKED_OUT in w.vfs[1].flags
    assert {n.pe for n in w.notices} - {None} <= {"adapter", "vf0", "vf1", "vf2"}
    assert not w.policy.present(w.vfs[3]) and w.policy.present(w.vfs[2])
