"""`eeh_abi.strict_json.dumps` (and the timeline's lines, which share its `encoder`) write
exactly what the json module writes with the same options, byte for byte, for a corpus of
values and for any JSON value; and the C scanner is built once per `default`, not per
call (json.JSONEncoder.encode builds one each time)."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eeh_abi import strict_json
from eeh_abi.hcall import jsonable
from eeh_abi.strict_json import JsonError, dumps
from hypervisor_shim.timeline import json_text


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


CORPUS: list[Any] = [
    None, True, False, 0, -1, 1 << 70, -(1 << 63), 1.5, -0.0, 1e300, 5e-324, 0.1 + 0.2,
    "", "plain", "é\n\t\"\\/\x00\x1f\x7f", "\ud800 lone surrogate", "\U0001f600 emoji",
    [], {}, [1, [2, [3, [4, {}]]]], (1, 2), {"a": (1, {"b": [None]})},
    {7: "int key", 2.5: "float key", True: "bool key", None: "none key", "s": 1},
    {"kind": Color.RED, "lvl": Level.HIGH, Color.RED: "str-enum key"},
    {"step": "config-restored", "guest_time": 12.25,
     "detail": {"mac": "02:ee:00:00:00:01", "vlan": None, "mtu": 1500}},
    {"call": "report", "args": {"pe": 98304, "steps": [{"step": "reset"}] * 3}},
]


def reference(obj: object, default: Any = None) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=default)


@pytest.mark.parametrize("obj", CORPUS)
def test_dumps_writes_what_json_writes(obj: object) -> None:
    assert dumps(obj) == reference(obj)
    assert dumps(obj, default=jsonable) == reference(obj, jsonable)
    assert json_text(obj) == json.dumps(obj, default=str)  # the timeline's options


def test_values_through_default_and_refusals_are_as_json_has_them() -> None:
    odd = {"p": Path("/x"), "b": b"\x01\xff", "s": {3}, "t": frozenset()}
    assert dumps(odd, default=jsonable) == reference(odd, jsonable)
    assert json_text(odd) == json.dumps(odd, default=str)
    with pytest.raises(TypeError) as want:
        reference({"p": Path("/x")})
    with pytest.raises(JsonError, match="not JSON") as got:
        dumps({"p": Path("/x")})
    assert got.value.reason == f"not JSON: {want.value}"
    for bad in (float("nan"), {"x": [float("-inf")]}):
        with pytest.raises(JsonError, match="not JSON: Out of range float"):
            dumps(bad)
    assert json_text({"x": float("nan")}) == json.dumps({"x": float("nan")}, default=str)
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(JsonError):
        dumps(circular)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30)


@given(json_values)
def test_any_json_value_is_written_as_json_writes_it(value: object) -> None:
    assert dumps(value) == reference(value)
    assert json_text(value) == json.dumps(value, default=str)


def test_the_c_scanner_is_built_once_per_default(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []
    real = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    assert real is not None  # (CPython: the C scanner is there)

    def counting(*args: Any) -> Any:
        made.append(args)
        return real(*args)

    def default(v: object) -> object:
        return str(v)

    monkeypatch.setattr(json.encoder, "c_make_encoder", counting)
    monkeypatch.setattr(strict_json, "_ENCODERS", {})
    assert dumps({"a": [1, 2]}, default=default) == '{"a":[1,2]}'
    built = len(made)  # the encoder's (and its probe's)
    assert built >= 1
    for _ in range(50):
        assert dumps({"a": [1, 2]}, default=default) == '{"a":[1,2]}'
        assert dumps({"b": Path("p")}, default=default) == '{"b":"p"}'
    assert len(made) == built, f"{len(made) - built} scanners built for 100 calls"
