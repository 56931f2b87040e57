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
                   "bench.boot", "bench.device_model", "bench.vfio_user", "bench.guest_mmio"):
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
    assert rows[goals.BOOT_READY.figure].endswith("| - | not in this run (make bench only) |")
    gone = docs.missed(results)
    assert [m.split("**")[1] for m in gone] == [goals.FAST_64.figure, goals.RESUME_P99.figure]
    assert goals.FAST_64.why in gone[0]
