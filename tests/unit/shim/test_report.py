"""timeline.md and summary.json from a timeline."""

from __future__ import annotations

import json
from pathlib import Path

from eeh_sriov.report import mermaid, pe_paths, write_summary, write_timeline_md
from hypervisor_shim.claim import check_claim
from hypervisor_shim.timeline import Entry
from tests.unit.shim.test_claim import VFS, good


def test_pe_paths_follow_the_policy() -> None:
    e = [Entry(1.0, "policy", "pe-frozen", "adapter", None, {"locked_out": False}),
         Entry(1.1, "policy", "pe-frozen", "vf0", None, {"locked_out": True}),
         Entry(2.0, "policy", "lockout-lifted", "vf0"),
         Entry(2.1, "policy", "mmio-thawed", "vf0"),
         Entry(2.2, "policy", "pe-thawed", "vf0")]
    paths = pe_paths(e, 1.0)
    assert [(a, b) for a, b, _ in paths["vf0"]] == [
        ("Normal", "LockedOut"), ("LockedOut", "Frozen"), ("Frozen", "MmioEnabled"),
        ("MmioEnabled", "Normal")]
    text = mermaid(paths)
    assert text.startswith("stateDiagram-v2") and "vf0_LockedOut --> vf0_Frozen" in text


def test_files_written(tmp_path: Path) -> None:
    entries = good()
    steps = check_claim(entries, pf_owner="svc", vfs=VFS)
    write_timeline_md(tmp_path / "timeline.md", "run", steps, entries, 1.0)
    md = (tmp_path / "timeline.md").read_text()
    assert "| adapter PE frozen | 1000.0 ms | platform | ok |" in md and "```mermaid" in md
    s = write_summary(tmp_path / "summary.json", steps=steps, t0=1.0, counters={"vf0": {}},
                      extra={"accel": "tcg"})
    assert s["ok"] and s["recovery_ms"] is not None
    assert json.loads((tmp_path / "summary.json").read_text())["accel"] == "tcg"
