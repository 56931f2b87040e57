"""The run's outputs: results.json, results.md (ours against the goals and the peer) and
the plots (PNG, matplotlib with the Agg backend).

    python -m bench.report runs/bench/<run>     # redo table and plots from results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench import goals, registry
from bench.report_parts import adapters_plot, goals_judged, json_rows, part_table
from bench.report_parts import dstat as _d
from bench.report_parts import pair as _pair
from bench.report_parts import verdict as _met


def _limit(goal: goals.Goal) -> str:
    return f"{goal.limit:g} {goal.unit}"


def _boot_rows(part: dict[str, Any], title: str) -> list[str]:
    """A guests part's boots that its goal does not judge (bench.guests.judge_boots): the
    cold ones and the first boot that made the saved states, each a row of its own."""
    rows = []
    cold = part.get("drivers_ready_cold")
    if cold and cold.get("n"):
        rows.append(f"| {title}: cold boots to drivers ready (a guest's saved state "
                    f"missing), p50 / max | {_d(cold, 'p50', 1, 1)} / {_d(cold, 'max', 1, 1)}"
                    f" s (n={cold['n']}) | not judged | - |")
    first = part.get("first_boot")
    if first and first.get("value") is not None:
        rows.append(f"| {title}: {first['what']} | {first['value']:.1f} s | not judged | - |")
    return rows


def _point(rec: dict[str, Any], timing: str, n: int, mode: str = "parallel",
           drivers: str = "in-process") -> dict[str, Any] | None:
    for p in rec.get("points", []):
        if p.get("timing") == timing and p.get("vfs") == n and p.get("mode") == mode \
                and p.get("drivers", "in-process") == drivers and "error" not in p:
            point: dict[str, Any] = p
            return point
    return None


def table(results: dict[str, Any]) -> str:
    rec = results.get("recovery") or {}
    gst = results.get("guests") or {}
    peer = results.get("peer") or {}
    judged = rec.get("goals", {})
    lines = ["| figure | ours | goal | peer: QEMU igb + Linux igb/igbvf + AER |",
             "|---|---|---|---|"]
    f64 = _point(rec, "fast", 64)
    s64 = _point(rec, "spec", 64)
    g = judged.get("fast_64_vfs")
    lines.append(f"| harness, fast timing, 64 VFs: injection -> traffic through every VF, "
                 f"p50 / p99 | {_pair(f64 and f64['recovery'], 'ms')} | "
                 f"{goals.FAST_64.text()}: {_met(g)} | - |")
    g = judged.get("fast_slope")
    lines.append(f"| harness, fast: slope over 1..64 VFs | "
                 f"{g['value'] if g and g['value'] is not None else '-'} ms/VF | "
                 f"{goals.FAST_SLOPE.text()}: {_met(g)} | - |")
    g = judged.get("spec_64_vfs")
    lines.append(f"| harness, spec timing, 64 VFs, p50 / p99 | "
                 f"{_pair(s64 and s64['recovery'], 'ms')} | {goals.SPEC_64.text()}: "
                 f"{_met(g)} | - |")
    p64 = _point(rec, "fast", 64, drivers="process")
    ps64 = _point(rec, "spec", 64, drivers="process")
    if p64 or ps64:
        g1 = judged.get("fast_64_vfs_drivers_process")
        g2 = judged.get("spec_64_vfs_drivers_process")
        gs = judged.get("fast_slope_drivers_process")
        lines.append(f"| harness, drivers in a process of their own (two interpreters), 64 VFs: "
                     f"fast p50 / p99; spec p50 / p99; fast slope | "
                     f"{_pair(p64 and p64['recovery'], 'ms')}; "
                     f"{_pair(ps64 and ps64['recovery'], 'ms')}; "
                     f"{gs['value'] if gs and gs['value'] is not None else '-'} ms/VF | "
                     f"{_limit(goals.FAST_64)}: {_met(g1)}; {_limit(goals.SPEC_64)}: "
                     f"{_met(g2)}; {_limit(goals.FAST_SLOPE)}: {_met(gs)} | - |")
    for timing in ("fast", "spec"):
        parts = []
        worst = None
        for n in rec.get("config", {}).get("vfs", []):
            p = _point(rec, timing, n)
            if p and p["resume_after_release"].get("n"):
                v = p["resume_after_release"]["p99"]
                parts.append(f"{n}: {v:.1f}")
                worst = v if worst is None else max(worst, v)
        if parts and timing == "fast":
            met = "met" if goals.RESUME_P99.met(worst) else "missed"
            lines.append(f"| harness, fast: lockout release -> VF resumed, p99 by VFs | "
                         f"{', '.join(parts)} ms | {goals.RESUME_P99.text()}: **{met}**"
                         f"{' (all)' if met == 'met' else ' (not at every size)'} | - |")
        elif parts:
            lines.append(f"| harness, spec: lockout release -> VF resumed, p99 by VFs "
                         f"(includes the VF's own FLR, 100 ms) | {', '.join(parts)} ms | - "
                         "| - |")
    for timing in ("fast", "spec"):
        parts = []
        for n in rec.get("config", {}).get("vfs", []):
            p = _point(rec, timing, n)
            d = (p or {}).get("unfreeze_accepted_after_release") or {}
            if d.get("n"):
                parts.append(f"{n}: {d['p50']:.1f} / {d['p99']:.1f}")
        if parts:
            lines.append(f"| harness, {timing}: lockout release -> the VF's first unfreeze "
                         "accepted (the lockout's own latency), p50 / p99 by VFs | "
                         f"{', '.join(parts)} ms | - | - |")
    ratios = [r for r in rec.get("ratios", []) if r["vfs"] in (16, 64)]
    if ratios:
        lines.append("| harness: recovery p50 parallel / serial (serial = one VF after "
                     "another, as Linux's single recovery thread) | " + ", ".join(
                         f"{r['timing']} {r['vfs']} VFs {r['parallel_over_serial']['value']:.2f}"
                         for r in ratios) + " | - | - |")
    if f64:
        lines.append(f"| harness, fast, 64 VFs: host CPU per recovery (whole process; "
                     f"same-length quiet window) / peak RSS | {_d(f64['cpu'], 'p50', 1, 3)} s "
                     f"({_d(f64['idle_cpu_same_window'], 'p50', 1, 3)} s) / "
                     f"{f64['maxrss']['value']} MiB | - | - |")
    gg = gst.get("goals", {})
    g = gg.get("drivers_ready")
    peer_ready = f"{peer.get('setup_s', '-')}"
    lines.append(f"| real guests (3, TCG): start -> every guest's drivers ready, restored "
                 f"boots | {_pair(gst.get('drivers_ready'), 's', 1, 1)} | "
                 f"{goals.DRIVERS_READY.text()}: {_met(g)} | "
                 f"igb + 3 VFs set up in one guest: {peer_ready} s |")
    lines += _boot_rows(gst, "real guests (3, TCG)")
    runs = {r["timing"]: r for r in gst.get("runs", []) if "timing" in r and "recovery" in r}
    peer_nf, peer_fa = _peer_recovery(peer, "nonfatal"), _peer_recovery(peer, "fatal")
    for timing, peer_txt in (("fast", peer_nf), ("spec", peer_fa)):
        r = runs.get(timing)
        if r:
            claim = r["claim_ok"]
            lines.append(f"| real guests, {timing} timing: injection -> traffic through every "
                         f"VF, p50 / p99 (claim ok {claim['value']}/{claim['n']}) | "
                         f"{_pair(r['recovery'], 'ms')} | - | {peer_txt} |")
    lost = [f"{t} {_d(r['lost_per_vf_per_recovery'], 'p50')} / "
            f"{_d(r['lost_per_vf_per_recovery'], 'max')}" for t, r in runs.items()]
    rate = next((r["probe_rate"]["value"] for r in runs.values()), None)
    if lost:
        lines.append(f"| frames lost per VF per error, p50 / max (host probes at {rate:g}/s "
                     f"per VF) | {', '.join(lost)} | - | {_peer_lost(peer)} |")
    g = gg.get("fps_one_vf")
    fps = []
    for t, r in runs.items():
        b, a = (r.get("fps_before") or {}).get("fps"), (r.get("fps_after") or {}).get("fps")
        fps.append(f"{t}: {b:.0f} before, {a:.0f} after" if b and a else f"{t}: -")
    lines.append(f"| frames/s through one VF (60 bytes, TCG guest) | {'; '.join(fps)} | "
                 f"{goals.FPS_ONE_VF.text()}: {_met(g)} | - |")
    lines += scale_rows(results)
    lines += json_rows(results)
    return "\n".join(lines)


def _peer_recovery(peer: dict[str, Any], kind: str) -> str:
    """The peer's figure comparable to ours: injection -> every VF passes traffic again
    (and how many VF outages never ended); for a fatal error also the PF's outage."""
    k = (peer.get("by_kind") or {}).get(kind)
    if not k:
        return "-"
    title = "non-fatal" if kind == "nonfatal" else "fatal"
    ev, nb = k["every_vf_back"], k["vfs_never_back"]
    text = (f"{title}: {_pair(ev, 'ms')}" if ev.get("n") else f"{title}: -") + \
        f"; VFs not back in {peer.get('limit_s')} s: {nb['value']}/{nb['n']}"
    if kind == "fatal":
        text += "; PF back " + _pair(k["functions"]["pf"]["outage"], "ms")
    return text


