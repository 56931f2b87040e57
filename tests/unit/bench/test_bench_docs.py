"""docs/benchmarks.md is what bench.docs writes from the committed results."""

from __future__ import annotations

import json

from bench import docs, goals


def test_the_page_is_generated_from_the_committed_results() -> None:
    results = json.loads(docs.RESULTS.read_text())
    assert docs.PAGE.read_text() == docs.page(results), \
        "docs/benchmarks.md differs: run .venv/bin/python -m bench.docs --write"


def test_the_page_names_its_run_and_every_benchmark_and_goal() -> None:
    results = json.loads(docs.RESULTS.read_text())
    text = docs.PAGE.read_text()
    assert f"run `{results['meta']['run']}`" in text
    for module in ("bench.recovery", "bench.guests", "bench.peer", "bench.hcall",
                   "bench.adapters", "bench.boot", "bench.device_model", "bench.vfio_user",
                   "bench.guest_mmio"):
        assert f"| `{module}` |" in text, module
    for g in goals.GOALS:
        assert g.text() in text, g.name


def test_goals_table_and_what_misses() -> None:
    results = {"meta": {"command": "make bench-quick"},
               "recovery": {"goals": {
                   "fast_64_vfs": goals.FAST_64.result(272.0),
                   "fast_64_vfs_drivers_process": goals.FAST_64.result(120.0),
                   "resume_p99_fast_1": goals.RESUME_P99.result(4.2),
                   "resume_p99_fast_64": goals.RESUME_P99.result(284.3)}},
               "guests": {"goals": {"fps_one_vf": goals.FPS_ONE_VF.result(36524.0)}}}
    rows = {r.split(" | ")[0][2:]: r for r in docs.goals_table(results).splitlines()[2:]}
    assert rows[goals.FAST_64.figure].endswith("| <= 150 ms p50 | 272 ms | **missed** |")
    assert rows[goals.RESUME_P99.figure].endswith(
        "| <= 10 ms p99 | by VFs 1: 4.2, 64: 284.3 ms | **missed** |")
    assert rows[goals.FPS_ONE_VF.figure].endswith("| 36524 frames/s | **met** |")
    assert rows[goals.SPEC_64.figure].endswith("| - | not measured |")
    assert rows[goals.BOOT_READY.figure].endswith("| - | not in this run |")
    gone = docs.missed(results)
    assert [m.split("**")[1] for m in gone] == [goals.FAST_64.figure, goals.RESUME_P99.figure]
    assert goals.FAST_64.why in gone[0]


def test_every_goal_is_on_the_page_with_a_value_or_why_not() -> None:
    """A goal whose benchmark's part is missing says "not in this run"; one its part
    carries without a value "not measured"; a part's goals not in bench.goals (a variant
    of its own key) are listed as the part judged them."""
    results = {"meta": {"command": "make bench"},
               "recovery": {"goals": {
                   "fast_64_vfs": goals.FAST_64.result(120.0),
                   "lockout_release_p99": {"value": 4.5, "goal": 10.0, "unit": "ms",
                                           "met": True, "what": "lockout release -> "
                                           "resumed, p99", "goal_is": "<="}}},
               "vfio_user": {"figures": {}, "goals": {
                   goals.VFIO_USER_VS_ECHO.name: goals.VFIO_USER_VS_ECHO.result(1.2),
                   goals.VFIO_USER_SERVER.name: goals.VFIO_USER_SERVER.result(None)}}}
    table = docs.goals_table(results)
    rows = {r.split(" | ")[0][2:]: r for r in table.splitlines()[2:]}
    assert len(rows) == len(goals.GOALS) + 1
    assert rows[goals.VFIO_USER_VS_ECHO.figure].endswith("| <= 1.5 x | 1.2 x | **met** |")
    assert rows[goals.VFIO_USER_SERVER.figure].endswith("| - | not measured |")
    for g in (goals.GUEST_READ_VS_PINGPONG, goals.BOOT_READY, goals.FREEZE_64,
              goals.TWO_B_LOST, goals.SCALE_FAST):
        assert rows[g.figure].endswith("| - | not in this run |"), g.name
    other = rows["lockout release -> resumed, p99 (`lockout_release_p99`)"]
    assert other.endswith("| `bench.recovery` | <= 10 ms | 4.5 ms | **met** |")
    quick = docs.goals_table({"meta": {"command": "make bench-quick"}})
    assert "| - | not in this run |" in quick and "make bench only" not in quick
