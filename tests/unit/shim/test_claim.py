"""The claim checker: a good timeline passes; removing or reordering any step fails
exactly where it should, naming the step."""

from __future__ import annotations

import pytest

from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.timeline import Entry

VFS = {"vf0": "g1", "vf1": "g2"}
CFG = {"mac": "02:ee:00:00:01:00", "vlan": None, "mtu": 1500}


def good() -> list[Entry]:
    t = iter(range(1, 1000))
    e: list[Entry] = []

    def add(source: str, kind: str, pe: str | None = None, owner: str | None = None,
            **data: object) -> None:
        e.append(Entry(float(next(t)), source, kind, pe, owner, dict(data)))

    add("console", "inject", "adapter")
    add("policy", "pe-frozen", "adapter", side_effect=False)
    for vf in VFS:
        add("policy", "pe-frozen", vf, side_effect=True)
    add("driver", "error-detected", "adapter", "svc")
    for vf, o in VFS.items():
        add("driver", "error-detected", vf, o)
        add("policy", "unfreeze-refused", vf)
    add("driver", "adapter-recovered", "adapter", "svc")
    add("policy", "allow-unfreeze", "adapter")
    for vf in VFS:
        add("policy", "lockout-lifted", vf)
    for vf, o in VFS.items():
        add("policy", "pe-thawed", vf)
        add("driver", "recovered", vf, o, ledger={"balanced": True}, config=dict(CFG),
            config_before=dict(CFG))
        add("traffic", "traffic-back", vf)
    return e


def test_good_timeline_passes() -> None:
    steps = check_claim(good(), pf_owner="svc", vfs=VFS)
    assert [s.key for s in steps if not s.ok] == []
    assert len(steps) == 11


REMOVALS = [
    ("adapter-frozen", lambda e: e.source == "policy" and e.kind == "pe-frozen"
     and e.pe == "adapter"),
    ("vfs-frozen", lambda e: e.kind == "pe-frozen" and e.pe == "vf1"),
    ("drivers-informed", lambda e: e.kind == "error-detected" and e.pe == "vf0"),
    ("drivers-informed", lambda e: e.kind == "error-detected" and e.pe == "adapter"),
    ("vfs-locked-out", lambda e: e.kind == "unfreeze-refused" and e.pe == "vf1"),
    ("adapter-recovered", lambda e: e.kind == "adapter-recovered"),
    ("allow-unfreeze", lambda e: e.kind == "allow-unfreeze"),
    ("vfs-thawed", lambda e: e.kind == "pe-thawed" and e.pe == "vf0"),
    ("vfs-recovered", lambda e: e.kind == "recovered" and e.pe == "vf1"),
    ("traffic-back", lambda e: e.kind == "traffic-back" and e.pe == "vf0"),
]


@pytest.mark.parametrize(("step", "drop"), REMOVALS)
def test_removing_a_step_fails_that_step(step: str, drop: object) -> None:
    entries = [e for e in good() if not drop(e)]  # type: ignore[operator]
    steps = check_claim(entries, pf_owner="svc", vfs=VFS)
    failed = first_failure(steps)
    assert failed is not None and failed.key == step, [(s.key, s.detail) for s in steps]
    assert failed.detail


def _move_before(entries: list[Entry], pick: object, anchor: object) -> list[Entry]:
    """Move the entry `pick` selects to just before `anchor`'s (timestamps follow order)."""
    moved = next(e for e in entries if pick(e))  # type: ignore[operator]
    rest = [e for e in entries if e is not moved]
    i = next(i for i, e in enumerate(rest) if anchor(e))  # type: ignore[operator]
    rest.insert(i, moved)
    return [Entry(float(n + 1), e.source, e.kind, e.pe, e.owner, e.data)
            for n, e in enumerate(rest)]


def test_lockout_absent_vf_thawed_before_allow_unfreeze_fails() -> None:
    # what a platform without the lockout produces: no refusal, thaw before allow-unfreeze
    e = [x for x in good() if x.kind not in ("unfreeze-refused",)]
    e = _move_before(e, lambda x: x.kind == "pe-thawed" and x.pe == "vf0",
                     lambda x: x.kind == "adapter-recovered")
    steps = check_claim(e, pf_owner="svc", vfs=VFS)
    bad = {s.key for s in steps if not s.ok}
    assert {"vfs-locked-out", "vfs-thawed"} <= bad


