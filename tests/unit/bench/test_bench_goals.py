"""The benchmark goals, defined once (bench.goals), judge and show the figures."""

from __future__ import annotations

import pytest

from bench import goals, report
from bench.goals import Goal


def test_a_goal_judges_its_figure() -> None:
    assert goals.FAST_64.met(150.0) and not goals.FAST_64.met(150.1)
    assert goals.FPS_ONE_VF.met(5000.0) and not goals.FPS_ONE_VF.met(4999.0)
    assert not goals.FAST_64.met(None)  # not measured is not met


@pytest.mark.parametrize(("goal", "text"), [
    (goals.FAST_64, "<= 150 ms p50"),
    (goals.SPEC_64, "<= 2300 ms p50 (floor ~2150)"),
    (goals.FAST_SLOPE, "<= 2 ms/VF"),
    (goals.DRIVERS_READY, "<= 5 s p50"),
    (goals.FPS_ONE_VF, ">= 5000 frames/s"),
])
def test_the_text_a_table_shows(goal: Goal, text: str) -> None:
    assert goal.text() == text


def test_the_results_json_entry() -> None:
    assert goals.FPS_ONE_VF.result(4321.0, "lowest of 4") == {
        "value": 4321.0, "goal": 5000.0, "unit": "frames/s", "met": False,
        "what": "lowest of 4", "goal_is": ">="}
    assert goals.FAST_SLOPE.result(None)["what"] == goals.FAST_SLOPE.figure


def test_names_are_unique_and_every_goal_names_its_benchmark() -> None:
    assert len(goals.BY_NAME) == len(goals.GOALS)
    assert all(g.bench.startswith("bench.") and g.figure and g.unit for g in goals.GOALS)


def test_the_report_shows_the_goals_it_judges_by() -> None:
    """The run's table takes limits and verdicts from the goals, not from literals."""
    rec = {"goals": {"fast_64_vfs": goals.FAST_64.result(272.0),
                     "fast_slope": goals.FAST_SLOPE.result(1.5),
                     "spec_64_vfs": goals.SPEC_64.result(None)}}
    gst = {"goals": {"drivers_ready": goals.DRIVERS_READY.result(6.5),
                     "fps_one_vf": goals.FPS_ONE_VF.result(36000.0)}}
    rows = report.table({"recovery": rec, "guests": gst}).splitlines()
    row = {r.split(" | ")[0]: r for r in rows}
    assert "<= 150 ms p50: **missed**" in row["| harness, fast timing, 64 VFs: injection -> "
                                             "traffic through every VF, p50 / p99"]
    assert "<= 2 ms/VF: **met**" in row["| harness, fast: slope over 1..64 VFs"]
    assert "<= 2300 ms p50 (floor ~2150): not measured" in \
        row["| harness, spec timing, 64 VFs, p50 / p99"]
    assert "<= 5 s p50: **missed**" in row["| real guests (3, TCG): start -> every guest's "
                                       "drivers ready, restored boots"]
    assert ">= 5000 frames/s: **met**" in row["| frames/s through one VF (60 bytes, TCG guest)"]
