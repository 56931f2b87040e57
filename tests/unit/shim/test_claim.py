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
