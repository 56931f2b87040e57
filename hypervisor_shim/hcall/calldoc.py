"""Render the call and event tables of docs/platform-calls.md from the schema.

    .venv/bin/python -m hypervisor_shim.hcall.calldoc           # the tables, to stdout
    .venv/bin/python -m hypervisor_shim.hcall.calldoc --write   # rewrite them in the doc

docs/platform-calls.md carries each table between its `<!-- BEGIN GENERATED <name> -->`
and `<!-- END GENERATED <name> -->` markers; the prose around them is written by hand.
A unit test (tests/unit/abi/test_abi_calldoc.py) fails when the document and the schema
disagree.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from eeh_abi.papr import Status
from eeh_abi.schema import CALL_SPECS, EVENT_SPECS, Arg, ArgType, CallSpec, EventSpec

DOC = Path(__file__).resolve().parents[2] / "docs" / "platform-calls.md"
COMMAND = "python -m hypervisor_shim.hcall.calldoc --write"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _arg(a: Arg) -> str:
    kind = ([] if a.type is ArgType.INT else [str(a.type)]) + (["optional"] if a.optional else [])
    note = ", ".join(kind) + (": " if kind and a.doc else "") + a.doc
    out = f"`{a.name}`" + (f" ({note})" if note else "")
    if a.choices is not None:
        out += " " + ", ".join(f"{v} {what}" for v, what in a.choices.items())
    if a.range is not None:
        out += f" {a.range[0]}-{a.range[1]}"
    return out


def _call_row(s: CallSpec) -> str:
    args = "; ".join(_arg(a) for a in s.args) or "-"
    fields = [f"`{f.name}`: {f.doc}" for f in s.reply]
    if Status.BUSY in s.statuses:
        fields.append("`retry_ms` with -2")
    ret = "; ".join(fields) or "-"
    statuses = ", ".join(str(int(st)) for st in s.statuses)
    auth = f"{s.action} on `{s.target}`" if s.action is not None else "-"
    return f"| `{s.call}` | {_cell(s.doc)} | {_cell(args)} | {_cell(ret)} | {statuses} | {auth} |"


def calls_table(specs: Iterable[CallSpec] = CALL_SPECS.values()) -> str:
    rows = ["| call | does | args | ret | statuses | authorized as |",
            "|---|---|---|---|---|---|"]
    rows += [_call_row(s) for s in specs]
    return "\n".join(rows) + "\n"


def _event_row(e: EventSpec) -> str:
    data = "; ".join(f"`{f.name}`" + (f": {f.doc}" if f.doc else "") for f in e.data) or "-"
    return f"| `{e.name}` | {_cell(e.when)} | {_cell(data)} |"


def events_table(specs: Iterable[EventSpec] = EVENT_SPECS.values()) -> str:
    rows = ["| event | when | data |", "|---|---|---|"]
    rows += [_event_row(e) for e in specs]
    return "\n".join(rows) + "\n"


def tables() -> dict[str, str]:
    """Each generated block of the document by its marker name."""
    return {"calls": calls_table(), "events": events_table()}


def _block(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- BEGIN GENERATED {name}[^>]*-->\n\n)(.*?)(\n<!-- END GENERATED "
                      rf"{name} -->)", re.S)


def generated_parts(text: str) -> dict[str, str | None]:
    """The blocks the document holds now (None where its markers are missing)."""
    out: dict[str, str | None] = {}
    for name in tables():
        m = _block(name).search(text)
        out[name] = m.group(2) if m else None
    return out


def render(text: str) -> str:
    """The document with every generated block replaced by the schema's."""
    for name, body in tables().items():
        m = _block(name).search(text)
        if m is None:
            raise ValueError(f"markers of the generated block {name!r} missing")
        text = text[:m.start(2)] + body + text[m.end(2):]
    return text


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        DOC.write_text(render(DOC.read_text()))
        return 0
    if argv:
        print(__doc__, file=sys.stderr)
        return 2
    for name, body in tables().items():
        print(f"<!-- {name} -->\n{body}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
