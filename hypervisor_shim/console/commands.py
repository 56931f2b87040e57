"""The PE commands every console socket adds, with QAPI-style argument checking.

Each command has a canonical downstream name (`__org.eeh-sriov_<name>`, as the QMP spec
asks of additions) and the short name an operator types; both are accepted and listed.
Arguments are checked before the backend is called, so a rejected command has no effect;
the error descs are QEMU's ("Parameter 'pe' is missing", "Invalid parameter type for
'pe', expected: string", "Parameter 'x' is unexpected", "Parameter 'kind' does not
accept value 'y'").

Two conveniences beyond strict QAPI typing: `function` takes an ibm,errinjct function
code 0..19 or its name (eeh_abi.papr.ErrorFunction, any case, '-' or '_'), and `address`
and `mask` take a string in C notation ("0x1000") too, because qmp-shell sends a value
it cannot read as a decimal integer as a string.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eeh_abi.papr import ErrorFunction
from hypervisor_shim.console.backend import (
    INJECT_KINDS,
    RESET_KINDS,
    PlatformApi,
    PlatformApiError,
)
from hypervisor_shim.console.errors import QmpError

DOWNSTREAM_PREFIX = "__org.eeh-sriov_"
U64_MAX = (1 << 64) - 1
ERROR_FUNCTION_NAMES = {f.name.lower().replace("_", "-"): int(f) for f in ErrorFunction}

Args = Mapping[str, object]


def _unexpected(args: Args, allowed: tuple[str, ...]) -> None:
    for key in args:
        if key not in allowed:
            raise QmpError(f"Parameter '{key}' is unexpected")


def _type_error(name: str, expected: str) -> QmpError:
    return QmpError(f"Invalid parameter type for '{name}', expected: {expected}")


def _value_error(name: str, value: object) -> QmpError:
    return QmpError(f"Parameter '{name}' does not accept value '{value}'")


def _string(args: Args, name: str, default: str | None = None) -> str:
    if name not in args:
        if default is None:
            raise QmpError(f"Parameter '{name}' is missing")
        return default
    value = args[name]
    if not isinstance(value, str):
        raise _type_error(name, "string")
    return value


def _choice(args: Args, name: str, choices: tuple[str, ...], default: str) -> str:
    value = _string(args, name, default)
    if value not in choices:
        raise _value_error(name, value)
    return value


def _u64(args: Args, name: str) -> int:
    """An unsigned 64-bit integer, 0 if absent; also "0x..." (C notation) as a string."""
    value = args.get(name, 0)
    if isinstance(value, str):
        try:
            value = int(value, 0)
        except ValueError:
            raise _value_error(name, value) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "uint64")
    if not 0 <= value <= U64_MAX:
        raise _value_error(name, value)
    return value


def _error_function(args: Args) -> int:
    if "function" not in args:
        raise QmpError("Parameter 'function' is missing")
    value = args["function"]
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "-")
        if key in ERROR_FUNCTION_NAMES:
            return ERROR_FUNCTION_NAMES[key]
        try:
            value = int(key, 0)
        except ValueError:
            raise _value_error("function", args["function"]) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error("function", "integer or error function name")
    if value not in ErrorFunction._value2member_map_:
        raise _value_error("function", value)
    return value


def _optional_int(args: Args, name: str, minimum: int) -> int | None:
    if name not in args:
        return None
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "integer")
    if value < minimum:
        raise _value_error(name, value)
    return value


def _optional_positive(args: Args, name: str) -> float | None:
    if name not in args:
        return None
    value = args[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _type_error(name, "number")
    if not (math.isfinite(value) and value > 0):
        raise _value_error(name, value)
    return float(value)


# ---- the commands ----------------------------------------------------------------------

async def _query_pes(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ())
    return await api.query_pes()


async def _inject(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ("pe", "kind", "function", "address", "mask"))
    pe = _string(args, "pe")
    kind = _choice(args, "kind", INJECT_KINDS, "errinjct")
    if kind == "errinjct":
        function: int | None = _error_function(args)
    elif "function" in args:
        raise QmpError(f"Parameter 'function' applies to kind 'errinjct' only, not '{kind}'")
    else:
        function = None
    address, mask = _u64(args, "address"), _u64(args, "mask")
    return await api.inject(pe, kind, function, address, mask)


async def _reset_pe(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ("pe", "kind"))
    pe = _string(args, "pe")
    return await api.reset_pe(pe, _choice(args, "kind", RESET_KINDS, "hot"))


async def _error_log(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ("pe",))
    return await api.error_log(_string(args, "pe"))


async def _set_policy(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ("max-freezes", "window-s"))
    max_freezes = _optional_int(args, "max-freezes", 0)
    window_s = _optional_positive(args, "window-s")
    return await api.set_policy(max_freezes, window_s)


async def _query_policy(api: PlatformApi, args: Args) -> object:
    _unexpected(args, ())
    return await api.query_policy()


@dataclass(frozen=True)
class PeCommand:
    name: str  # the short name
    run: Callable[[PlatformApi, Args], Awaitable[object]]
    usage: str  # for the README and `help` texts

    @property
    def canonical(self) -> str:
        return DOWNSTREAM_PREFIX + self.name


PE_COMMANDS = (
    PeCommand("query-pes", _query_pes, ""),
    PeCommand("eeh-inject", _inject,
              "pe=<pe> [kind=errinjct|adapter-fatal|vf-error] [function=<0..19 or name>] "
              "[address=<u64>] [mask=<u64>]"),
    PeCommand("eeh-reset-pe", _reset_pe, "pe=<pe> [kind=hot|fundamental]"),
    PeCommand("query-pe-error-log", _error_log, "pe=<pe>"),
    PeCommand("eeh-set-policy", _set_policy, "[max-freezes=<int>] [window-s=<seconds>]"),
    PeCommand("query-eeh-policy", _query_policy, ""),
)
BY_NAME: dict[str, PeCommand] = {}
for _c in PE_COMMANDS:
    BY_NAME[_c.name] = BY_NAME[_c.canonical] = _c


def pe_command_names() -> list[str]:
    """Every name the PE commands answer to: canonical first, then the short one."""
    return [n for c in PE_COMMANDS for n in (c.canonical, c.name)]


async def run_pe_command(api: PlatformApi, name: str, args: Args) -> Any:
    """Check the arguments and call the backend; QmpError for anything refused (the
    backend's PlatformApiError becomes a GenericError with its message)."""
    try:
        return await BY_NAME[name].run(api, args)
    except PlatformApiError as e:
        raise QmpError(str(e)) from e
