"""A run's human and machine summaries: `timeline.md` and `summary.json`.

`timeline.md` has the claim's step table (time since injection, who) and a Mermaid state
diagram of every PE as it went (normal -> frozen -> locked out -> ... -> normal), drawn
from the policy's notices in events.jsonl. `summary.json` has the steps with their
timestamps, the recovery time, per-VF counters, and the versions and accelerator used.

`demo` writes them for its one error (the claim's steps); `up` for a whole operator
session (`session_steps`: every console action, each PE's own freeze, each driver's
recovery or permanent failure, each VF's traffic back; times since the drivers were
ready) and `session_injections` (per console action, how long until each VF's traffic
came back).
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


def step_table(steps: Sequence[Step], t0: float, since: str = "injection") -> str:
    rows = [f"| step | since {since} | who | result |", "|---|---:|---|---|"]
    for s in steps:
        when = f"{(s.t - t0) * 1000:.1f} ms" if s.t is not None else "-"
        rows.append(f"| {s.title} | {when} | {s.who} | "
                    f"{'ok' if s.ok else 'FAILED: ' + s.detail} |")
    return "\n".join(rows)


def write_timeline_md(path: Path, title: str, steps: Sequence[Step],
                      entries: Sequence[Entry], t0: float, since: str = "injection") -> None:
    text = [f"# {title}", "", step_table(steps, t0, since), "", "## PE states", "",
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


# ---------------------------------------------------------------- an operator session (up)
_CONSOLE_ACTIONS = {Kind.INJECT, Kind.RESET_PE}


def _is_recovery(e: Entry) -> bool:
    """A driver is back: its recovery's outcome, or a probe after a cleared failure."""
    return e.source == Source.DRIVER and (e.kind == Kind.RECOVERED or (
        e.kind == Kind.PROBE and bool(e.data.get("revived"))))


def session_steps(entries: Sequence[Entry], vfs: Iterable[str], *,
                  traffic: bool) -> list[Step]:
    """What happened in an operator session, in order: each console action, each PE's
    own freeze (not the side-effects), each driver's recovery or permanent failure and,
    with `traffic`, each VF's traffic back. A VF recovery after which no traffic came
    back (before the session ended) is a failed step."""
    watched = set(vfs)
    steps: list[Step] = []
    waiting: dict[str, Entry] = {}  # VF -> its last recovery not followed by traffic yet
    for e in entries:
        if e.source == Source.CONSOLE and e.kind in _CONSOLE_ACTIONS:
            what = e.data.get("kind")
            steps.append(Step(e.kind, f"console: {e.kind} {e.pe or ''}"
                              + (f" {what}" if what else ""), True, e.t, "console"))
        elif e.source == Source.POLICY and e.kind == Kind.PE_FROZEN and \
                not e.data.get("side_effect"):
            steps.append(Step("pe-frozen", f"{e.pe} PE frozen", True, e.t, "platform",
                              str(e.data.get("reason", ""))))
        elif _is_recovery(e) and e.pe is not None:
            steps.append(Step("recovered", f"{e.pe} driver back ({e.kind})", True, e.t,
                              e.owner or "driver"))
            if traffic and e.pe in watched:
                waiting[e.pe] = e
        elif e.source == Source.DRIVER and e.kind == Kind.PERMANENT_FAILURE:
            steps.append(Step("permanent-failure", f"{e.pe} permanently failed", True, e.t,
                              e.owner or "driver", str(e.data.get("reason", ""))))
            waiting.pop(e.pe or "", None)
        elif e.source == Source.TRAFFIC and e.kind == Kind.TRAFFIC_BACK and e.pe is not None:
            steps.append(Step("traffic-back", f"traffic back through {e.pe} "
                              f"({e.data.get('ms', '?')} ms after its driver)", True, e.t,
                              "traffic"))
            waiting.pop(e.pe, None)
    for vf, e in sorted(waiting.items()):
        steps.append(Step("traffic-back", f"traffic back through {vf}", False, None,
                          "traffic", f"no echo after its driver's {e.kind} "
                                     f"(host time {e.t:.3f})"))
    return steps


def session_injections(entries: Sequence[Entry], t0: float) -> list[dict[str, Any]]:
    """Per console action: what and when (ms since t0), and for each VF whose traffic came
    back before the next action, how long after the action (ms)."""
    actions = [e for e in entries if e.source == Source.CONSOLE and e.kind in _CONSOLE_ACTIONS]
    out = []
    for i, a in enumerate(actions):
        end = actions[i + 1].t if i + 1 < len(actions) else float("inf")
        back: dict[str, float] = {}
        for e in entries:
            if e.source == Source.TRAFFIC and e.kind == Kind.TRAFFIC_BACK and \
                    a.t < e.t < end and e.pe is not None and e.pe not in back:
                back[e.pe] = round((e.t - a.t) * 1000, 3)
        out.append({"action": a.kind, "pe": a.pe, **a.data,
                    "ms": round((a.t - t0) * 1000, 3), "traffic_back_ms": back})
    return out