def _peer_lost(peer: dict[str, Any]) -> str:
    out = []
    for kind, title in (("nonfatal", "non-fatal"), ("fatal", "fatal")):
        k = (peer.get("by_kind") or {}).get(kind)
        if k:
            out.append(f"{title} {_d(k['vf_lost'], 'p50')} / {_d(k['vf_lost'], 'max')}")
    return ", ".join(out) or "-"


def scale_rows(results: dict[str, Any]) -> list[str]:
    """The rows of bench.scale (64 VFs in nine TCG guests) for the main table, the peer
    at its most VFs beside them."""
    sc = results.get("scale") or {}
    if not sc:
        return []
    peer = sc.get("peer") or {}
    gg = sc.get("goals", {})
    nvf = peer.get("vfs", "-")
    setup = peer.get("setup_s")
    lines = [f"| real guests (9, TCG), 64 VFs: start -> all 65 drivers ready, restored boots"
             f" | {_pair(sc.get('drivers_ready'), 's', 1, 1)} | {goals.SCALE_READY.text()}: "
             f"{_met(gg.get(goals.SCALE_READY.name))} | igb + {nvf} VFs set up in one guest: "
             f"{setup if setup is not None else '-'} s |"]
    lines += _boot_rows(sc, "real guests (9, TCG), 64 VFs")
    runs = {r["timing"]: r for r in sc.get("runs", []) if "recovery" in r}
    for timing, goal, kind in (("fast", goals.SCALE_FAST, "nonfatal"),
                               ("spec", goals.SCALE_SPEC, "fatal")):
        r = runs.get(timing)
        if not r:
            continue
        claim, back = r["claim_ok"], r["every_vf_back"]
        steps = ", ".join(f"{k} {n}" for k, n in (r.get("claim_failed_steps") or {}).items())
        lines.append(f"| real guests, 64 VFs (8 guests x 8), {timing} timing: injection -> "
                     f"traffic through every VF, p50 / p99 (claim ok {claim['value']}/"
                     f"{claim['n']}, every VF back {back['value']}/{back['n']}"
                     f"{'; failed steps: ' + steps if steps else ''}) | "
                     f"{_pair(r['recovery'], 'ms')} | {goal.text()}: "
                     f"{_met(gg.get(goal.name))} | {nvf} VFs, {_peer_recovery(peer, kind)} |")
    if runs:
        lost = ", ".join(f"{t} {_d(r['lost_per_vf_per_recovery'], 'p50')} / "
                         f"{_d(r['lost_per_vf_per_recovery'], 'max')}" for t, r in runs.items())
        rate = next(iter(runs.values()))["probe_rate"]["value"]
        g = gg.get(goals.SCALE_EVERY_VF.name)
        lines.append(f"| real guests, 64 VFs: frames lost per VF per error, p50 / max (host "
                     f"probes at {rate:g}/s per VF); recoveries with a VF not back | {lost}; "
                     f"{g['value'] if g else '-'} | {goals.SCALE_EVERY_VF.text()}: {_met(g)} | "
                     f"{nvf} VFs: {_peer_lost(peer)} |")
        for t, r in runs.items():
            h = r["host_per_guest"]
            lines.append(
                f"| real guests, 64 VFs, {t}: host per guest (QEMU process), p50 / max: CPU "
                f"to drivers ready; CPU per s with no traffic; under the probes; CPU per "
                f"error (bench.scale: cpu_per_recovery_s); RSS (of it guest RAM) | "
                f"{_d(h['cpu_to_ready'], 'p50', 1, 1)} / "
                f"{_d(h['cpu_to_ready'], 'max', 1, 1)} s; {_d(h.get('cpu_quiet'), 'p50', 1, 2)}"
                f" / {_d(h.get('cpu_quiet'), 'max', 1, 2)} s/s; "
                f"{_d(h['cpu_idle'], 'p50', 1, 2)} / "
                f"{_d(h['cpu_idle'], 'max', 1, 2)} s/s; "
                f"{_d(h['cpu_per_recovery'], 'p50', 1, 2)} / "
                f"{_d(h['cpu_per_recovery'], 'max', 1, 2)} s; {_d(h['rss'], 'p50')} / "
                f"{_d(h['rss'], 'max')} MiB ({_d(h['rss_guest_ram'], 'p50')}) | - | - |")
    return lines


