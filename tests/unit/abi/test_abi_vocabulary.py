"""The timeline vocabulary (eeh_abi.vocabulary) names every kind the code records.

A kind written as a bare string somewhere, or a new kind not added to `Kind`, fails here:
the scan reads every writer of timeline entries in the tree (`.record(source, kind`,
the policy's `_emit`/`emit`, the removal's `_notice`, a driver's `report`/`_report`,
and the claim's `source=..., kind=...` look-ups), literal or `Kind.X`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from eeh_abi import vocabulary as V
from eeh_abi.schema import CALLS, EVENTS
from eeh_abi.vocabulary import Kind, Source

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("hypervisor_shim", "eeh_sriov", "guest_drivers", "bench", "qmp_server")
_LIT = r'"([a-z][a-z0-9-]*)"(?=\s*(?:[,)]|if\b))'  # a whole argument, not a prefix
WRITERS = [
    re.compile(r"\.record\(\s*(?:\"[a-z]+\"|Source\.[A-Z_]+),\s*" + _LIT),
    re.compile(r"(?:\b_emit|\.emit|\b_notice)\(\s*" + _LIT),
    re.compile(r"(?:\.report|\b_report)\(\s*" + _LIT),
    re.compile(r"source=(?:\"[a-z]+\"|Source\.[A-Z_]+),\s*kind=" + _LIT),
]
MEMBER = re.compile(r"\bKind\.([A-Z][A-Z0-9_]*)\b")


def _sources() -> list[Path]:
    return [p for pkg in PACKAGES if (ROOT / pkg).is_dir()
            for p in sorted((ROOT / pkg).rglob("*.py"))]


def recorded_literals() -> dict[str, list[str]]:
    """Every kind written as a string literal by a timeline writer: kind -> where."""
    out: dict[str, list[str]] = {}
    for path in _sources():
        text = path.read_text()
        for pattern in WRITERS:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                out.setdefault(m.group(1), []).append(f"{path.relative_to(ROOT)}:{line}")
    return out


def test_every_recorded_literal_kind_is_in_the_vocabulary() -> None:
    values = {k.value for k in Kind}
    unknown = {k: where for k, where in recorded_literals().items() if k not in values}
    assert unknown == {}, "add these to eeh_abi.vocabulary.Kind (and use the member)"


def test_the_scan_finds_writers() -> None:
    """The scan is not vacuous: the tree's known writers are seen (literal or member)."""
    members = {m.group(1) for p in _sources() for m in MEMBER.finditer(p.read_text())}
    seen = set(recorded_literals()) | {Kind[n].value for n in members if n in Kind.__members__}
    for kind in ("pe-frozen", "unfreeze-refused", "recovered", "channel-connected",
                 "traffic-back", "probe"):
        assert kind in seen, kind


def test_every_member_used_exists() -> None:
    missing = sorted({f"{p.relative_to(ROOT)}: Kind.{m.group(1)}" for p in _sources()
                      for m in MEMBER.finditer(p.read_text())
                      if m.group(1) not in Kind.__members__})
    assert missing == []


def test_every_kind_belongs_to_a_source() -> None:
    grouped = (V.POLICY_KINDS | V.DRIVER_KINDS | V.SHIM_KINDS | V.CONSOLE_KINDS
               | V.TRAFFIC_KINDS)
    assert set(Kind) - grouped == set()


def test_members_are_their_strings() -> None:
    """StrEnum: equal to the string, hashed like it, serialized as it (events.jsonl and
    its readers unchanged)."""
    assert Kind.PE_FROZEN == "pe-frozen" and "pe-frozen" in {Kind.PE_FROZEN}
    assert {"pe-frozen": 1}[Kind.PE_FROZEN] == 1
    assert json.dumps({"source": Source.POLICY, "kind": Kind.UNFREEZE_REFUSED}) == \
        '{"source": "policy", "kind": "unfreeze-refused"}'
    assert f"{Kind.RECOVERED}" == "recovered" and str(Kind.RECOVERED) == "recovered"


@pytest.mark.parametrize("name,kind", [("hot", Kind.RESET_HOT), ("DEACTIVATE",
                                        Kind.RESET_DEACTIVATE),
                                       ("fundamental", Kind.RESET_FUNDAMENTAL)])
def test_reset_kind(name: str, kind: Kind) -> None:
    assert V.reset_kind(name) is kind


def test_pushed_events_are_policy_kinds_and_calls_are_not_kinds() -> None:
    """A pushed event is also the policy's timeline entry of that name; a call's own
    entries (source "call") are named by the call, which no kind shadows."""
    assert set(EVENTS) <= V.POLICY_KINDS
    assert not {c.value for c in CALLS} & {k.value for k in Kind}
