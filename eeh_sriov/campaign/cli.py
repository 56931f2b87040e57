"""`python -m eeh_sriov campaign ...`: run a campaign, replay one scenario, list scenarios,
record the reference timeline exhaustive mode generates from.

    campaign run [--exhaustive] [--topology T] [--timing fast|spec] [--out DIR]
    campaign run --vm [--subset vm-default] [--topology T] [--accel auto|kvm|tcg] [--out DIR]
    campaign replay <scenario-id> --results DIR/results.jsonl [--out DIR]
    campaign list [--exhaustive] [--topology T]
    campaign reference [--topology T] [--timing fast|spec]

`run` runs the scenarios one after another in this process (in parallel: the pytest
items, docs/campaign.md) and appends each result to DIR/results.jsonl; its exit status
is 1 if any scenario failed or could not be run. `replay` re-runs one recorded scenario
from its description and seed into DIR/replay-<id>/ and says whether the verdict is the
same (exit status 0 when it is).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from eeh_sriov.campaign import merge
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.generate import (
    campaign,
    clean_scenario,
    exhaustive,
    read_reference,
    reference_path,
    trigger_points,
    write_reference,
)
from eeh_sriov.campaign.model import Scenario
from eeh_sriov.campaign.report_data import parse_result
from eeh_sriov.campaign.rig import campaign_topology, topology_path
from eeh_sriov.campaign.run import RESULTS_NAME, append_result, observe, read_results, run_scenario
from eeh_sriov.campaign.vm import run_vm, vm_subset
from eeh_sriov.system import asset_config
from eeh_sriov.topology import load_topology
from hypervisor_shim.timeline import load
from qemu_launcher.assets import ensure_assets
from qemu_launcher.run import resolve_accel

COMMAND = "campaign"


def add_subcommand(sub: Any) -> None:
    """Add `campaign` and its subcommands to the CLI's subparsers."""
    p = sub.add_parser(COMMAND, help="fault campaigns: every fault at every recovery step")
    csub = p.add_subparsers(dest="campaign_cmd", required=True)
    run = csub.add_parser("run", help="run a campaign in harness mode")
    _common(run)
    run.add_argument("--exhaustive", action="store_true",
                     help="every (event, fault) pair of a clean recovery (default: the "
                          "hand-picked fault matrix)")
    run.add_argument("--out", type=Path, default=None,
                     help="results directory (default: <runs>/campaign-<time>)")
    _vm_options(run)
    run.add_argument("--accel", default="auto",
                     help="VM mode: QEMU accelerator (auto, kvm, tcg; default auto)")
    rep = csub.add_parser("replay", help="re-run one recorded scenario")
    rep.add_argument("scenario_id")
    rep.add_argument("--results", type=Path, required=True, help="its results.jsonl")
    rep.add_argument("--out", type=Path, default=None,
                     help="where the replay's artifacts go (default: beside the results)")
    ls = csub.add_parser("list", help="list a campaign's scenarios")
    _common(ls)
    ls.add_argument("--exhaustive", action="store_true")
    _vm_options(ls)
    ref = csub.add_parser("reference", help="record the clean timeline exhaustive mode "
                                            "generates from")
    _common(ref)
    merge.add_subcommands(csub)  # merge, report (eeh_sriov.campaign.merge)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topology", default="default",
                   help="a shipped topology name or a .toml file (default: default); of "
                        "several adapters (two-adapters-harness), its adapters' matrix: "
                        "faults on either adapter, judged per adapter")
    p.add_argument("--timing", choices=("fast", "spec"), default="fast")


def _vm_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vm", action="store_true",
                   help="VM mode: a subset in real guests (one boot serves every scenario)")
    p.add_argument("--subset", default="vm-default",
                   help="with --vm: the subset to run (default: vm-default)")


def _scenarios(args: argparse.Namespace) -> list[Scenario]:
    # a bad topology file is one error line here, not an error in every scenario
    campaign_topology(args.topology)
    if args.vm:
        if args.exhaustive:
            raise CampaignError("--vm runs a subset (--subset), not --exhaustive")
        return vm_subset(args.subset, args.timing, args.topology)
    return campaign(args.topology, args.timing, exhaustive_mode=args.exhaustive)


