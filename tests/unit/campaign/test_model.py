"""The scenario model: JSON round trip, strict refusal, ids derived from the content."""

from __future__ import annotations

import json
from typing import Any

import pytest

from eeh_sriov.campaign.model import FAULT_KINDS, Fault, Scenario, ScenarioError, Trigger


def scenario(**kw: Any) -> Scenario:
    return Scenario.build(Fault("adapter-fatal"), (
        (Trigger("reset-hot", "adapter", "policy", delay_ms=3), Fault("vf-error", "other")),
        (Trigger("recovered", "vf0", "driver", nth=2), Fault("reset-fails", "same",
                                                             {"times": 2})),
    ), seed=7, **kw)


def test_round_trip_through_json_text() -> None:
    s = scenario()
    again = Scenario.from_json(json.loads(json.dumps(s.to_json())))
    assert again == s and again.id == s.id
    assert again.follow_ups[1][1].params == {"times": 2}


def test_the_id_is_the_content_and_stable() -> None:
    # the same description, built anywhere, has this id (sha256 of the canonical JSON)
    assert scenario().id == scenario().id == "s-1150cc8bd3f2"
    assert scenario(traffic=False).id != scenario().id
    assert Scenario.build(Fault("adapter-fatal"), seed=8).id != \
        Scenario.build(Fault("adapter-fatal"), seed=9).id


@pytest.mark.parametrize("change, where", [
    (lambda o: o.update(extra=1), "unknown key(s) ['extra']"),
    (lambda o: o.pop("seed"), "missing key(s) ['seed']"),
    (lambda o: o.update(seed="7"), "scenario.seed: must be int"),
    (lambda o: o.update(traffic=1), "scenario.traffic: must be bool"),
    (lambda o: o.update(version=2), "version"),
    (lambda o: o.update(mode="cloud"), "mode"),
    (lambda o: o.update(timing="slow"), "timing"),
    (lambda o: o["first"].update(kind="meteor"), "no fault kind 'meteor'"),
    (lambda o: o["first"].update(target="vf0"), "target 'vf0' not one of none"),
    (lambda o: o["follow_ups"][1][1]["params"].update(times=4), "times=4"),
    (lambda o: o["follow_ups"][1][1]["params"].update(extra=1), "params"),
    (lambda o: o["follow_ups"][0][0].update(event="lunch"), "not a trigger event"),
    (lambda o: o["follow_ups"][0][0].update(why=1), "follow_ups[0][0]: unknown key"),
    (lambda o: o["follow_ups"][0].append({}), "follow_ups[0]: must be [trigger, fault]"),
    (lambda o: o.update(id="s-000000000000"), "does not match the content"),
    (lambda o: o.update(follow_ups={}), "follow_ups: must be a list"),
])
def test_strict_refusal_names_what_is_wrong(change: Any, where: str) -> None:
    o = scenario().to_json()
    change(o)
    with pytest.raises(ScenarioError, match=None) as e:
        Scenario.from_json(o)
    assert where in str(e.value), str(e.value)


def test_not_an_object_and_vm_only_faults() -> None:
    with pytest.raises(ScenarioError, match="must be an object"):
        Scenario.from_json([])
    with pytest.raises(ScenarioError, match="not available in harness mode"):
        Scenario.build(Fault("guest-killed", "g1"))
    assert Scenario.build(Fault("guest-killed", "g1"), mode="vm").mode == "vm"
    with pytest.raises(ScenarioError, match="has no trigger"):
        Scenario.build(Fault("vf-error", "other"))


def test_every_fault_kind_has_a_target_it_accepts() -> None:
    for kind, spec in FAULT_KINDS.items():
        target = {"none": None, "vf": "vf0", "owner": "g1"}.get(spec.targets[0],
                                                                 spec.targets[0])
        params = {k: v[0] for k, v in spec.params.items()}
        assert Fault(kind, target, params).kind == kind


def test_targets_name_an_adapter_of_several() -> None:
    """Of several adapters a fault names its adapter ("nic1" or "nic1.pf") or VF
    ("nic1.vf3"); the adapter's own faults take one (None: the first adapter). An
    owner's fault takes no PE, a VF's fault no adapter."""
    for kind in ("adapter-fatal", "freeze-limit", "pf-driver-crash"):
        for target in (None, "adapter", "nic1", "nic1.pf"):
            assert Fault(kind, target).target == target
    assert Fault("vf-error", "nic1.vf3").target == "nic1.vf3"
    assert Fault("errinjct", "nic1", {"function": 1}).target == "nic1"
    assert Fault("reset-fails", "nic0.vf0", {"times": 1}).target == "nic0.vf0"
    for kind, target in (("vf-error", "nic1"), ("vf-error", "nic1.pf"),
                         ("channel-closed", "nic1.vf0"), ("model-killed", "nic1"),
                         ("adapter-fatal", "nic1.vf0"), ("adapter-fatal", "Nic1"),
                         ("vf-error", "NIC.vf0"), ("adapter-fatal", "a.b.pf")):
        with pytest.raises(ScenarioError, match="not one of"):
            Fault(kind, target)
