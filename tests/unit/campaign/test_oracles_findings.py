"""Oracle rules the exhaustive campaign showed too strict, on the recorded runs that showed
it (tests/unit/campaign/observations, calls left out; docs/campaign.md, "Findings")."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from eeh_sriov.campaign.observe import Observation
from eeh_sriov.campaign.oracles import check, down_intervals, notes
from hypervisor_shim.timeline import Entry

HERE = Path(__file__).parent / "observations"


def recorded(name: str) -> Observation:
    return Observation.from_json(json.loads((HERE / f"{name}.observation.json").read_text()))


def test_a_recovered_reported_after_the_permanent_failure_does_not_end_the_down_time() -> None:
    """adapter-fatal ; freeze-limit at driver/config-restored@vf0 (s-cb2f7592c49a): the
    second adapter freeze is one past the limit and fails every PE while vf2's driver
    finishes its first recovery: its `recovered` comes 0.4 ms after the platform's
    permanent-failure for vf2. The probes lost after that are lost to a failed PE (down
    until a probe revives it), not while vf2 was up."""
    obs = recorded("freeze-limit-late-recovered")
    failed = next(e.t for e in obs.entries if e.source == "policy"
                  and e.kind == "permanent-failure" and e.pe == "vf2")
    late = next(e.t for e in obs.entries if e.source == "driver" and e.kind == "recovered"
                and e.pe == "vf2" and e.t > failed)
    assert late - failed < 0.01
    assert any(a <= failed and b == float("inf") for a, b in down_intervals(obs, "vf2"))
    assert obs.traffic["vf2"].lost  # probes were lost ...
    assert check(obs) == []  # ... while vf2 was down: nothing violated


def test_a_recovered_reported_as_a_new_freeze_arrives_does_not_end_the_down_time() -> None:
    """VM mode, adapter-fatal ; vf-error:same at driver/config-restored@vf2
    (s-bda9022aa73f): vf2 froze again (0.738 s) while its driver finished the round; the
    driver, not yet told, reported `recovered` (1.08 s) and started again at once. vf2 is
    down until the first recovery after its PE is back in state 0 (pe-thawed, 2.12 s)."""
    obs = recorded("vm-freeze-at-round-end")
    thawed = max(e.t for e in obs.entries if e.source == "policy" and e.kind == "pe-thawed"
                 and e.pe == "vf2")
    early = [e.t for e in obs.entries if e.source == "driver" and e.kind == "recovered"
             and e.pe == "vf2" and e.t < thawed]
    assert early
    lost = [t for _, t in obs.traffic["vf2"].lost if t > max(early)]
    assert lost  # probes lost after the early `recovered` ...
    assert all(any(a <= t <= b for a, b in down_intervals(obs, "vf2")) for t in lost)
    assert [v for v in check(obs) if v.pe == "vf2"] == []  # ... while vf2 was down


def test_the_lockout_order_is_judged_by_the_side_effect_not_the_policys_flag() -> None:
    """A VF PE frozen by the adapter's freeze whose pe-frozen says it is not locked out
    (the policy losing the lockout: the campaign's planted bug, docs/campaign.md) and then
    reset before the adapter driver's allow-unfreeze breaks the claim's order."""
    obs = recorded("adapter")
    i = next(i for i, e in enumerate(obs.entries) if e.source == "policy"
             and e.kind == "pe-frozen" and e.pe == "vf1")
    frozen = obs.entries[i]
    lost = dataclasses.replace(frozen, data={**frozen.data, "locked_out": False})
    early = Entry(frozen.t, "policy", "reset-hot", "vf1")
    bad = dataclasses.replace(obs, entries=(*obs.entries[:i], lost, early,
                                            *obs.entries[i + 1:]))
    assert {(v.rule, v.pe) for v in check(bad) if v.oracle == "safety"} >= {
        ("thaw-before-allow-unfreeze", "vf1")}


def test_a_freeze_limit_fault_on_a_frozen_adapter_is_not_expected_to_fail_it() -> None:
    """adapter-fatal ; freeze-limit at policy/pe-frozen@adapter (s-4b4eff9cdf86): the
    fault's adapter error hit the adapter while it was still frozen, which is no new
    freeze (nothing counted past the lowered limit): the adapter recovers, as it should."""
    obs = recorded("freeze-limit-while-frozen")
    fault = next(f for f in obs.faults if f.kind == "freeze-limit")
    assert fault.error is None
    assert not [e for e in obs.entries if e.source == "policy" and e.kind == "pe-frozen"
                and e.pe == "adapter" and e.t >= fault.t]
    assert obs.pe_end["adapter"] == (0, ())
    assert check(obs) == []


def _counted(obs: Observation, vf: str, drops: int) -> Observation:
    """`obs` as recorded with the model's no-descriptor count: `vf` at 0 at every sample of
    the books and `drops` at the end (after the last lost probe)."""
    books = tuple(dataclasses.replace(s, no_desc={**s.no_desc, vf: 0}) for s in obs.books)
    end = max(t for tr in obs.traffic.values() for _, t in tr.lost) + 0.5
    return dataclasses.replace(obs, books=books, no_desc_end=(end, {vf: drops}))


def test_a_receivers_ring_overrun_is_a_note_a_loss_without_one_a_violation() -> None:
    """VM mode, the same run: vf1's driver (vf2's guest) did not harvest RX while vf2 was
    frozen; the model delivered 63 frames into its 64-slot ring and dropped the 8 probes
    sent at 2.01-2.15 s. Without the model's count of drops for want of a free descriptor
    that is a loss while vf1 was up; with it, matched one for one, a receiver overrun:
    a note, not a violation. Drops counted on another VF, or fewer than the probes lost,
    leave the rest a violation."""
    obs = recorded("vm-freeze-at-round-end")
    up = [(v.rule, v.pe) for v in check(obs) if v.oracle == "safety"]
    assert up == [("loss-outside-recovery", "vf1")] and notes(obs) == []
    counted = _counted(obs, "vf1", 8)
    assert [v for v in check(counted) if v.pe == "vf1"] == []
    (note,) = notes(counted)
    assert (note.rule, note.pe) == ("receiver-overrun", "vf1") and "8 probe(s)" in note.detail
    elsewhere = _counted(obs, "vf0", 8)
    assert [(v.rule, v.pe) for v in check(elsewhere) if v.oracle == "safety"] == up
    short = _counted(obs, "vf1", 5)
    (left,) = [v for v in check(short) if v.pe == "vf1"]
    assert left.rule == "loss-outside-recovery" and "3 probe(s)" in left.detail
    assert [n.detail.split(" probe")[0] for n in notes(short)] == ["vf1: 5"]


def test_the_no_desc_count_survives_the_observations_json() -> None:
    counted = _counted(recorded("vm-freeze-at-round-end"), "vf1", 8)
    back = Observation.from_json(json.loads(json.dumps(counted.to_json())))
    assert back.no_desc("vf1") == counted.no_desc("vf1") and back.no_desc("vf1")[-1][1] == 8
    assert notes(back) == notes(counted)