def scale_table(results: dict[str, Any]) -> str:
    """bench.scale per boot: where the boot time goes per guest, and the claim's steps."""
    sc = results.get("scale") or {}
    runs = [r for r in sc.get("runs", []) if "recovery" in r]
    if not runs:
        errors = [f"{r['timing']}: {r['error']}" for r in sc.get("runs", []) if "error" in r]
        return "; ".join(errors)
    names = {"start_to_marker_s": "QEMU start -> guest ready marker",
             "python_start_s": "marker -> agent's first platform call",
             "probe_s": "first platform call -> last driver probe",
             "drivers_ready_s": "start -> that guest's drivers ready"}
    lines = ["| per guest, p50 / max s | " + " | ".join(r["timing"] for r in runs) + " |",
             "|---|" + "---|" * len(runs)]
    for k, title in names.items():
        lines.append(f"| {title} | " + " | ".join(
            f"{_d(r['boot_phases_per_guest'].get(k), 'p50', 1, 1)} / "
            f"{_d(r['boot_phases_per_guest'].get(k), 'max', 1, 1)}" for r in runs) + " |")
    lines.append("| VF back after injection, every VF of every error, p50 / p99 ms | " +
                 " | ".join(f"{_d(r['per_vf_traffic_back'], 'p50')} / "
                            f"{_d(r['per_vf_traffic_back'], 'p99')}" for r in runs) + " |")
    return "\n".join(lines)


