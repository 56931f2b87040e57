"""Campaign scenarios in real guests (VM mode, eeh_sriov.campaign.vm): one boot of the
default topology serves three scenarios of the vm-default subset in turn, the topology
made healthy before each; the last kills a guest's QEMU."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from eeh_sriov.campaign.vm import run_vm, vm_subset
from qemu_launcher.assets import GuestAssets

WANTED = ("adapter-fatal",
          "adapter-fatal ; adapter-fatal at policy/reset-hot@adapter",
          "guest-killed:g1")


def test_three_scenarios_in_one_boot(assets: GuestAssets, accel: str,
                                     run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    by_label = {s.label(): s for s in vm_subset("vm-default")}
    scenarios = [by_label[label] for label in WANTED]
    results = asyncio.run(run_vm(scenarios, d, assets, accel=accel))
    assert [r["id"] for r in results] == [s.id for s in scenarios]
    for r in results:
        assert r["verdict"] == "pass", (r["violations"], r["artifacts"])
        art = Path(r["artifacts"])
        assert (art / "timeline.md").stat().st_size > 0
    lines = [json.loads(x) for x in (d / "results.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == [s.id for s in scenarios]
    # the second scenario's follow-up fired: a second adapter error during the reset
    assert results[1]["trigger_fired"]
    obs = json.loads((Path(results[1]["artifacts"]) / "observation.json").read_text())
    frozen = [e for e in obs["entries"] if e["source"] == "policy"
              and e["kind"] == "pe-frozen" and e.get("pe") == "adapter"]
    assert len(frozen) == 2
    # the guest killed: its driver gone from the end state, the others up
    killed = json.loads((Path(results[2]["artifacts"]) / "observation.json").read_text())
    assert killed["drivers_end"] == {"pf": "up", "vf1": "up", "vf2": "up"}
    assert any(e["kind"] == "guest-died" and e.get("owner") == "g1"
               for e in killed["entries"])
