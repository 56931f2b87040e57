"""docs/benchmarks.md, generated from a run's results.json.

    .venv/bin/python -m bench.docs               # print it (docs/benchmarks-results.json)
    .venv/bin/python -m bench.docs RESULTS.json  # print it from another run's results
    .venv/bin/python -m bench.docs --write       # write docs/benchmarks.md

To put a new run on the page: copy its results.json to docs/benchmarks-results.json and
write. The page's parts come from where they are defined, once: the benchmarks from
`bench.registry`, the goals from `bench.goals`, the run's tables from `bench.report` (the
same tables as the run's results.md), the prose from this module. A unit test fails when
the committed page differs from what this writes from the committed JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench import goals, registry, report
from bench.report_parts import goal_text, part_table, verdict

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE = DOCS / "benchmarks.md"
RESULTS = DOCS / "benchmarks-results.json"

INTRO = """\
`make bench` (about 17 minutes, of which `bench.scale`'s two boots of nine guests and the
peer at 7 VFs take 5.5; plus the venv and root fs on a fresh clone) runs every
benchmark in one run and writes `runs/bench/<date>-<time>-bench-<n>/`: `results.json`
(every figure with its unit and n, every goal judged, each part's wall time in
`meta.wall_s_by_part`), `results.md` (the tables below, every harness point, where boot
time goes) and plots (`recovery_vs_vfs.png`, `breakdown.png`, `guests_vs_peer.png`,
`guests_vs_vfs.png`: real guests at 3 and 64 VFs, `adapters.png`: two adapters;
matplotlib from the dev extras), next to each part's artifacts.
`make bench-quick` is a smaller run (3 recoveries a point, fewer guest errors, 64 VFs in
spec timing only and no peer at 7 VFs, two adapters of 16 VFs, the other parts smaller;
about 8 minutes). The machines are shared and noisy: compare within a run (ratios, side
by side), never across runs.

