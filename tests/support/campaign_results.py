"""Results lines as the campaign's runner writes them (the contract in report_data), for
tests of what reads them: the reports, the SVG, the merge. Built from real `Scenario`s
(the model's ids and labels), so only the run itself is left out."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from eeh_sriov.campaign.model import Fault, Scenario, Trigger
from eeh_sriov.campaign.report_data import (
    RESULTS_NAME,
    Manifest,
    ids_digest,
    scenario_cell,
    write_manifest,
)


def scenario(event: str = "pe-frozen", fault: str = "vf-error", *, pe: str | None = "vf0",
             target: str | None = "other", seed: int = 0) -> Scenario:
    params = {"times": 1} if fault == "reset-fails" else {}
    if fault in ("adapter-fatal", "freeze-limit", "pf-driver-crash", "model-killed"):
        target = None
    return Scenario.build(first=Fault("adapter-fatal"),
                          follow_ups=((Trigger(event, pe, "policy"),
                                       Fault(fault, target, params)),), seed=seed)


def line(s: Scenario, verdict: str = "pass", *, violations: Sequence[dict[str, Any]] = (),
         pe_states: Sequence[dict[str, Any]] | None = None, fired: bool = True,
         shard: str | None = None, worker: str = "gw0") -> dict[str, Any]:
    if pe_states is None:
        pe_states = [{"t": 0.0, "pe": "adapter", "state": 2, "flags": []},
                     {"t": 0.0, "pe": "vf0", "state": 2, "flags": []},
                     {"t": 0.02, "pe": "adapter", "state": 1, "flags": []},
                     {"t": 0.05, "pe": "adapter", "state": 0, "flags": []},
                     {"t": 0.06, "pe": "vf0", "state": 0, "flags": []}]
    return {"id": s.id, "scenario": s.to_json(), "verdict": verdict,
            "violations": list(violations), "duration_s": 0.5,
            "artifacts": f"runs/campaign/x/{s.id}", "pe_states": list(pe_states),
            "trigger_fired": fired, "worker": worker, "shard": shard, "version": 1}


def violation(oracle: str = "safety", rule: str = "thaw-before-allow-unfreeze",
              t: float | None = 0.03, pe: str | None = "vf0") -> dict[str, Any]:
    return {"oracle": oracle, "rule": rule, "detail": f"{pe} thawed at {t}", "t": t, "pe": pe}


def write_run(directory: Path, lines: Iterable[dict[str, Any]], *, campaign: str = "test",
              all_scenarios: Sequence[Scenario] | None = None, shard: str | None = None,
              wall_s: float = 10.0, workers: int = 2) -> Path:
    """A run's directory: results.jsonl and campaign.json (the campaign: `all_scenarios`,
    default the lines' own)."""
    lines = list(lines)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RESULTS_NAME).write_text("".join(json.dumps(x) + "\n" for x in lines))
    scenarios = list(all_scenarios) if all_scenarios is not None else [
        Scenario.from_json(x["scenario"]) for x in lines]
    write_manifest(directory, Manifest(
        campaign=campaign, digest=ids_digest(s.id for s in scenarios),
        scenarios=len(scenarios), pairs=tuple(sorted({scenario_cell(s) for s in scenarios})),
        shard=shard, ids=tuple(x["id"] for x in lines), workers=workers, wall_s=wall_s,
        mode="harness"))
    return directory
