"""QAPI-style argument checks for a command's `run`, with QEMU's error descs.

    pe = string(args, "pe")                          # "Parameter 'pe' is missing"
    kind = choice(args, "kind", ("hot", "fundamental"), "hot")
    address = u64(args, "address")                   # also "0x1000": qmp-shell sends a
                                                     # value it cannot read as a string

Unknown arguments are refused by the command table before `run` is called (each
`Command` lists its parameters), so a command cannot forget to.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from qmp_server.errors import QmpError

U64_MAX = (1 << 64) - 1

Args = Mapping[str, object]


def unexpected(args: Args, allowed: Iterable[str]) -> None:
    known = set(allowed)
    for key in args:
        if key not in known:
            raise QmpError(f"Parameter '{key}' is unexpected")


def type_error(name: str, expected: str) -> QmpError:
    return QmpError(f"Invalid parameter type for '{name}', expected: {expected}")


def value_error(name: str, value: object) -> QmpError:
    return QmpError(f"Parameter '{name}' does not accept value '{value}'")


def missing(name: str) -> QmpError:
    return QmpError(f"Parameter '{name}' is missing")


def string(args: Args, name: str, default: str | None = None) -> str:
    if name not in args:
        if default is None:
            raise missing(name)
        return default
    value = args[name]
    if not isinstance(value, str):
        raise type_error(name, "string")
    return value


def choice(args: Args, name: str, choices: Iterable[str], default: str) -> str:
    value = string(args, name, default)
    if value not in set(choices):
        raise value_error(name, value)
    return value


def u64(args: Args, name: str) -> int:
    """An unsigned 64-bit integer, 0 if absent; also "0x..." (C notation) as a string."""
    value = args.get(name, 0)
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise value_error(name, value) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(name, "uint64")
    if not 0 <= value <= U64_MAX:
        raise value_error(name, value)
    return value


def optional_int(args: Args, name: str, minimum: int, maximum: int | None = None
                 ) -> int | None:
    if name not in args:
        return None
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise type_error(name, "integer")
    if value < minimum or (maximum is not None and value > maximum):
        raise value_error(name, value)
    return value


def optional_positive(args: Args, name: str) -> float | None:
    if name not in args:
        return None
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise type_error(name, "number")
    if not (math.isfinite(value) and value > 0):
        raise value_error(name, value)
    return float(value)
