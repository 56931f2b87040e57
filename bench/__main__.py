"""`make bench`: every benchmark in one run; `make bench-quick`: a smaller run.

    .venv/bin/python -m bench [--quick] [--only recovery,guests,peer,...]

The benchmarks and how each is run: bench.registry. Writes
runs/bench/<date>-<time>-bench[-quick]-<n>/ with:
- results.json: every figure with its unit and n (bench.stats.dist/scalar), per part:
  `recovery` (harness mode at 1..64 VFs: bench.recovery), `guests` (the default topology
  in real TCG guests: bench.guests), `peer` (QEMU igb + Linux igb/igbvf + AER:
  bench.peer), `scale` (64 VFs in nine TCG guests, and the peer at its most VFs:
  bench.scale), one part per JSON benchmark of the registry (its --json output: hcall,
  adapters, boot, device_model, vfio_user, guest_mmio), `meta` (with each part's wall
  time, `wall_s_by_part`);
- results.md: ours against the goals and the peer, every goal judged, every harness point,
  boot phases, every JSON part's figures;
- recovery_vs_vfs.png, breakdown.png, guests_vs_peer.png, guests_vs_vfs.png, adapters.png;
- the artifacts of each part (events.jsonl per point, guests' consoles, the peer's, each
  JSON part's text output <part>.txt).
The machine is shared and noisy: every comparison is made within the run (ratios,
side-by-side), never against another run's numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import guests, peer, recovery, registry, report, scale
from qemu_launcher.assets import REPO
from qemu_launcher.run import new_run_dir

PARTS = tuple(b.part for b in registry.BENCHMARKS)


def say(text: str) -> None:
    print(text, flush=True)


def json_part(b: registry.Benchmark, quick: bool, out: Path) -> dict[str, Any]:
    """A JSON benchmark in a process of its own; its output kept next to its JSON. Its
    JSON is the part whatever its exit status (some exit 1 when a goal of theirs is
    missed: the goals in the JSON say which); no JSON is an error."""
    args = (b.quick or ()) if quick else b.args
    say(f"{b.part}: {b.module} {' '.join(args)}")
    path = out / f"{b.part}.json"
    try:
        p = subprocess.run([sys.executable, "-m", b.module, *args, "--json", str(path)],
                           capture_output=True, text=True, cwd=REPO, timeout=1800)
    except subprocess.TimeoutExpired as e:
        return {"error": f"no JSON after {e.timeout:.0f} s"}
    (out / f"{b.part}.txt").write_text(p.stdout + p.stderr)
    try:
        part: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"error": f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-600:]}"}
    return part


def _git() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=REPO, timeout=10).stdout.strip()
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="every benchmark in one run")
    ap.add_argument("--quick", action="store_true", help="fewer points and repeats")
    ap.add_argument("--only", default=",".join(PARTS), help=f"some of {','.join(PARTS)}")
    args = ap.parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown parts {sorted(unknown)}")
    out = new_run_dir(REPO / "runs" / "bench", "bench-quick" if args.quick else "bench")
    t0 = time.monotonic()
    load0 = os.getloadavg()
    results: dict[str, Any] = {"meta": {
        "run": out.name, "command": "make bench-quick" if args.quick else "make bench",
        "git": _git(), "host": f"{os.cpu_count()} CPUs, {platform.platform()}, Python "
                               f"{platform.python_version()}", "parts": parts}}
    say(f"bench: {out}")
    failed = []
    walls: dict[str, float] = {}
    results["meta"]["wall_s_by_part"] = walls
    mark = time.monotonic()

    def done(part: str) -> None:  # the part's wall time, in results.json's meta
        nonlocal mark
        walls[part] = round(time.monotonic() - mark, 1)
        mark = time.monotonic()

    if "recovery" in parts:
        vfs = [1, 4, 16, 64]
        procs = [("fast", 64)] if args.quick else \
            [("fast", 1), ("fast", 4), ("fast", 16), ("fast", 64), ("spec", 64)]
        rec = recovery.run_all(vfs, ["fast", "spec"], ["parallel", "serial"],
                               3 if args.quick else 10, 20.0, out / "recovery", say,
                               process_points=procs)
        results["recovery"] = rec
        recovery.print_summary(rec)
        failed += [f"recovery {p['timing']} {p['vfs']} {p['mode']}"
                   for p in rec["points"] if "error" in p]
        done("recovery")
    if "guests" in parts:
        inj = {"fast": 2, "spec": 1} if args.quick else {"fast": 5, "spec": 3}
        g = asyncio.run(guests.run_all(["fast", "spec"], inj, 2.0, 50.0, out, say))
        results["guests"] = g
        failed += [f"guests {r['timing']}" for r in g["runs"] if "error" in r]
        done("guests")
    if "peer" in parts:
        kinds = ["nonfatal"] * (1 if args.quick else 2) + ["fatal"]
        pr = asyncio.run(peer.run_all(kinds, 3, 50.0, 30.0, 5.0, out, say))
        results["peer"] = pr
        if "error" in pr:
            failed.append("peer")
        done("peer")
    if "scale" in parts:
        # 5 fast + 3 spec errors: ~5 min with the two boots, ~3.5 min more for the peer
        # at 7 VFs (measured at a load average of ~20: bench.scale's docstring)
        # (bench-quick: one boot, the topology's own spec timing, 2 errors: ~2 min)
        timings = ["spec"] if args.quick else ["fast", "spec"]
        inj = {"spec": 2} if args.quick else {"fast": 5, "spec": 3}
        sc = asyncio.run(scale.run_all(timings, inj, 10.0,
                                       None if args.quick else scale.PEER_VFS, out, say))
        results["scale"] = sc
        failed += [f"scale {r['timing']}" for r in sc["runs"] if "error" in r]
        done("scale")
    for b in registry.json_parts():
        if b.part in parts and not (args.quick and b.quick is None):
            results[b.part] = json_part(b, args.quick, out)
            if "error" in results[b.part]:
                failed.append(b.part)
            done(b.part)
    results["meta"]["wall_s"] = round(time.monotonic() - t0, 1)
    results["meta"]["loadavg_start_end"] = [round(load0[0], 2), round(os.getloadavg()[0], 2)]
    files = report.write(results, out)
    say("")
    say((out / "results.md").read_text())
    say(f"bench: {', '.join(files)} in {out} ({results['meta']['wall_s']:.0f} s)")
    if failed:
        say(f"bench: parts that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
