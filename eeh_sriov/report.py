"""A run's human and machine summaries: `timeline.md` and `summary.json`.

`timeline.md` has the claim's step table (time since injection, who) and a Mermaid state
diagram of every PE as it went (normal -> frozen -> locked out -> ... -> normal), drawn
from the policy's notices in events.jsonl. `summary.json` has the steps with their
timestamps, the recovery time, per-VF counters, and the versions and accelerator used.
"""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.claim import Step
from hypervisor_shim.timeline import Entry

# policy notice -> the PE state it leads to (for the diagram)
_TRANSITIONS: dict[str, str | None] = {
    Kind.PE_FROZEN: "Frozen",
    Kind.LOCKOUT_START: None,
    Kind.UNFREEZE_REFUSED: None,
    Kind.LOCKOUT_LIFTED: "Frozen",
    Kind.MMIO_THAWED: "MmioEnabled",
    Kind.DMA_THAWED: None,
    Kind.PE_THAWED: "Normal",
    Kind.RESET_HOT: "Reset",
    Kind.RESET_FUNDAMENTAL: "Reset",
    Kind.PE_RESET_DONE: None,
    Kind.RESET_FAILED: "Frozen",
    Kind.PERMANENT_FAILURE: "Permanent",
    Kind.PERMANENT_CLEARED: "Frozen",
}
_STATE_TEXT = {
    "Normal": "Normal: state 0",
    "Frozen": "Frozen: state 2",
    "LockedOut": "LockedOut: state 5, retry",
    "MmioEnabled": "MmioEnabled: state 4",
    "Reset": "Reset: state 1 / 5 settling",
    "Permanent": "Permanent: state 5, hint 0",
}


def pe_paths(entries: Iterable[Entry], t0: float) -> dict[str, list[tuple[str, str, float]]]:
    """Per PE, its transitions (from, to, ms since t0) as the policy saw them."""
    state: dict[str, str] = {}
    paths: dict[str, list[tuple[str, str, float]]] = {}
    for e in entries:
        if e.source != Source.POLICY or e.pe is None or e.kind not in _TRANSITIONS:
            continue
        to = _TRANSITIONS[e.kind]
        if e.kind == Kind.PE_FROZEN and e.data.get("locked_out"):
            to = "LockedOut"
        if to is None:
            continue
        frm = state.get(e.pe, "Normal")
        if frm == to:
            continue
        state[e.pe] = to
        paths.setdefault(e.pe, []).append((frm, to, (e.t - t0) * 1000))
    return paths


def mermaid(paths: Mapping[str, list[tuple[str, str, float]]]) -> str:
    lines = ["stateDiagram-v2"]
    for pe, moves in paths.items():
        ident = pe.replace("-", "_")
        lines.append(f"    state {ident} {{")
        lines.append(f"        [*] --> {ident}_Normal")
        for frm, to, ms in moves:
            lines.append(f"        {ident}_{frm} --> {ident}_{to}: {ms:.1f} ms")
        seen = {s for m in moves for s in m[:2]} | {"Normal"}
        for s in sorted(seen):
            lines.append(f"        {ident}_{s}: {_STATE_TEXT[s]}")
        lines.append("    }")
    return "\n".join(lines)


def step_table(steps: Sequence[Step], t0: float) -> str:
    rows = ["| step | since injection | who | result |", "|---|---:|---|---|"]
    for s in steps:
        when = f"{(s.t - t0) * 1000:.1f} ms" if s.t is not None else "-"
        rows.append(f"| {s.title} | {when} | {s.who} | "
                    f"{'ok' if s.ok else 'FAILED: ' + s.detail} |")
    return "\n".join(rows)


def write_timeline_md(path: Path, title: str, steps: Sequence[Step],
                      entries: Sequence[Entry], t0: float) -> None:
    text = [f"# {title}", "", step_table(steps, t0), "", "## PE states", "",
            "```mermaid", mermaid(pe_paths(entries, t0)), "```", "",
            "Every entry is in `events.jsonl` (host monotonic time `t`; driver reports "
            "also carry the guest's `guest_time`).", ""]
    path.write_text("\n".join(text))


def versions(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"python": sys.version.split()[0], "host_kernel": platform.release(),
            **(extra or {})}


def write_summary(path: Path, *, steps: Sequence[Step], t0: float,
                  counters: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    ok = all(s.ok for s in steps)
    back = [s.t for s in steps if s.key == "traffic-back" and s.t is not None]
    summary = {
        "ok": ok,
        "injected_at": t0,
        "recovery_ms": round((back[0] - t0) * 1000, 3) if back and ok else None,
        "steps": [{"step": s.key, "title": s.title, "ok": s.ok,
                   "ms": None if s.t is None else round((s.t - t0) * 1000, 3),
                   "who": s.who, "detail": s.detail} for s in steps],
        "vfs": dict(counters),
        **extra,
    }
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return summary
