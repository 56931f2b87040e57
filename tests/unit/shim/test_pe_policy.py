"""PE policy with an injected clock: freeze window, lockout decisions, authorization."""

from __future__ import annotations

import pytest

from device_model import Adapter, AdapterConfig, ManualClock
from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from hypervisor_shim.pe import HOST, Action, Notice, PeFlag, PePolicy, PolicyConfig, authorize
from hypervisor_shim.pe.policy import PolicyError

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2", "vf2": "g2"}


class World:
    def __init__(self, owners: dict[str, str] | None = None, **policy: object) -> None:
        self.clock = ManualClock(1000.0)
        self.adapter = Adapter(AdapterConfig(total_vfs=4), clock=self.clock)
        self.adapter.pf.enable_vfs(3)
        self.notices: list[Notice] = []
        self.policy = PePolicy(self.adapter, owners or OWNERS,
                               config=PolicyConfig(**policy),  # type: ignore[arg-type]
                               clock=self.clock.now, notify=self.notices.append)
        self.a = self.policy.adapter_record
        self.vfs = self.policy.vf_records()

    def kinds(self) -> list[tuple[str, str | None]]:
        return [(n.kind, n.pe) for n in self.notices]

    def recover_adapter(self) -> None:
        p = self.policy
        assert p.set_slot_reset(self.a, SlotReset.HOT).status is Status.SUCCESS
        assert p.set_slot_reset(self.a, SlotReset.DEACTIVATE).status is Status.SUCCESS
        self.clock.run_all()
        assert p.configure_pe(self.a).status is Status.SUCCESS


def test_freeze_window_five_pass_sixth_is_permanent_and_window_restarts() -> None:
    w = World()
    for i in range(5):
        w.adapter.inject_vf_error(0)
        assert PeFlag.PERMANENT not in w.vfs[0].flags, f"freeze {i + 1} must not be permanent"
        assert w.policy.set_slot_reset(w.vfs[0], SlotReset.HOT).status is Status.SUCCESS
        w.policy.set_slot_reset(w.vfs[0], SlotReset.DEACTIVATE)
        w.clock.run_all()
        w.clock.advance(60)
    w.adapter.inject_vf_error(0)  # the 6th within the hour
    st = w.policy.state(w.vfs[0])
    assert (st.state, st.retry_ms) == (PeState.UNAVAILABLE, 0)
    assert w.policy.set_eeh_option(w.vfs[0], EehOption.THAW_MMIO).status is Status.HW_ERROR
    perm = [n for n in w.notices if n.kind == "permanent-failure"]
    assert [(n.pe, n.owners, n.event) for n in perm] == [("vf0", ("g1",), "permanent-failure")]
    # another VF is unaffected; a freeze after the window restarts the count
    w2 = World()
    for _ in range(5):
        w2.adapter.inject_vf_error(1)
        w2.policy.set_slot_reset(w2.vfs[1], SlotReset.HOT)
        w2.policy.set_slot_reset(w2.vfs[1], SlotReset.DEACTIVATE)
        w2.clock.run_all()
    w2.clock.advance(3601)
    w2.adapter.inject_vf_error(1)
    assert PeFlag.PERMANENT not in w2.vfs[1].flags
    assert w2.vfs[1].freezes.count == 1 and w2.vfs[1].freezes.total == 6