def points_table(results: dict[str, Any]) -> str:
    rec = results.get("recovery") or {}
    lines = ["| timing | VFs | mode (drivers) | recovery p50 / p99 ms | PEs frozen (owners told) "
             "| drivers informed "
             "| adapter recovered | lockout released | VF resumed after release p50 / p99 "
             "| CPU s (quiet) | RSS MiB | claim |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in rec.get("points", []):
        if "error" in p:
            lines.append(f"| {p['timing']} | {p['vfs']} | {p['mode']} | error: "
                         f"{p['error'][:80]} | | | | | | | | |")
            continue
        mode = p["mode"] + (" (own process)" if p.get("drivers") == "process" else "")
        lines.append(
            f"| {p['timing']} | {p['vfs']} | {mode} | {_d(p['recovery'], 'p50', 1, 1)} / "
            f"{_d(p['recovery'], 'p99', 1, 1)} | {_d(p['frozen'], 'p50', 1, 2)} "
            f"({_d(p.get('frozen_notified'), 'p50', 1, 1)}) | "
            f"{_d(p['informed'], 'p50', 1, 1)} | {_d(p['adapter_recovered'], 'p50', 1, 1)} | "
            f"{_d(p['lockout_release'], 'p50', 1, 1)} | "
            f"{_d(p['resume_after_release'], 'p50', 1, 1)} / "
            f"{_d(p['resume_after_release'], 'p99', 1, 1)} | {_d(p['cpu'], 'p50', 1, 3)} "
            f"({_d(p['idle_cpu_same_window'], 'p50', 1, 3)}) | {p['maxrss']['value']} | "
            f"{p['claim_ok']['value']}/{p['claim_ok']['n']} |")
    return "\n".join(lines)


def boot_table(results: dict[str, Any]) -> str:
    gst = results.get("guests") or {}
    ph = gst.get("boot_phases_per_guest", {})
    names = {"restore_s": "QEMU start -> saved state loaded (restored guests)",
             "go_s": "QEMU start -> functions hot-plugged, go sent",
             "start_to_marker_s": "QEMU start -> guest ready marker (kernel, initramfs, stage 2)",
             "python_start_s": "marker -> agent's first platform call (python3 start, imports)",
             "probe_s": "first platform call -> last driver probe",
             "drivers_ready_s": "start -> that guest's drivers ready"}
    lines = ["| boot phase, per guest | p50 / max s |", "|---|---|"]
    for k, title in names.items():
        if k in ph:
            lines.append(f"| {title} | {_d(ph[k], 'p50', 1, 2)} / {_d(ph[k], 'max', 1, 2)} "
                         f"(n={ph[k]['n']}) |")
    return "\n".join(lines)


def guest_steps_table(results: dict[str, Any]) -> str:
    gst = results.get("guests") or {}
    runs = [r for r in gst.get("runs", []) if "steps" in r]
    if not runs:
        return ""
    keys = list(dict.fromkeys(k for r in runs for k in r["steps"]))
    lines = ["| claim step (ms since injection, p50) | " + " | ".join(
        r["timing"] for r in runs) + " |", "|---|" + "---|" * len(runs)]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(_d(r["steps"].get(k), "p50", 1, 1)
                                              for r in runs) + " |")
    return "\n".join(lines)