def run(args: argparse.Namespace, runs: Path) -> int:
    cmd = args.campaign_cmd
    if cmd in merge.COMMANDS:
        return merge.run(args)
    if cmd == "list":
        for s in _scenarios(args):
            print(f"{s.id}  {s.label()}")
        return 0
    if cmd == "reference":
        return _reference(args.topology, args.timing, runs)
    if cmd == "replay":
        return _replay(args.scenario_id, args.results, args.out)
    scenarios = _scenarios(args)
    out = args.out or runs / time.strftime("campaign-%Y%m%d-%H%M%S")
    if args.vm:
        return asyncio.run(_run_vm(scenarios, out, args, runs))
    return run_campaign(scenarios, out)


async def _run_vm(scenarios: list[Scenario], out: Path, args: argparse.Namespace,
                  runs: Path) -> int:
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    accel, why = await resolve_accel(args.accel, assets, cfg_assets, runs)
    print(f"campaign --vm: {assets.qemu.describe()}; accelerator {accel} ({why})", flush=True)
    started = time.monotonic()
    results = await run_vm(scenarios, out, assets, topology=args.topology,
                           timing=args.timing, accel=accel,
                           say=lambda line: print(line, flush=True))
    counts = {v: sum(r["verdict"] == v for r in results) for v in ("pass", "fail", "error")}
    print(f"campaign --vm: {len(results)} scenarios, {counts['pass']} pass, "
          f"{counts['fail']} fail, {counts['error']} error in "
          f"{time.monotonic() - started:.1f} s; results in {out / RESULTS_NAME}")
    return 0 if counts["fail"] == counts["error"] == 0 else 1


def run_campaign(scenarios: list[Scenario], out: Path, say: Any = print) -> int:
    out.mkdir(parents=True, exist_ok=True)
    results = out / RESULTS_NAME
    counts = {"pass": 0, "fail": 0, "error": 0}
    started = time.monotonic()
    for n, s in enumerate(scenarios, 1):
        r = run_scenario(s, out)
        append_result(results, r)
        counts[r["verdict"]] += 1
        rules = sorted({f"{v['oracle']}/{v['rule']}" for v in r["violations"]})
        say(f"[{n}/{len(scenarios)}] {r['verdict']:5} {r['duration_s']:6.2f} s  {s.id}  "
            f"{s.label()}" + (f"  ({', '.join(rules)})" if rules else ""))
    took = time.monotonic() - started
    say(f"campaign: {len(scenarios)} scenarios, {counts['pass']} pass, {counts['fail']} "
        f"fail, {counts['error']} error in {took:.1f} s "
        f"({took / max(1, len(scenarios)):.2f} s each); results in {results}")
    return 0 if counts["fail"] == counts["error"] == 0 else 1


def _replay(scenario_id: str, results: Path, out: Path | None) -> int:
    recorded = read_results(results).get(scenario_id)
    if recorded is None:
        raise CampaignError(f"no scenario {scenario_id!r} in {results}")
    # the recorded line is checked as `campaign report` checks it (one line naming the
    # member at fault, never a KeyError): its scenario, verdict and violations are read
    scenario = parse_result(recorded, f"{results}: {scenario_id}").scenario
    out = out or results.parent / f"replay-{scenario_id}"
    r = run_scenario(scenario, out)
    append_result(out / RESULTS_NAME, r)
    same = r["verdict"] == recorded["verdict"] and _rules(r) == _rules(recorded)
    print(f"replay {scenario_id}: {r['verdict']} (recorded: {recorded['verdict']}); "
          f"violations {sorted(_rules(r))} (recorded: {sorted(_rules(recorded))}); "
          f"{'same verdict' if same else 'DIFFERENT verdict'}; artifacts in "
          f"{r['artifacts']} (trace.jsonl: the calls, steps and faults in order)")
    return 0 if same else 1


def _rules(result: dict[str, Any]) -> set[str]:
    return {f"{v['oracle']}/{v['rule']}" for v in result["violations"]}


def _reference(topology: str, timing: str, runs: Path) -> int:
    load_topology(topology_path(topology))
    out = runs / time.strftime("campaign-reference-%Y%m%d-%H%M%S")
    s = clean_scenario(topology, timing)
    (out / "scenarios" / s.id).mkdir(parents=True)
    obs = observe(s, out / "scenarios" / s.id)
    points = trigger_points(load(out / "scenarios" / s.id / "events.jsonl"), since=obs.t0)
    path = reference_path(topology, timing)
    write_reference(path, points)
    scenarios, excluded = exhaustive(read_reference(path), topology=topology, timing=timing)
    print(f"reference: {len(points)} trigger points, {len(scenarios)} scenarios "
          f"({len(excluded)} pairs excluded) written to {path}", file=sys.stderr)
    return 0
