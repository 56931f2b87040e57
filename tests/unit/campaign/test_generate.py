"""Exhaustive generation: the points of a timeline, the pairs, their counts and order."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.generate import (
    campaign,
    exhaustive,
    fault_variants,
    read_reference,
    reference_path,
    trigger_points,
    write_reference,
)
from hypervisor_shim.timeline import Entry

TIMELINE = [
    Entry(0.5, "policy", "pe-frozen", "adapter"),  # before `since`: not a point
    Entry(1.0, "shim", "inject", "adapter"),  # not a trigger event
    Entry(1.1, "policy", "pe-frozen", "adapter"),
    Entry(1.2, "policy", "pe-frozen", "vf0"),
    Entry(1.3, "call", "set-slot-reset", "vf0"),  # calls are not triggers
    Entry(1.4, "model", "pe-reset-done", "adapter"),  # nor the model's own events
    Entry(1.5, "driver", "recovered", "vf0"),
    Entry(1.6, "driver", "recovered", "vf0"),  # the same point again
]


def test_points_of_a_hand_built_timeline() -> None:
    assert trigger_points(TIMELINE, since=1.0) == [
        ("driver", "recovered", "vf0"), ("policy", "pe-frozen", "adapter"),
        ("policy", "pe-frozen", "vf0")]


def test_pairs_and_exclusions_count() -> None:
    points = trigger_points(TIMELINE, since=1.0)
    scenarios, excluded = exhaustive(points)
    per_vf = sum(why is None for _, why in fault_variants("vf0"))
    per_adapter = sum(why is None for _, why in fault_variants("adapter"))
    assert (per_vf, per_adapter, len(fault_variants("vf0"))) == (15, 13, 16)
    assert len(scenarios) == 2 * per_vf + per_adapter == 43
    # the adapter has no VF of its own (2 "same" VF faults); guest-killed is VM only (x3)
    assert len(excluded) == 5
    assert sorted({why for *_, why in excluded}) == [
        'VM mode only', 'the adapter has no VF of its own ("other" covers it)']
    assert len({s.id for s in scenarios}) == len(scenarios)
    assert all(s.first.kind == "adapter-fatal" and len(s.follow_ups) == 1 for s in scenarios)


def test_order_and_ids_are_deterministic() -> None:
    a, _ = exhaustive(trigger_points(TIMELINE, since=1.0))
    b, _ = exhaustive(list(reversed(trigger_points(reversed(TIMELINE), since=1.0))))
    assert [s.id for s in a] == [s.id for s in b]
    assert [s.follow_ups[0][0].label() for s in a[:2]] == ["driver/recovered@vf0"] * 2


def test_reference_round_trip_and_refusal(tmp_path: Path) -> None:
    path = tmp_path / "ref.jsonl"
    write_reference(path, trigger_points(TIMELINE, since=1.0))
    assert read_reference(path) == trigger_points(TIMELINE, since=1.0)
    path.write_text('{"source": "call", "kind": "register", "pe": "vf0"}\n')
    with pytest.raises(CampaignError, match="not a trigger event"):
        read_reference(path)
    with pytest.raises(CampaignError, match="no reference timeline"):
        read_reference(tmp_path / "missing.jsonl")


def test_the_shipped_reference_makes_the_default_campaign() -> None:
    points = read_reference(reference_path("default"))
    scenarios = campaign("default")
    assert len(points) > 40 and len(scenarios) == len(exhaustive(points)[0])
    assert [s.id for s in scenarios] == [s.id for s in campaign("default")]
