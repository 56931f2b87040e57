"""The benchmark registry (bench.registry) is what `python -m bench` runs and shows."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bench import goals, registry, report
from bench.__main__ import PARTS

REPO = Path(__file__).resolve().parents[3]


def test_every_benchmark_is_a_module_of_bench() -> None:
    modules = [b.module for b in registry.BENCHMARKS]
    assert len(set(modules)) == len(modules)
    for m in modules:
        assert m.startswith("bench.") and importlib.util.find_spec(m) is not None, m


def test_the_run_takes_its_parts_from_the_registry() -> None:
    parts = [b.part for b in registry.BENCHMARKS if b.part is not None]
    assert list(PARTS) == [*parts, "legacy"]
    assert {b.module for b in registry.legacy()} == {
        "bench.boot", "bench.device_model", "bench.vfio_user", "bench.guest_mmio"}


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
    assert report.part_table(part).splitlines() == [
        "| figure | p50 / p99 (n), or value | goal |",
        "|---|---|---|",
        "| a call (`call`) | 2.0 / 4.0 us (n=4) | - |",
        "| a ratio (`ratio`) | 1.25 x | - |",
        "| goal: a ratio | 1.25 x | <= 2 x: **met** |",
    ]
    assert report.part_table({"error": "exit 1: boom"}) == "failed: exit 1: boom"