def test_allow_unfreeze_before_adapter_recovered_fails() -> None:
    e = _move_before(good(), lambda x: x.kind == "allow-unfreeze",
                     lambda x: x.kind == "adapter-recovered")
    steps = check_claim(e, pf_owner="svc", vfs=VFS)
    assert first_failure(steps).key == "allow-unfreeze"  # type: ignore[union-attr]


def test_unbalanced_ledger_and_changed_config_fail() -> None:
    e = good()
    e = [Entry(x.t, x.source, x.kind, x.pe, x.owner,
               dict(x.data, ledger={"balanced": False}) if x.kind == "recovered"
               and x.pe == "vf1" else x.data) for x in e]
    assert first_failure(check_claim(e, pf_owner="svc", vfs=VFS)).key == "accounting"  # type: ignore[union-attr]
    e = [Entry(x.t, x.source, x.kind, x.pe, x.owner,
               dict(x.data, config=dict(CFG, mtu=9000)) if x.kind == "recovered"
               and x.pe == "vf0" else x.data) for x in good()]
    assert first_failure(check_claim(e, pf_owner="svc", vfs=VFS)).key == "config-restored"  # type: ignore[union-attr]


# ---- timelines written out by hand: each row as the platform would record it, the
# expected verdict a literal (nothing here is derived from the checker or from good())
def row(t: float, source: str, kind: str, pe: str | None = None, owner: str | None = None,
        **data: object) -> Entry:
    return Entry(t, source, kind, pe, owner, dict(data))


LEDGER = {"balanced": True}
VF0 = {"vf0": "g1"}


def one_vf(*, thawed: tuple[float, ...] = (7.0,), recovered_at: float = 8.0,
           recovered: dict[str, object] | None = None) -> list[Entry]:
    """One VF (vf0 of g1), the adapter driver svc; vf0's pe-thawed at `thawed`, its
    driver's recovered at `recovered_at` with `recovered` as its data."""
    data = {"ledger": LEDGER, "config": CFG, "config_before": CFG} if recovered is None \
        else recovered
    rows = [
        row(1.0, "console", "inject", "adapter"),
        row(2.0, "policy", "pe-frozen", "adapter", side_effect=False),
        row(2.1, "policy", "pe-frozen", "vf0", side_effect=True),
        row(3.0, "driver", "error-detected", "adapter", "svc"),
        row(3.1, "driver", "error-detected", "vf0", "g1"),
        row(4.0, "policy", "unfreeze-refused", "vf0"),
        row(5.0, "driver", "adapter-recovered", "adapter", "svc"),
        row(6.0, "policy", "allow-unfreeze", "adapter"),
        row(6.1, "policy", "lockout-lifted", "vf0"),
        *(row(t, "policy", "pe-thawed", "vf0") for t in thawed),
        row(recovered_at, "driver", "recovered", "vf0", "g1", **data),
        row(9.0, "traffic", "traffic-back", "vf0"),
    ]
    return sorted(rows, key=lambda e: e.t)


def verdict(entries: list[Entry], vfs: dict[str, str] = VF0) -> list[tuple[str, bool]]:
    return [(s.key, s.ok) for s in check_claim(entries, pf_owner="svc", vfs=vfs)]


ALL_OK = [("adapter-frozen", True), ("vfs-frozen", True), ("drivers-informed", True),
          ("vfs-locked-out", True), ("adapter-recovered", True), ("allow-unfreeze", True),
          ("vfs-thawed", True), ("vfs-recovered", True), ("traffic-back", True),
          ("accounting", True), ("config-restored", True)]


def test_the_hand_written_timeline_passes() -> None:
    assert verdict(one_vf()) == ALL_OK


def test_an_early_thaw_followed_by_a_later_legitimate_one_fails() -> None:
    # vf0 back in state 0 at 4.5, while locked out (before allow-unfreeze at 6.0), and
    # again at 7.0 after its lift: the first one breaks the claim
    steps = check_claim(one_vf(thawed=(4.5, 7.0)), pf_owner="svc", vfs=VF0)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "vfs-thawed", steps
    assert "vf0" in failed.detail