def cost_notes(results: dict[str, Any]) -> list[str]:
    """Where the CPU of a 64-VF harness recovery goes (the goals' limiting factor)."""
    rec = results.get("recovery") or {}
    out = []
    for where in ("in-process", "process"):
        p = _point(rec, "fast", 64, drivers=where)
        if not p or not p["cpu"].get("n"):
            continue
        groups = ", ".join(f"{g} {v['p50']:.3f} s" for g, v in p.get("cpu_by_thread",
                                                                      {}).items()
                           if v.get("n") and v["p50"] >= 0.005)
        vu, pc = p.get("vfio_user_messages", {}), p.get("platform_calls", {})
        whose = "the platform's" if where == "in-process" else "their own"
        out.append(
            f"fast, 64 VFs, drivers in {whose} process: host CPU per recovery p50 "
            f"{p['cpu']['p50']:.3f} s "
            f"({p['cpu']['p50'] / 64 * 1000:.1f} ms per VF; the same traffic alone, same "
            f"length: {p['idle_cpu_same_window']['p50']:.3f} s); by thread: {groups or '-'}; "
            f"per recovery {vu.get('p50', '-')} vfio-user messages and {pc.get('p50', '-')} "
            f"platform-call lines ({(vu.get('p50') or 0) / 64:.0f} and "
            f"{(pc.get('p50') or 0) / 64:.0f} per VF), each a Python-level round trip")
    return out


def markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    out = [f"# Benchmarks, run {meta.get('run', '?')}", "",
           f"`{meta.get('command', 'make bench')}`: {meta.get('wall_s', '?')} s wall; "
           f"{meta.get('host', '')}", "",
           "Ours against the goals (bench.goals) and the peer. p50 / p99 over n measurements "
           "from this one run (the machine is shared: compare within a run).", "",
           table(results), "", "## Every goal judged in this run", "",
           goals_judged(results), "",
           "## Harness mode: every point", "", points_table(results), "",
           "## Real guests: where boot time goes", "", boot_table(results), "",
           "## Real guests: the claim's steps", "", guest_steps_table(results), ""]
    if results.get("scale"):
        out += ["## Real guests at 64 VFs (bench.scale)", "", scale_table(results), ""]
    for b in registry.json_parts():
        if b.part in results:
            out += [f"## {b.module}", "", b.what, "", part_table(results[b.part]), ""]
    notes = cost_notes(results) + list(results.get("notes") or [])
    walls = meta.get("wall_s_by_part") or {}
    if walls:
        notes.append("wall time by part: " + ", ".join(f"{k} {v:g} s" for k, v in
                                                       walls.items()))
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


