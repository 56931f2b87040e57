"""docs/platform-calls.md matches the schema: its call and event tables are what
`python -m hypervisor_shim.hcall.calldoc` generates, and every call and event is in them."""

from __future__ import annotations

import re
from pathlib import Path

from eeh_abi.schema import CALLS, EVENTS
from hypervisor_shim.hcall.calldoc import generated_parts, render, tables

DOC = Path(__file__).resolve().parents[3] / "docs" / "platform-calls.md"


def test_generated_tables_are_current() -> None:
    parts = generated_parts(DOC.read_text())
    for name, body in tables().items():
        assert parts[name] is not None, f"GENERATED {name} markers missing"
        assert parts[name] == body, "run: python -m hypervisor_shim.hcall.calldoc --write"


def test_every_call_and_event_has_its_row() -> None:
    parts = generated_parts(DOC.read_text())
    calls, events = parts["calls"] or "", parts["events"] or ""
    assert [c for c in CALLS if f"\n| `{c}` |" not in calls] == []
    assert [e for e in EVENTS if f"\n| `{e}` |" not in events] == []
    rows = [line for line in calls.splitlines() if line.startswith("| `")]
    assert len(rows) == len(CALLS)


def _prose(text: str) -> str:
    return re.sub(r"<!-- BEGIN GENERATED.*?<!-- END GENERATED [a-z]+ -->", "", text,
                  flags=re.S)


def test_render_replaces_only_the_tables() -> None:
    text = DOC.read_text()
    stale = text.replace("| `configure-pe` |", "| `configure-pe-old` |")
    assert stale != text
    once = render(stale)
    assert once == render(once) and _prose(once) == _prose(text)
    assert "configure-pe-old" not in once and "## The lockout" in once