def test_a_thaw_before_that_vfs_own_lift_fails_though_after_allow_unfreeze() -> None:
    # the adapter driver lifts vf0's lockout first (6.0/6.1) and vf1's later (7.0/7.1);
    # vf1 is back in state 0 at 6.5, still locked out, and again at 7.5
    rows = [
        row(1.0, "console", "inject", "adapter"),
        row(2.0, "policy", "pe-frozen", "adapter", side_effect=False),
        row(2.1, "policy", "pe-frozen", "vf0", side_effect=True),
        row(2.2, "policy", "pe-frozen", "vf1", side_effect=True),
        row(3.0, "driver", "error-detected", "adapter", "svc"),
        row(3.1, "driver", "error-detected", "vf0", "g1"),
        row(3.2, "driver", "error-detected", "vf1", "g2"),
        row(4.0, "policy", "unfreeze-refused", "vf0"),
        row(4.1, "policy", "unfreeze-refused", "vf1"),
        row(5.0, "driver", "adapter-recovered", "adapter", "svc"),
        row(6.0, "policy", "allow-unfreeze", "adapter"),
        row(6.1, "policy", "lockout-lifted", "vf0"),
        row(6.2, "policy", "pe-thawed", "vf0"),
        row(6.5, "policy", "pe-thawed", "vf1"),
        row(7.0, "policy", "allow-unfreeze", "adapter"),
        row(7.1, "policy", "lockout-lifted", "vf1"),
        row(7.5, "policy", "pe-thawed", "vf1"),
        row(8.0, "driver", "recovered", "vf0", "g1", ledger=LEDGER, config=CFG,
            config_before=CFG),
        row(8.1, "driver", "recovered", "vf1", "g2", ledger=LEDGER, config=CFG,
            config_before=CFG),
        row(9.0, "traffic", "traffic-back", "vf0"),
        row(9.1, "traffic", "traffic-back", "vf1"),
    ]
    steps = check_claim(rows, pf_owner="svc", vfs=VFS)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "vfs-thawed", steps
    assert "vf1" in failed.detail and "vf0" not in failed.detail


def test_a_vf_recovered_before_its_pe_thawed_fails() -> None:
    # the driver says "recovered" at 6.5, after its lift but before its PE thawed (7.0)
    steps = check_claim(one_vf(recovered_at=6.5), pf_owner="svc", vfs=VF0)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "vfs-recovered", steps
    # and before the lockout was even lifted
    steps = check_claim(one_vf(recovered_at=5.5), pf_owner="svc", vfs=VF0)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "vfs-recovered", steps


@pytest.mark.parametrize("data", [
    {"config": CFG, "config_before": CFG},  # no ledger at all
    {"ledger": None, "config": CFG, "config_before": CFG},
    {"ledger": {}, "config": CFG, "config_before": CFG},  # a ledger without its verdict
    {"ledger": "balanced", "config": CFG, "config_before": CFG},
])
def test_a_missing_ledger_fails_accounting(data: dict[str, object]) -> None:
    steps = check_claim(one_vf(recovered=data), pf_owner="svc", vfs=VF0)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "accounting", steps
    assert "not reported" in failed.detail


@pytest.mark.parametrize("data", [
    {"ledger": LEDGER, "config_before": CFG},  # no configuration after
    {"ledger": LEDGER, "config": CFG},  # none before (and no config_before given)
])
def test_a_missing_configuration_fails_config_restored(data: dict[str, object]) -> None:
    steps = check_claim(one_vf(recovered=data), pf_owner="svc", vfs=VF0)
    failed = first_failure(steps)
    assert failed is not None and failed.key == "config-restored", steps


def test_a_vf_that_tried_only_after_the_lift_is_named_as_not_shown() -> None:
    # the adapter was back before vf1's driver tried: the lockout was not shown for it
    e = [x for x in good() if not (x.kind == "unfreeze-refused" and x.pe == "vf1")]
    failed = first_failure(check_claim(e, pf_owner="svc", vfs=VFS))
    assert failed is not None and failed.key == "vfs-locked-out"
    assert "['vf1']: first unfreeze attempt after the lockout was lifted" in failed.detail
    # without the lockout a VF thaws before the lift: no such excuse
    e = _move_before(e, lambda x: x.kind == "pe-thawed" and x.pe == "vf1",
                     lambda x: x.kind == "adapter-recovered")
    failed = first_failure(check_claim(e, pf_owner="svc", vfs=VFS))
    assert failed is not None and failed.key == "vfs-locked-out"
    assert "after the lockout was lifted" not in failed.detail