def test_adapter_freeze_locks_out_every_vf_until_allow_unfreeze() -> None:
    w = World(retry_hint_ms=250)
    w.adapter.inject_adapter_fatal()
    for vf in w.vfs[:3]:
        assert PeFlag.LOCKED_OUT in vf.flags
        st = w.policy.state(vf)
        assert (st.state, st.retry_ms) == (PeState.UNAVAILABLE, 250)
        r = w.policy.set_eeh_option(vf, EehOption.THAW_MMIO)
        assert (r.status, r.retry_ms) == (Status.BUSY, 250)
        assert w.policy.set_slot_reset(vf, SlotReset.HOT).status is Status.BUSY
        assert w.policy.configure_pe(vf).status is Status.BUSY
    # allow-unfreeze before the adapter recovered is refused
    addrs = [vf.address for vf in w.vfs[:3]]
    assert w.policy.allow_unfreeze(w.a, addrs).status is Status.UNEXPECTED_STATE
    w.recover_adapter()
    assert all(PeFlag.LOCKED_OUT in vf.flags for vf in w.vfs[:3]), "reset alone lifts nothing"
    r = w.policy.allow_unfreeze(w.a, addrs[:2])
    assert r.status is Status.SUCCESS and r.ret["allowed"] == addrs[:2]
    assert PeFlag.LOCKED_OUT in w.vfs[2].flags
    assert w.policy.state(w.vfs[0]).state is PeState.FROZEN
    assert w.policy.set_eeh_option(w.vfs[0], EehOption.THAW_MMIO).status is Status.SUCCESS
    assert w.policy.state(w.vfs[0]).state is PeState.DMA_STOPPED
    assert w.policy.set_eeh_option(w.vfs[0], EehOption.THAW_DMA).status is Status.SUCCESS
    assert w.policy.state(w.vfs[0]).state is PeState.NORMAL
    assert PeFlag.ISOLATED not in w.vfs[0].flags
    lifted = [(n.pe, n.owners) for n in w.notices if n.event == "lockout-lifted"]
    assert lifted == [("vf0", ("g1",)), ("vf1", ("g2",))]


def test_notices_in_order_and_pushed_to_owners() -> None:
    w = World()
    w.adapter.inject_adapter_fatal()
    frozen = [(n.pe, n.owners, n.data["side_effect"], n.data["locked_out"])
              for n in w.notices if n.kind == "pe-frozen"]
    assert frozen == [("adapter", ("svc",), False, False), ("vf0", ("g1",), True, True),
                      ("vf1", ("g2",), True, True), ("vf2", ("g2",), True, True)]
    # vf3 (not enabled, no owner) is no PE of query-pes: no notice names it (issue 19)
    # a second adapter error while recovering locks out again and counts again
    w.recover_adapter()
    w.policy.allow_unfreeze(w.a, [w.vfs[0].address])
    w.adapter.inject_adapter_fatal("again")
    assert PeFlag.LOCKED_OUT in w.vfs[0].flags
    assert w.a.freezes.count == 2


def test_vf_only_error_no_lockout_and_adapter_untouched() -> None:
    w = World()
    w.adapter.inject_vf_error(1)
    assert PeFlag.LOCKED_OUT not in w.vfs[1].flags
    assert w.policy.state(w.a).state is PeState.NORMAL
    assert w.policy.state(w.vfs[0]).state is PeState.NORMAL
    assert w.policy.set_eeh_option(w.vfs[1], EehOption.THAW_MMIO).status is Status.SUCCESS
    assert not [n for n in w.notices if n.pe in ("adapter", "vf0", "vf2")]


def test_lockout_disabled_lets_vf_calls_through_to_the_model() -> None:
    w = World(lockout=False)
    w.adapter.inject_adapter_fatal()
    assert PeFlag.LOCKED_OUT not in w.vfs[0].flags
    # the hardware still refuses a thaw under a frozen parent: -7, not -2
    r = w.policy.set_eeh_option(w.vfs[0], EehOption.THAW_MMIO)
    assert r.status is Status.UNEXPECTED_STATE


def test_bad_options_and_policy_values() -> None:
    w = World()
    assert w.policy.set_eeh_option(w.vfs[0], 9).status is Status.PARAM_ERROR
    assert w.policy.set_slot_reset(w.vfs[0], 2).status is Status.PARAM_ERROR
    assert w.policy.set_slot_reset(w.vfs[0], SlotReset.FUNDAMENTAL).status \
        is Status.NOT_SUPPORTED
    assert w.policy.allow_unfreeze(w.vfs[0], []).status is Status.PARAM_ERROR
    assert w.policy.allow_unfreeze(w.a, [0x1234]).status is Status.PARAM_ERROR
    with pytest.raises(PolicyError):
        PolicyConfig(max_freezes=-1)
    with pytest.raises(PolicyError):
        PolicyConfig(window_s=0)


