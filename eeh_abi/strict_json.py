"""Strict JSON, one implementation for every JSON wire of the project.

`loads` accepts exactly JSON: UTF-8 text only, no `NaN`/`Infinity`, no number beyond a
double's range, no repeated key in an object, and (when asked) no nesting deeper than
`max_depth`; anything else is a `JsonError` whose `reason` says why, never another
exception, for any bytes at all. `dumps` writes the compact form (no spaces) and never
writes what `loads` would refuse. Used by the platform calls (`eeh_abi.hcall`) and the
operator's QMP console. Standard library only (runs in guests).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any


class JsonError(ValueError):
    """Not strict JSON; `reason` is a short lower-case explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooDeep(JsonError):
    """Nested deeper than the limit."""


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out = dict(pairs)  # (built at C speed; the pairs looked at only when a key repeats)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"repeated key '{key}'")
            seen.add(key)
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"'{name}' is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:40]} is out of range")
    return value


_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = " \t\n\r"
_DECODER = json.JSONDecoder(object_pairs_hook=_no_repeated_keys, parse_constant=_no_constant,
                            parse_float=_finite)


_scan_once: Callable[[str, int], tuple[object, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> object:
    """`_DECODER.decode(text)`: the same value or the same JSONDecodeError, without its two
    Python-level calls and whitespace scans around a text that has none (a wire line)."""
    pos = 0 if text[:1] not in _WS_CHARS else _WS.match(text).end()  # type: ignore[union-attr]
    try:
        value, end = _scan_once(text, pos)
    except StopIteration as e:
        raise json.JSONDecodeError("Expecting value", text, e.value) from None
    if end != len(text):
        end = _WS.match(text, end).end()  # type: ignore[union-attr]
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    return value


def depth_ok(obj: object, limit: int) -> bool:
    """No array or object nested deeper than `limit`, the outermost counting 1
    (iterative: any depth is safe)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: Any = value.values()
        elif isinstance(value, list):
            items = value
        else:
            continue
        if depth > limit:
            return False
        stack.extend((v, depth + 1) for v in items)
    return True


def loads(data: bytes | str, *, max_depth: int | None = None) -> object:
    """The value of one JSON text; JsonError if it is not strict JSON."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonError("invalid UTF-8 sequence") from None
    else:
        text = data
    try:
        value: object = _decode(text)
    except json.JSONDecodeError as e:
        raise JsonError(e.msg[:1].lower() + e.msg[1:]) from None
    except RecursionError:
        raise TooDeep("nested too deeply" if max_depth is None
                      else f"nested deeper than {max_depth}") from None
    except ValueError as e:  # the hooks' refusals, and int() of a huge number
        raise JsonError(str(e)[:200]) from None
    # fewer openers than the limit cannot nest deeper (the count is a C-speed scan)
    if max_depth is not None and text.count("[") + text.count("{") > max_depth \
            and not depth_ok(value, max_depth):
        raise TooDeep(f"nested deeper than {max_depth}")
    return value


_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,19})(?![0-9.eE])")
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]


def leading_int(data: bytes | str, key: str, *, max_depth: int) -> int | None:
    """The integer value of the top-level object's member `key` when everything before it
    (and the value itself) is strict JSON, whatever comes after it; None otherwise.

    For a text `loads` refused: it reads left to right and stops at the first thing
    wrong (bytes that are not UTF-8, a member before `key` that is not strict JSON or is
    nested deeper than `max_depth` counting the object itself, a repeated key), so it
    finds the member only when the text goes wrong after it. Linear in the text's length:
    each member before `key` is parsed once; never raises."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            text = data[:e.start].decode("utf-8")  # what precedes the first bad byte
    else:
        text = data
    try:
        pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
        if text[pos:pos + 1] != "{":
            return None
        pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        seen: set[str] = set()
        while text[pos:pos + 1] == '"':
            name, pos = _scanstring(text, pos + 1, True)
            if name in seen:
                return None
            seen.add(name)
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] != ":":
                return None
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            if name == key:
                m = _INT.match(text, pos)
                if m is None:
                    return None
                end = _WS.match(text, m.end()).end()  # type: ignore[union-attr]
                return int(m.group()) if text[end:end + 1] in (",", "}") else None
            value, pos = _DECODER.raw_decode(text, pos)
            if not depth_ok(value, max_depth - 1):
                return None
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] != ",":
                return None
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    except (ValueError, RecursionError):  # JSONDecodeError, the hooks' refusals
        return None
    return None


Encode = Callable[[Any], str]

_PROBE: dict[Any, Any] = {"t": 1.5, "s": "\u00e9\n\x01\"", "n": None, "d": {"l": [1, True, -0.0]},
                          7: "int key", 2.5: "float key", True: "bool key", None: "null"}


def encoder(default: Callable[[Any], Any] | None = None,
            separators: tuple[str, str] = (",", ":"), allow_nan: bool = False) -> Encode:
    """The text `json.JSONEncoder(separators=..., allow_nan=..., default=...).encode`
    writes (ASCII, keys in order), from the C scanner built once here, not per call as
    `json.dumps` and `JSONEncoder.encode` do. No check for circular containers (its table
    would be shared by the threads that encode at once): a cycle ends in RecursionError
    instead of ValueError. The plain encoder's `encode` where the C scanner is missing or
    writes anything else than it (probed once). It keeps no state between calls: threads
    share it. (`dumps` and the timeline's lines, `hypervisor_shim.timeline`, use it.)"""
    plain = json.JSONEncoder(separators=separators, allow_nan=allow_nan, default=default)
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return plain.encode
    try:
        scan = make(None, plain.default, json.encoder.encode_basestring_ascii, None,
                    separators[1], separators[0], False, False, allow_nan)
        if "".join(scan(_PROBE, 0)) != plain.encode(_PROBE):
            return plain.encode
    except Exception:  # another signature (a later Python): the plain encoder
        return plain.encode
    return lambda obj: "".join(scan(obj, 0))


# `dumps`'s encoders, one per `default`
_ENCODERS: dict[Callable[[Any], Any] | None, Encode] = {}


def dumps(obj: object, default: Callable[[Any], Any] | None = None) -> str:
    """The compact JSON text of `obj` (`default` converts what JSON has no type for);
    JsonError for a value that is not JSON (NaN, infinity, a circular structure)."""
    enc = _ENCODERS.get(default)
    if enc is None:  # (json.dumps with these options builds one per call)
        enc = encoder(default)
        if len(_ENCODERS) < 64:  # the few `default`s of the project; others are not kept
            _ENCODERS[default] = enc
    try:
        return enc(obj)
    except (ValueError, TypeError, RecursionError) as e:
        raise JsonError(f"not JSON: {str(e)[:200]}") from None