# ---------------------------------------------------------------------- plots
def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rec = results.get("recovery") or {}
    pts = [p for p in rec.get("points", []) if "error" not in p]
    if pts:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, timing in zip(axes, ("fast", "spec"), strict=True):
            for mode, where, style, label in (
                    ("parallel", "in-process", "o-", "parallel"),
                    ("serial", "in-process", "s--", "serial (as Linux)"),
                    ("parallel", "process", "^:", "parallel, drivers' own process")):
                ps = sorted((p for p in pts if p["timing"] == timing and p["mode"] == mode
                             and p.get("drivers", "in-process") == where),
                            key=lambda p: p["vfs"])
                if not ps:
                    continue
                x = [p["vfs"] for p in ps]
                y = [p["recovery"]["p50"] for p in ps]
                lo = [p["recovery"]["p50"] - p["recovery"]["min"] for p in ps]
                hi = [p["recovery"]["p99"] - p["recovery"]["p50"] for p in ps]
                ax.errorbar(x, y, yerr=[lo, hi], fmt=style, capsize=3,
                            label=f"{label} (p50, min..p99)")
            goal = goals.FAST_64 if timing == "fast" else goals.SPEC_64
            ax.axhline(goal.limit, color="red", lw=0.8, ls=":",
                       label=f"goal at 64 VFs: {_limit(goal)}")
            if goal.floor is not None:
                ax.axhline(goal.floor, color="grey", lw=0.8, ls=":",
                           label="floor: reset + FLR")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("VFs")
            ax.set_ylabel("injection -> traffic through every VF (ms)")
            ax.set_title(f"harness mode, {timing} reset timing")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out / "recovery_vs_vfs.png", dpi=110)
        plt.close(fig)
        written.append("recovery_vs_vfs.png")

        steps = [("frozen", "VF PEs frozen"), ("informed", "drivers informed"),
                 ("adapter_recovered", "adapter recovered"),
                 ("lockout_release", "lockout released"),
                 ("vfs_recovered", "VFs recovered"), ("recovery", "traffic back")]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, timing in zip(axes, ("fast", "spec"), strict=True):
            ps = sorted((p for p in pts if p["timing"] == timing and p["mode"] == "parallel"),
                        key=lambda p: (p["vfs"], p.get("drivers") == "process"))
            labels = [str(p["vfs"]) + (" (own process)" if p.get("drivers") == "process"
                                       else "") for p in ps]
            left = [0.0] * len(ps)
            for key, title in steps:
                ends = [max(p[key].get("p50") or 0.0, lft) for p, lft in zip(ps, left,
                                                                            strict=True)]
                ax.barh(labels, [e - lft for e, lft in zip(ends, left, strict=True)],
                        left=left, label=title)
                left = ends
            ax.set_xlabel("ms since injection (p50 of each milestone)")
            ax.set_ylabel("VFs")
            ax.set_title(f"where the time goes, {timing} timing, parallel")
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / "breakdown.png", dpi=110)
        plt.close(fig)
        written.append("breakdown.png")

    gst = results.get("guests") or {}
    peer = results.get("peer") or {}
    bars: list[tuple[str, float | None, str]] = []
    for r in gst.get("runs", []):
        if "recovery" in r and r["recovery"].get("n"):
            bars.append((f"ours, {r['timing']}", r["recovery"]["p50"] / 1000, "tab:blue"))
    limit = float(peer.get("limit_s") or 30)
    for kind, title in (("nonfatal", "peer, AER non-fatal"), ("fatal", "peer, AER fatal")):
        k = (peer.get("by_kind") or {}).get(kind)
        if not k:
            continue
        ev = k["every_vf_back"]
        bars.append((title, ev["p50"] / 1000 if ev.get("n") else None, "tab:orange"))
    if bars:
        fig, ax = plt.subplots(figsize=(8, 3.6))
        for i, (_label, v, color) in enumerate(bars):
            if v is None:
                ax.barh(i, limit, color="none", edgecolor=color, hatch="//")
                ax.text(limit, i, f" not back within {limit:.0f} s", va="center", fontsize=8)
            else:
                ax.barh(i, v, color=color)
                ax.text(v, i, f" {v:.2f} s", va="center", fontsize=8)
        ax.set_yticks(range(len(bars)), [b[0] for b in bars])
        ax.set_xscale("log")
        ax.set_xlim(right=limit * 6)  # room for the labels
        ax.set_xlabel("injection -> every VF passes traffic again (s, log scale; p50)")
        ax.set_title("real guests under TCG: ours (3 guests) vs QEMU igb + Linux AER")
        fig.tight_layout()
        fig.savefig(out / "guests_vs_peer.png", dpi=110)
        plt.close(fig)
        written.append("guests_vs_peer.png")
    if guests_vs_vfs(results, out, plt):
        written.append("guests_vs_vfs.png")
    if adapters_plot(results, out, plt):
        written.append("adapters.png")
    return written