@pytest.mark.parametrize(("caller", "pe", "action", "allowed"), [
    ("g1", "vf0", Action.THAW, True),
    ("g1", "vf0", Action.RESET, True),
    ("g1", "vf1", Action.THAW, False),        # another guest's VF
    ("g1", "vf1", Action.READ_STATE, False),
    ("g1", "adapter", Action.RESET, False),   # a VF owner cannot reset the adapter PE
    ("g1", "adapter", Action.ALLOW_UNFREEZE, False),
    ("g1", "vf0", Action.ALLOW_UNFREEZE, False),
    ("g1", "adapter", Action.READ_STATE, False),
    ("svc", "adapter", Action.RESET, True),
    ("svc", "adapter", Action.ALLOW_UNFREEZE, True),
    ("svc", "vf0", Action.READ_STATE, True),  # the PF owner follows VF recovery
    ("svc", "vf0", Action.THAW, False),
    ("svc", "vf0", Action.RESET, False),
    ("svc", "vf0", Action.ERROR_DETAIL, False),
    ("g2", "vf2", Action.ERROR_DETAIL, True),
    ("nobody", "vf3", Action.READ_STATE, False),  # unowned VF
    (HOST, "vf0", Action.THAW, False),
])
def test_authorization_matrix(caller: str, pe: str, action: Action, allowed: bool) -> None:
    w = World()
    rec = w.policy.by_name(pe)
    assert rec is not None
    assert authorize(caller, rec, action, pf_owner="svc") is allowed


def test_harness_owner_is_authorized_on_its_functions() -> None:
    w = World(owners={"pf": HOST, "vf0": HOST, "vf1": "g2"})
    assert authorize(HOST, w.a, Action.ALLOW_UNFREEZE, pf_owner=HOST)
    assert authorize(HOST, w.vfs[0], Action.THAW, pf_owner=HOST)
    assert authorize(HOST, w.vfs[1], Action.READ_STATE, pf_owner=HOST)
    assert not authorize(HOST, w.vfs[1], Action.THAW, pf_owner=HOST)


def test_an_adapter_freeze_counts_once_on_the_adapter_and_never_on_its_vfs() -> None:
    """The rule (hypervisor_shim/pe/policy.py, "freeze counting"): freezes of VF PEs
    caused by the adapter PE count against the adapter PE. A VF's own limit is for its
    own errors: an adapter error must not bring any VF nearer to a permanent failure."""
    w = World(max_freezes=1)
    w.adapter.inject_adapter_fatal()
    assert (w.a.freezes.count, w.a.freezes.total) == (1, 1)
    assert [(v.name, v.freezes.count, v.freezes.total) for v in w.vfs] == [
        ("vf0", 0, 0), ("vf1", 0, 0), ("vf2", 0, 0), ("vf3", 0, 0)]
    side = [(n.pe, n.data["freeze_count"]) for n in w.notices
            if n.kind == "pe-frozen" and n.data["side_effect"]]
    assert side == [("vf0", 1), ("vf1", 1), ("vf2", 1)]  # the adapter's count (vf3: absent)
    w.recover_adapter()
    assert w.policy.allow_unfreeze(w.a, [v.address for v in w.vfs[:3]]).status \
        is Status.SUCCESS
    for opt in (EehOption.THAW_MMIO, EehOption.THAW_DMA):
        assert w.policy.set_eeh_option(w.vfs[0], opt).status is Status.SUCCESS
    assert w.policy.state(w.vfs[0]).state is PeState.NORMAL
    # vf0's own first error: within its limit of 1, whatever the adapter did before
    w.notices.clear()
    w.adapter.inject_vf_error(0)
    assert (w.vfs[0].freezes.count, w.vfs[0].freezes.total) == (1, 1)
    assert PeFlag.PERMANENT not in w.vfs[0].flags
    assert [n.kind for n in w.notices if n.kind == "permanent-failure"] == []
    assert w.policy.state(w.vfs[0]).state is PeState.FROZEN
