"""bench.hcall: the platform-call round trip against a bare server and an echo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import goals, hcall

REPO = Path(__file__).resolve().parents[3]


def test_measure_reports_three_distributions_and_the_ratios() -> None:
    r = hcall.measure(60, rounds=3, warmup=5)
    f = r["figures"]
    assert [f[k]["n"] for k in ("platform_call", "bare_protocol", "echo")] == [60, 60, 60]
    assert all(f[k]["unit"] == "us" and f[k]["p50"] > 0
               for k in ("platform_call", "bare_protocol", "echo"))
    assert abs(f["ratio_p50"]["value"] - f["platform_call"]["p50"] / f["echo"]["p50"]) < 0.01
    work = f["platform_call"]["p50"] / f["bare_protocol"]["p50"]
    assert abs(f["server_work_ratio_p50"]["value"] - work) < 0.01
    g = r["goals"]["hcall_server_work_p50"]
    assert g["goal"] == goals.HCALL_SERVER_WORK.limit and g["met"] == (work <= g["goal"])


def test_run_as_make_bench_runs_it(tmp_path: Path) -> None:
    out = tmp_path / "hcall.json"
    p = subprocess.run([sys.executable, "-m", "bench.hcall", "--n", "30", "--json", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0, p.stderr
    part = json.loads(out.read_text())
    assert set(part) == {"figures", "goals", "config"} and part["config"]["n"] == 30
    assert "platform_call" in p.stdout and "goal server work <= 2 x" in p.stdout