def guests_vs_vfs(results: dict[str, Any], out: Path, plt: Any) -> bool:
    """Real guests: recovery against the number of VFs (the default topology's 3, the
    scale topology's 64), fast and spec, with the goals at 64 VFs and the peer's
    non-fatal recovery at its 3 and its most VFs; False if there is nothing to draw."""
    series: dict[str, list[tuple[int, dict[str, Any]]]] = {"fast": [], "spec": []}
    for part, n in (("guests", 3), ("scale", 64)):
        for r in (results.get(part) or {}).get("runs", []):
            if r.get("timing") in series and (r.get("recovery") or {}).get("n"):
                series[r["timing"]].append((r.get("vfs", n), r["recovery"]))
    if not any(series.values()):
        return False
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for timing, style in (("fast", "o-"), ("spec", "s-")):
        pts = sorted(series[timing], key=lambda p: p[0])
        if not pts:
            continue
        ax.errorbar([n for n, _ in pts], [d["p50"] for _, d in pts],
                    yerr=[[d["p50"] - d["min"] for _, d in pts],
                          [d["p99"] - d["p50"] for _, d in pts]],
                    fmt=style, capsize=3, label=f"ours, {timing} timing (p50, min..p99)")
    for goal, color in ((goals.SCALE_FAST, "tab:blue"), (goals.SCALE_SPEC, "tab:orange")):
        ax.axhline(goal.limit, color=color, lw=0.8, ls=":",
                   label=f"goal at 64 VFs: {_limit(goal)}")
    peer_pts, never = [], []
    for p in (results.get("peer") or {}, (results.get("scale") or {}).get("peer") or {}):
        nf = (p.get("by_kind") or {}).get("nonfatal") or {}
        ev = nf.get("every_vf_back") or {}
        if ev.get("n"):
            peer_pts.append((int(p.get("vfs") or 3), ev["p50"]))
        elif nf:  # no error after which every VF came back: drawn at the wait's limit
            never.append((int(p.get("vfs") or 3), float(p.get("limit_s") or 30) * 1000))
    if peer_pts:
        peer_pts.sort()
        ax.plot([n for n, _ in peer_pts], [v for _, v in peer_pts], "^--", color="tab:red",
                label="peer: igb + Linux AER, non-fatal (p50)")
    if never:
        ax.plot([n for n, _ in never], [v for _, v in never], "x", color="tab:red", ms=9,
                label="peer, non-fatal: VFs not back within its limit (drawn at the limit)")
    xs = sorted({3, 64, *(n for n, _ in peer_pts + never)})
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_yscale("log")
    ax.set_xlabel("VFs (3: default topology, 3 guests; 64: scale-8x8, 9 guests)")
    ax.set_ylabel("injection -> traffic through every VF (ms)")
    ax.set_title("real guests under TCG: recovery vs VFs")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "guests_vs_vfs.png", dpi=110)
    plt.close(fig)
    return True


def write(results: dict[str, Any], out: Path) -> list[str]:
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    try:
        results.setdefault("meta", {})["plots"] = plots(results, out)
    except ImportError as e:  # matplotlib is a dev extra: `make setup` installs it
        results.setdefault("notes", []).append(f"no plots: {e}")
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out / "results.md").write_text(markdown(results))
    return ["results.json", "results.md", *results["meta"].get("plots", [])]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.report RUN_DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    results = json.loads((out / "results.json").read_text())
    print("\n".join(write(results, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
