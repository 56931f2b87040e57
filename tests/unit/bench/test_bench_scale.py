"""bench.scale (64 VFs in real guests): its summary judges the goals, and the report and
docs show its figures beside the peer's at its most VFs, with the recovery-vs-VFs plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import docs, goals, report, scale
from bench.stats import dist
from hypervisor_shim.timeline import Entry


def recovery(ms: float, not_back: list[str] | None = None, claim: str = "ok") -> dict[str, Any]:
    vfs = [f"vf{i}" for i in range(64)]
    back = [v for v in vfs if v not in (not_back or [])]
    return {"recovery_ms": None if not_back else ms,
            "traffic_back_ms": {v: ms - i for i, v in enumerate(back)},
            "not_back": not_back or [], "lost": {v: 3 for v in vfs},
            "steps_ms": {"adapter-frozen": 5.0}, "claim": claim,
            "ledgers_balanced": {v: True for v in back}}


def raw_run(timing: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    guests = ["svc", *(f"c{k}" for k in range(8))]
    return {"timing": timing, "run_dir": "/tmp/x", "vfs": 64, "guests": 9, "rate_hz": 10.0,
            "drivers_ready_s": 30.0 if timing == "fast" else 21.0,
            "boot": {g: {"how": "restored", "start_to_marker_s": 9.0, "python_start_s": 4.0,
                         "probe_s": 2.0,
                         "drivers_ready_s": 15.0} for g in guests},
            "cpu_to_ready_s": {g: 5.0 for g in guests},
            "cpu_quiet_per_s": {g: 0.05 for g in guests},
            "cpu_idle_per_s": {g: 0.1 for g in guests},
            "cpu_per_recovery_s": {g: 1.0 for g in guests},
            "usage_end": {g: {"cpu_s": 9.0, "rss_mib": 300.0, "rss_shmem_mib": 100.0,
                              "rss_anon_mib": 200.0} for g in guests},
            "recoveries": recs}


PEER = {"vfs": 7, "limit_s": 30.0, "setup_s": 20.0, "by_kind": {
    "nonfatal": {"every_vf_back": dist([14000.0], "ms"),
                 "vfs_never_back": {"value": 0, "n": 7}, "vf_lost": dist([300], "frames"),
                 "functions": {"pf": {"outage": dist([14000.0], "ms")}}},
    "fatal": {"every_vf_back": dist([], "ms"), "vfs_never_back": {"value": 7, "n": 7},
              "vf_lost": dist([1500], "frames"),
              "functions": {"pf": {"outage": dist([9000.0], "ms")}}}}}


def summary() -> dict[str, Any]:
    runs = [raw_run("fast", [recovery(350.0), recovery(450.0), recovery(390.0)]),
            raw_run("spec", [recovery(2300.0), recovery(0.0, not_back=["vf63"],
                                                      claim="traffic-back: ['vf63']"),
                             recovery(2500.0, claim="vfs-locked-out: no refused unfreeze")])]
    return scale.summarize(runs, PEER)


def test_the_summary_judges_the_scale_goals() -> None:
    s = summary()
    g = s["goals"]
    # p50 of the two restored boots (bench.guests.judge_boots)
    assert g[goals.SCALE_READY.name]["value"] == 25.5 and not g[goals.SCALE_READY.name]["met"]
    assert g[goals.SCALE_FAST.name]["value"] == 390.0 and g[goals.SCALE_FAST.name]["met"]
    # the recovery that left vf63 behind has no recovery time: p50 of the two others
    assert g[goals.SCALE_SPEC.name]["value"] == 2400.0 and g[goals.SCALE_SPEC.name]["met"]
    assert g[goals.SCALE_EVERY_VF.name]["value"] == 1.0
    assert not g[goals.SCALE_EVERY_VF.name]["met"]
    spec = s["runs"][1]
    assert spec["not_back"] == [["vf63"]] and spec["every_vf_back"]["value"] == 2
    assert spec["claim_failed_steps"] == {"traffic-back": 1, "vfs-locked-out": 1}
    assert spec["host_per_guest"]["rss"]["p50"] == 300.0
    assert spec["host_per_guest"]["cpu_quiet"]["p50"] == 0.05


def test_the_report_shows_ours_beside_the_peer_at_its_most_vfs(tmp_path: Path) -> None:
    results = {"scale": summary()}
    rows = {r.split(" | ")[0]: r for r in report.table(results).splitlines()}
    fast = rows["| real guests, 64 VFs (8 guests x 8), fast timing: injection -> traffic "
                "through every VF, p50 / p99 (claim ok 3/3, every VF back 3/3)"]
    assert "<= 400 ms p50: **met**" in fast and "7 VFs, non-fatal: 14000 / 14000 ms" in fast
    spec = rows["| real guests, 64 VFs (8 guests x 8), spec timing: injection -> traffic "
                "through every VF, p50 / p99 (claim ok 1/3, every VF back 2/3; failed "
                "steps: traffic-back 1, vfs-locked-out 1)"]
    assert "fatal: -; VFs not back in 30.0 s: 7/7" in spec
    ready = rows["| real guests (9, TCG), 64 VFs: start -> all 65 drivers ready, restored "
                 "boots"]
    assert "<= 20 s p50: **missed**" in ready and "igb + 7 VFs set up in one guest: 20.0 s" in ready
    assert "| per guest, p50 / max s | fast | spec |" in report.scale_table(results)
    page = docs.page(json.loads(json.dumps(results)))
    assert "### Real guests at 64 VFs" in page
    assert goals.SCALE_READY.why in page  # missed: the page says why
    assert report.guests_vs_vfs(results, tmp_path, _pyplot())
    assert (tmp_path / "guests_vs_vfs.png").stat().st_size > 0


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def test_vf_steps_pools_each_vfs_first_step_of_every_injection() -> None:
    e = [Entry(10.0, "console", "inject", pe="adapter"),
         Entry(10.1, "driver", "error-detected", pe="vf0"),
         Entry(10.2, "driver", "error-detected", pe="vf0"),  # a second round: not the first
         Entry(10.3, "driver", "error-detected", pe="vf1"),
         Entry(10.4, "driver", "recovered", pe="adapter"),  # not a VF
         Entry(10.5, "traffic", "traffic-back", pe="vf0"),
         Entry(20.0, "console", "inject", pe="adapter"),
         Entry(20.2, "driver", "error-detected", pe="vf0"),
         Entry(20.25, "model", "pe-frozen", pe="vf0")]  # not a driver's step
    steps = scale.vf_steps(e, {"vf0", "vf1"})
    assert {k: [round(v) for v in vs] for k, vs in steps.items()} == {
        "error-detected": [100, 300, 200], "traffic-back": [500]}
