"""The schema (eeh_abi.schema) is whole and drives the server: every call has one handler
and every handler one call; every call that names a PE says which action it performs on
it; the argument check refuses what does not fit, by the schema's own declarations."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from eeh_abi.papr import Status
from eeh_abi.schema import (
    CALL_SPECS,
    CALLS,
    EVENT_SPECS,
    Action,
    ArgError,
    ArgType,
    Call,
    check_args,
    spec_of,
)
from eeh_abi.vocabulary import Kind
from hypervisor_shim.hcall.calls import HANDLERS


def test_every_call_has_a_handler_and_every_handler_a_call() -> None:
    assert set(HANDLERS) == set(CALL_SPECS) == set(Call)
    assert len(set(HANDLERS.values())) == len(HANDLERS)  # no handler serves two calls


def test_every_spec_is_consistent() -> None:
    for call, spec in CALL_SPECS.items():
        assert spec.call is call
        names = [a.name for a in spec.args]
        assert len(names) == len(set(names)), call
        assert Status.SUCCESS in spec.statuses, call
        assert (spec.target is None) == (spec.action is None), call
        if spec.target is not None:
            target = spec.arg(spec.target)
            assert target is not None and target.type is ArgType.INT, call
        for a in spec.args:
            assert a.choices is None or a.range is None, (call, a.name)
            assert (a.choices is None and a.range is None) or a.type is ArgType.INT
    for name, ev in EVENT_SPECS.items():
        assert ev.name is name


def test_every_action_is_performed_by_a_call() -> None:
    assert {s.action for s in CALL_SPECS.values()} - {None} == set(Action)


def test_wire_names_are_unchanged() -> None:
    """The names on the wire (renaming one breaks every guest; new ones may come)."""
    assert {"query-functions", "register", "report", "get-config-addr-info2",
            "read-slot-reset-state2", "set-eeh-option", "set-slot-reset", "configure-pe",
            "slot-error-detail", "open-sriov-allow-unfreeze", "errinjct"} <= set(CALLS)
    assert [e.value for e in EVENT_SPECS] == [
        "pe-frozen", "lockout-lifted", "permanent-failure", "pe-reset-done",
        "function-removed", "function-added"]


def test_unknown_call() -> None:
    with pytest.raises(ArgError, match="unknown call 'nope'"):
        spec_of("nope")
    assert spec_of("configure-pe") is CALL_SPECS[Call.CONFIGURE_PE]


def valid_args(call: Call) -> dict[str, Any]:
    """Arguments that fit the call, made from its declaration."""
    out: dict[str, Any] = {}
    for a in CALL_SPECS[call].args:
        if a.choices is not None:
            out[a.name] = next(iter(a.choices))
        elif a.range is not None:
            out[a.name] = a.range[1]
        else:
            out[a.name] = {ArgType.INT: 0x10000, ArgType.TEXT: "x", ArgType.BOOL: False,
                           ArgType.NUMBER: 1.5, ArgType.OBJECT: {},
                           ArgType.LIST: [1, 2], ArgType.STEPS: [{"step": "x"}]}[a.type]
    return out


@pytest.mark.parametrize("call", list(Call))
def test_declared_arguments_pass_and_each_mistake_is_refused(call: Call) -> None:
    spec = CALL_SPECS[call]
    good = valid_args(call)
    check_args(spec, good)
    with pytest.raises(ArgError, match="unknown argument"):
        check_args(spec, {**good, "bogus": 1})
    for a in spec.args:
        rest = {k: v for k, v in good.items() if k != a.name}
        if a.optional:
            check_args(spec, rest)
        else:
            with pytest.raises(ArgError, match=f"needs argument '{a.name}'"):
                check_args(spec, rest)
        wrong: object = "x" if a.type is not ArgType.TEXT else 5
        with pytest.raises(ArgError, match=f"argument '{a.name}' must be"):
            check_args(spec, {**good, a.name: wrong})
        if a.type is not ArgType.BOOL:
            with pytest.raises(ArgError, match="not bool"):
                check_args(spec, {**good, a.name: True})
        if a.type is ArgType.INT:
            with pytest.raises(ArgError, match="out of range"):
                check_args(spec, {**good, a.name: 1 << 64})
            check_args(spec, {**good, a.name: good[a.name]})


@pytest.mark.parametrize("call,name,bad,ok", [
    (Call.SET_EEH_OPTION, "option", [4, -1, 99], [0, 1, 2, 3]),
    (Call.SET_SLOT_RESET, "function", [2, 4, -1], [0, 1, 3]),
    (Call.GET_CONFIG_ADDR_INFO2, "function", [2, -1], [0, 1]),
    (Call.SLOT_ERROR_DETAIL, "function", [0, 3], [1, 2]),
    (Call.ERRINJCT, "function", [-1, 20], [0, 19]),
])
def test_values_outside_the_declared_ones_are_refused(call: Call, name: str, bad: list[int],
                                                      ok: list[int]) -> None:
    """Written out by hand from PAPR (not read back from the schema)."""
    spec = CALL_SPECS[call]
    good = valid_args(call)
    for v in ok:
        check_args(spec, {**good, name: v})
    for v in bad:
        with pytest.raises(ArgError, match=f"{name} must be"):
            check_args(spec, {**good, name: v})


def test_lists_hold_integers_only() -> None:
    spec = CALL_SPECS[Call.OPEN_SRIOV_ALLOW_UNFREEZE]
    check_args(spec, {"pe": 1, "vf_pes": []})
    for bad in ([1, "2"], [True], [1.0], [[1]]):
        with pytest.raises(ArgError, match="list of integers"):
            check_args(spec, {"pe": 1, "vf_pes": bad})


def test_a_number_is_an_integer_or_a_float() -> None:
    spec = CALL_SPECS[Call.REPORT]
    check_args(spec, {"step": "probe", "guest_time": 3})
    check_args(spec, {"step": "probe", "guest_time": 3.25})
    with pytest.raises(ArgError):
        check_args(spec, {"step": "probe", "guest_time": "3"})


def test_every_event_the_platform_pushes_is_declared() -> None:
    """Every pushed event named in the platform's code (`event="..."`/`event=Kind.X`,
    the removal's `_notice(kind, ..., event=True)`) has its EVENT_SPECS entry."""
    root = Path(__file__).resolve().parents[3] / "hypervisor_shim"
    named = re.compile(r'\bevent=(?:"([a-z][a-z0-9-]*)"|Kind\.([A-Z_]+))')
    noticed = re.compile(r'_notice\(\s*(?:"([a-z][a-z0-9-]*)"|Kind\.([A-Z_]+))[^()]*'
                         r'(?:\([^()]*\)[^()]*)*event=True')
    found: set[str] = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        for pattern in (named, noticed):
            for m in pattern.finditer(text):
                found.add(m.group(1) or Kind[m.group(2)].value)
    assert {"pe-frozen", "lockout-lifted", "function-added"} <= found  # the scan sees them
    assert found - {e.value for e in EVENT_SPECS} == set()
