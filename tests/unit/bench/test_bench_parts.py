"""The benchmarks that were text only (bench.boot, bench.device_model, bench.vfio_user,
bench.guest_mmio) and the two-adapter one (bench.adapters) are JSON parts: results.json
carries their figures and goals, and the report shows them, their goals and every goal a
part judged, in the main table too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import adapters, boot, goals, guest_mmio, report
from bench.report_parts import adapters_plot, goals_judged, json_rows
from bench.stats import dist

REPO = Path(__file__).resolve().parents[3]


def _run(module: str, *args: str, tmp: Path) -> dict[str, Any]:
    out = tmp / "part.json"
    p = subprocess.run([sys.executable, "-m", module, *args, "--json", str(out)],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.exists(), p.stdout + p.stderr
    part: dict[str, Any] = json.loads(out.read_text())
    assert set(part) == {"figures", "goals", "config"}
    return part


@pytest.mark.timeout(300)  # a real bench.vfio_user run: ~19 s alone, more under load
def test_vfio_user_carries_the_transport_goals(tmp_path: Path) -> None:
    part = _run("bench.vfio_user", "--n", "60", tmp=tmp_path)
    f, g = part["figures"], part["goals"]
    assert set(g) == {goals.VFIO_USER_SERVER.name, goals.VFIO_USER_VS_ECHO.name}
    for placement in ("spread", "colocated"):
        assert f[f"read_{placement}"]["n"] == 60 and f[f"read_{placement}"]["unit"] == "us"
    # judged in the colocated placement, from its own figures
    ratio = g[goals.VFIO_USER_VS_ECHO.name]
    assert ratio["value"] == f["server_vs_asyncio_echo_colocated"]["value"]
    assert ratio["met"] == goals.VFIO_USER_VS_ECHO.met(ratio["value"])
    assert g[goals.VFIO_USER_SERVER.name]["value"] == \
        f["server_wall_read_colocated"]["value"]


def test_device_model_carries_its_goals(tmp_path: Path) -> None:
    part = _run("bench.device_model", "--quick", tmp=tmp_path)
    f, g = part["figures"], part["goals"]
    assert g[goals.FREEZE_64.name]["value"] == round(f["freeze_64_vfs"]["p99"] / 1000, 3)
    assert abs(g[goals.PPS_ONE_VF.name]["value"] - min(f["tx_fps"]["p50"],
                                                       f["rx_fps"]["p50"])) < 1


def test_guest_mmio_is_judged_colocated() -> None:
    def data(read: float, ping: float) -> dict[str, list[float]]:
        return {"mmio_read_us": [read] * 3, "mmio_write_us": [4.0] * 3,
                "ram_read_us": [1.0] * 3, "host_pingpong_us": [ping] * 3}

    part = guest_mmio.summarize({"colocated": (data(20.0, 5.0), [12.0]),
                                 "spread": (data(40.0, 20.0), [15.0])}, 3, 1)
    g = part["goals"]
    assert g[goals.GUEST_MMIO_READ.name]["value"] == 20.0
    assert g[goals.GUEST_READ_VS_PINGPONG.name]["value"] == 4.0
    assert not g[goals.GUEST_READ_VS_PINGPONG.name]["met"]
    assert part["figures"]["read_spread_vs_colocated"]["value"] == 2.0


def test_boot_is_judged_on_the_restored_boots() -> None:
    part: dict[str, Any] = json.loads(json.dumps(boot.as_part(
        {"accel": "tcg", "ready_s": [0.8, 0.9, 7.0], "cold_ready_s": [2.5], "restore_s": [],
         "rootfs_build_s_recorded": 46.3})))
    assert part["goals"][goals.BOOT_READY.name]["value"] == 0.9
    assert part["figures"]["restore_s"] == {"unit": "s", "n": 0, "what": "restored: the load"}
    assert part["config"] == {"accel": "tcg"}


def test_two_adapters_a_tiny_run(tmp_path: Path) -> None:
    """2 x 2 VFs, one error on A and one on both: every VF back, none of B's probes lost
    (the isolation the benchmark measures), the figures and goals in place."""
    part = _run("bench.adapters", "--vfs", "2", "--repeats", "1", "--rate", "20",
                "--dir", str(tmp_path / "run"), tmp=tmp_path)
    f, g = part["figures"], part["goals"]
    assert f["a_recovery"]["n"] == 1 and f["both_recovery"]["n"] == 1
    assert g[goals.TWO_EVERY_VF_BACK.name]["value"] == 0
    assert g[goals.TWO_B_LOST.name] == goals.TWO_B_LOST.result(
        0, what=g[goals.TWO_B_LOST.name]["what"])
    assert f["b_freezes"]["value"] == 0 and f["b_lost_phase"]["n"] > 0
    assert f["b_latency_quiet"]["n"] > 0
    assert (tmp_path / "run" / "events.jsonl").exists()


def test_the_topology_is_the_shipped_one_resized() -> None:
    topo = adapters.topology(4)
    assert [a.name for a in topo.adapters] == ["nic0", "nic1"]
    assert len(topo.functions_of("host")) == 2 * 5
    assert all(topo.policy_of(a).max_freezes == 100_000 for a in topo.adapters)


def _results() -> dict[str, Any]:
    part = {"figures": {"a_recovery": dist([600.0, 700.0], "ms") | {"what": "A back"},
                        "both_recovery": dist([500.0], "ms") | {"what": "both back"},
                        "b_latency_quiet": dist([40.0, 41.0], "ms"),
                        "b_latency_during": dist([42.0], "ms"),
                        "b_lost_phase": {"value": 0, "unit": "frames", "n": 900}},
            "goals": {goals.TWO_B_LOST.name: goals.TWO_B_LOST.result(0.0)},
            "config": {"vfs": 64}}
    lockout = {"value": 3.0, "goal": 10.0, "unit": "ms", "met": True,
               "what": "lockout release -> resumed", "goal_is": "<="}
    return {"meta": {"wall_s_by_part": {"adapters": 20.5}}, "adapters": part,
            "recovery": {"goals": {"lockout_release": lockout}}}


def test_the_main_table_shows_each_json_parts_goals_and_headline() -> None:
    rows = json_rows(_results())
    assert rows[0] == (f"| {goals.TWO_B_LOST.figure} (`bench.adapters`) | 0 frames | "
                       "<= 0 frames: **met** | - |")
    assert "| A back (`bench.adapters`), p50 / p99 or value | 650 / 700 ms (n=2) |" in \
        rows[1]
    assert "\n".join(rows) in report.table(_results())


def test_results_md_lists_every_goal_judged_and_each_parts_wall() -> None:
    judged = goals_judged(_results())
    assert "| recovery | `lockout_release` | lockout release -> resumed | 3 ms | <= 10 ms " \
           "| **met** |" in judged
    md = report.markdown(_results())
    assert "## Every goal judged in this run" in md and judged in md
    assert "wall time by part: adapters 20.5 s" in md


def test_the_two_adapter_plot(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert adapters_plot(_results(), tmp_path, plt)
    assert (tmp_path / "adapters.png").stat().st_size > 0
    assert not adapters_plot({}, tmp_path, plt)