This page is generated (`python -m bench.docs --write`) from the results.json of the run
named below, committed as `docs/benchmarks-results.json`; to show a newer run, copy its
results.json there and write the page again. Adding a benchmark: `docs/howto-benchmark.md`."""

PLACEMENT = """\
Every guest MMIO read is a round trip through three threads (QEMU's vCPU, QEMU's
vfio-user thread, the device model's loop). On the project's machines a wake-up on another
CPU costs about three times one on the same CPU, so by default `AdapterHost` pins its
device-model thread to one host CPU (the highest allowed) and the guests it serves to the
same CPU (`AdapterHostConfig.host_cpus`: a tuple of CPUs, or `()` for no pinning). The
QEMU command line in `qemu-cmdline.txt` then starts with `taskset -c N`, and
`machine.json` records `host_cpus`. The one-guest transport demo takes the same choice as
`python -m eeh_sriov transport-demo --host-cpus auto|none|N,M`. Measured on the project's
2-core machines by `bench.guest_mmio` (the `guest_mmio` part of a run): read
p50 36-37 us colocated vs 81-123 us spread (2.5-3.4x across runs). Several guests are
another matter: three TCG guests on one CPU boot far slower than unpinned, so the topology
runs (`make demo`, `bench.guests`) do not pin (`host_cpus=()`)."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _args(args: tuple[str, ...] | None, builtin: bool) -> str:
    if args is None:
        return "no"
    if builtin or not args:
        return "yes"
    return f"`{' '.join(args)}`"


def modules_table() -> str:
    lines = ["| module | what | `make bench` | `make bench-quick` |", "|---|---|---|---|"]
    for b in registry.BENCHMARKS:
        lines.append(f"| `{b.module}` | {_cell(b.what)} | {_args(b.args, b.builtin)} | "
                     f"{_args(b.quick, b.builtin)} |")
    return "\n".join(lines)


def _num(v: float) -> str:
    """Four significant digits, and no exponent."""
    return f"{v:.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _judged(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every judged figure of the run, by its key in its part's goals."""
    out: dict[str, dict[str, Any]] = {}
    for part in results.values():
        if isinstance(part, dict) and isinstance(part.get("goals"), dict):
            out.update(part["goals"])
    return out


def _verdict(goal: goals.Goal, judged: dict[str, dict[str, Any]],
             results: dict[str, Any]) -> tuple[str, str, bool | None]:
    """(this run's value, verdict, met) for a goal; met None when not measured."""
    g = judged.get(goal.name)
    if g is not None and g.get("value") is not None:
        return f"{_num(g['value'])} {goal.unit}", "**met**" if g["met"] else "**missed**", \
            g["met"]
    variants = {k[len(goal.name) + 1:]: v for k, v in judged.items()
                if k.startswith(goal.name + "_") and v.get("value") is not None
                and k[len(goal.name) + 1:].isdigit()}
    if variants:
        shown = ", ".join(f"{k}: {_num(v['value'])}" for k, v in
                          sorted(variants.items(), key=lambda kv: int(kv[0])))
        met = all(v["met"] for v in variants.values())
        return (f"by VFs {shown} {goal.unit}", "**met**" if met else "**missed**", met)
    bench = registry.BY_MODULE.get(goal.bench)
    if bench is None or bench.part not in results:
        quick = str(results.get("meta", {}).get("command", "")).endswith("bench-quick")
        only = " (make bench only)" if quick and bench is not None and bench.quick is None \
            else ""
        return "-", f"not in this run{only}", None
    return "-", "not measured", None


def _variant(key: str) -> bool:
    """A goal's key with a number after its name (`resume_p99_fast_64`: one per size)."""
    name, _, n = key.rpartition("_")
    return n.isdigit() and name in goals.BY_NAME


def goals_table(results: dict[str, Any]) -> str:
    """Every goal of bench.goals with the run's value, or why there is none ("not in this
    run": its benchmark's part is not in results.json; "not measured": it is, without a
    value); then every other goal a part of the run judged (its own key), as it is."""
    judged = _judged(results)
    lines = ["| figure | measured by | goal | latest run | |", "|---|---|---|---|---|"]
    for goal in goals.GOALS:
        value, said, _ = _verdict(goal, judged, results)
        lines.append(f"| {_cell(goal.figure)} | `{goal.bench}` | {goal.text()} | {value} | "
                     f"{said} |")
    for key, part in results.items():
        if not isinstance(part, dict) or not isinstance(part.get("goals"), dict):
            continue
        module = registry.BY_PART[key].module if key in registry.BY_PART else key
        for name, g in part["goals"].items():
            if name in goals.BY_NAME or _variant(name):
                continue
            value = "-" if g.get("value") is None else f"{_num(g['value'])} {g['unit']}"
            lines.append(f"| {_cell(g.get('what', name))} (`{name}`) | `{module}` | "
                         f"{goal_text(name, g)} | {value} | {verdict(g)} |")
    return "\n".join(lines)


def missed(results: dict[str, Any]) -> list[str]:
    judged = _judged(results)
    out = []
    for goal in goals.GOALS:
        value, _, met = _verdict(goal, judged, results)
        if met is False:
            out.append(f"**{goal.figure}** ({goal.text()}): {value} in this run. {goal.why}"
                       .rstrip())
    return out


def page(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    load = meta.get("loadavg_start_end") or ["?", "?"]
    out = ["# Benchmarks", "",
           "<!-- Generated by `python -m bench.docs --write` from docs/benchmarks-results.json;"
           " do not edit by hand. -->", "", INTRO, "",
           "## The benchmarks", "", modules_table(), "",
           "Run one with `.venv/bin/python -m bench.<module>` (`--help` for its options).", "",
           "## Goals", "",
           "Every goal, defined once in `bench/goals.py`, with the latest run's figure.", "",
           goals_table(results), "",
           "## The latest run", "",
           f"`{meta.get('command', 'make bench')}`, run `{meta.get('run', '?')}` at "
           f"`{meta.get('git', '?')}`: {meta.get('wall_s', '?')} s wall, load average "
           f"{load[0]} -> {load[1]}; {meta.get('host', '')}.", "",
           "### Ours against the goals and the peer", "", report.table(results), "",
           "### Harness mode: every point", "", report.points_table(results), "",
           "### Real guests: where boot time goes", "", report.boot_table(results), "",
           "### Real guests: the claim's steps", "", report.guest_steps_table(results), ""]
    if results.get("scale"):
        out += ["### Real guests at 64 VFs: boot and recovery per guest", "",
                report.scale_table(results), ""]
    for b in registry.json_parts():
        if b.part in results:
            out += [f"### `{b.module}`", "", b.what, "", part_table(results[b.part]),
                    ""]
    notes = report.cost_notes(results) + list(results.get("notes") or [])
    if notes:
        out += ["### Notes", ""] + [f"- {n}" for n in notes] + [""]
    gone = missed(results)
    out += ["## What misses its goal, and why", ""]
    out += [f"- {m}" for m in gone] if gone else ["Every goal measured in this run is met."]
    out += ["", "## Placement: the device model and its guests on one CPU", "", PLACEMENT, ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="docs/benchmarks.md from a run's results.json")
    ap.add_argument("results", nargs="?", default=str(RESULTS),
                    help="a results.json (default: docs/benchmarks-results.json)")
    ap.add_argument("--write", action="store_true", help=f"write {PAGE}")
    args = ap.parse_args(argv)
    text = page(json.loads(Path(args.results).read_text()))
    if args.write:
        PAGE.write_text(text)
        print(f"wrote {PAGE}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
