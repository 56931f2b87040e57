"""The benchmark registry (bench.registry) is what `python -m bench` runs and shows."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bench import goals, registry
from bench.__main__ import PARTS, json_part
from bench.report_parts import part_table

REPO = Path(__file__).resolve().parents[3]


def test_every_benchmark_is_a_module_of_bench() -> None:
    modules = [b.module for b in registry.BENCHMARKS]
    assert len(set(modules)) == len(modules)
    for m in modules:
        assert m.startswith("bench.") and importlib.util.find_spec(m) is not None, m


def test_the_run_takes_its_parts_from_the_registry() -> None:
    assert list(PARTS) == [b.part for b in registry.BENCHMARKS]
    # every benchmark's figures are a part of results.json: none is text only (issue 22)
    assert {b.module for b in registry.json_parts()} == {
        "bench.hcall", "bench.adapters", "bench.boot", "bench.platform_loop", "bench.device_model",
        "bench.vfio_user", "bench.guest_mmio"}
    for b in registry.json_parts():  # what the main table shows of it exists
        assert b.quick is not None, b.module  # bench-quick runs every part, smaller


def test_a_part_is_its_json_whatever_its_exit_status(tmp_path: Path) -> None:
    """A benchmark that exits 1 for a goal it missed still gives its figures and goals;
    one that writes no JSON is an error, its output kept."""
    b = registry.Benchmark("tests.unit.bench.part_exit_one", "a missed goal", part="one")
    part = json_part(b, False, tmp_path)
    assert part["goals"]["x"]["met"] is False and "error" not in part
    assert (tmp_path / "one.txt").read_text() == "goal x: MISSED\n"
    b = registry.Benchmark("bench.no_such_module", "nothing", part="none")
    part = json_part(b, False, tmp_path)
    assert set(part) == {"error"} and "exit 1" in part["error"]
    assert "No module named bench.no_such_module" in (tmp_path / "none.txt").read_text()


def test_every_goal_is_measured_by_a_registered_benchmark() -> None:
    assert {g.bench for g in goals.GOALS} <= {b.module for b in registry.BENCHMARKS}


@pytest.mark.parametrize("b", registry.json_parts(), ids=lambda b: b.module)
def test_a_json_benchmark_takes_json_and_quick(b: registry.Benchmark) -> None:
    out = subprocess.run([sys.executable, "-m", b.module, "--help"], capture_output=True,
                         text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0 and "--json" in out.stdout and "--quick" in out.stdout


def test_a_json_part_is_shown_as_it_is() -> None:
    part = {"figures": {"call": {"unit": "us", "n": 4, "min": 1.0, "p50": 2.0, "p90": 3.0,
                                 "p99": 4.0, "max": 4.0, "mean": 2.5, "what": "a call"},
                        "ratio": {"value": 1.25, "unit": "x", "n": 4, "what": "a ratio"}},
            "goals": {"hcall_x": {"value": 1.25, "goal": 2.0, "unit": "x", "met": True,
                                  "what": "a ratio", "goal_is": "<="}}}
    assert part_table(part).splitlines() == [
        "| figure | p50 / p99 (n), or value | goal |",
        "|---|---|---|",
        "| a call (`call`) | 2.0 / 4.0 us (n=4) | - |",
        "| a ratio (`ratio`) | 1.25 x | - |",
        "| goal: a ratio | 1.25 x | <= 2 x: **met** |",
    ]
    assert part_table({"error": "exit 1: boom"}) == "failed: exit 1: boom"
