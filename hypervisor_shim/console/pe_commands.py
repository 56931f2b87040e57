"""The PE commands every console socket adds: a `qmp_server.CommandTable` on the
`Platform` facade.

Each command has a canonical downstream name (`__org.eeh-sriov_<name>`, as the QMP spec
asks of additions) and the short name an operator types; both are accepted and listed.
Arguments are checked before the platform is called, so a rejected command has no effect;
the error descs are QEMU's ("Parameter 'pe' is missing", "Invalid parameter type for
'pe', expected: string", "Parameter 'x' is unexpected", "Parameter 'kind' does not
accept value 'y'"). The platform's own refusals (`PlatformError`) are GenericError with
its message. The replies are the facade's typed results in their wire form (`to_json`).

Two conveniences beyond strict QAPI typing: `function` takes an ibm,errinjct function
code 0..19 or its name (eeh_abi.papr.ErrorFunction, any case, '-' or '_'), and `address`
and `mask` take a string in C notation ("0x1000") too, because qmp-shell sends a value
it cannot read as a decimal integer as a string.

Adding a command (the recipe): an async function `(platform, args) -> JSON value` here,
its `Command` in `pe_commands()` with its parameters, a test through the stock qmp-shell
(tests/unit/shim/test_console_shell.py), and its line in the README's console table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from eeh_abi import strict_json
from eeh_abi.papr import ErrorFunction
from eeh_abi.vocabulary import Source
from hypervisor_shim.injection import INJECT_KINDS, InjectKind
from hypervisor_shim.platform import Platform
from hypervisor_shim.platform_api import RESET_KINDS, PlatformError
from qmp_server import Command, CommandTable, QmpError
from qmp_server import args as a
from qmp_server.args import Args

DOWNSTREAM_PREFIX = "__org.eeh-sriov_"
TIMELINE_DEFAULT, MAX_TIMELINE = 20, 1000  # query-eeh-timeline's `last`
ERROR_FUNCTION_NAMES = {f.name.lower().replace("_", "-"): int(f) for f in ErrorFunction}


def _error_function(args: Args) -> int:
    if "function" not in args:
        raise a.missing("function")
    value = args["function"]
    if isinstance(value, str):
        key = value.strip().lower().replace("_", "-")
        if key in ERROR_FUNCTION_NAMES:
            return ERROR_FUNCTION_NAMES[key]
        try:
            value = int(key, 0)
        except ValueError:
            raise a.value_error("function", args["function"]) from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise a.type_error("function", "integer or error function name")
    if value not in ErrorFunction._value2member_map_:
        raise a.value_error("function", value)
    return value


# ---- the commands ----------------------------------------------------------------------

async def _query_pes(plat: Platform, args: Args) -> object:
    return [p.to_json() for p in await plat.query_pes()]


async def _inject(plat: Platform, args: Args) -> object:
    pe = a.string(args, "pe")
    kind = InjectKind(a.choice(args, "kind", INJECT_KINDS, InjectKind.ERRINJCT))
    if INJECT_KINDS[kind].takes_function:
        function: int | None = _error_function(args)
    elif "function" in args:
        only = " or ".join(f"'{k}'" for k, spec in INJECT_KINDS.items() if spec.takes_function)
        raise QmpError(f"Parameter 'function' applies to kind {only} only, not '{kind}'")
    else:
        function = None
    address, mask = a.u64(args, "address"), a.u64(args, "mask")
    result = await plat.inject(pe, kind, function=function, address=address, mask=mask,
                               by=Source.CONSOLE)
    return result.to_json()


async def _reset_pe(plat: Platform, args: Args) -> object:
    pe = a.string(args, "pe")
    kind = a.choice(args, "kind", RESET_KINDS, "hot")
    return (await plat.reset_pe(pe, kind, by=Source.CONSOLE)).to_json()


async def _error_log(plat: Platform, args: Args) -> object:
    return [e.to_json() for e in await plat.error_log(a.string(args, "pe"))]


async def _set_policy(plat: Platform, args: Args) -> object:
    max_freezes = a.optional_int(args, "max-freezes", 0)
    window_s = a.optional_positive(args, "window-s")
    return (await plat.set_policy(max_freezes, window_s)).to_json()


async def _query_policy(plat: Platform, args: Args) -> object:
    return (await plat.query_policy()).to_json()


async def _timeline(plat: Platform, args: Args) -> object:
    last = a.optional_int(args, "last", 1, MAX_TIMELINE)
    entries = await plat.timeline_tail(TIMELINE_DEFAULT if last is None else last)
    # as events.jsonl has them (what JSON has no type for, as its str())
    return [strict_json.loads(strict_json.dumps(e.to_json(), default=str)) for e in entries]


Run = Callable[[Platform, Args], Awaitable[object]]


@dataclass(frozen=True)
class PeCommand:
    name: str  # the short name
    run: Run
    params: tuple[str, ...] = ()  # every argument it takes
    usage: str = ""


_KINDS = "|".join(INJECT_KINDS)
PE_COMMANDS = (
    PeCommand("query-pes", _query_pes),
    PeCommand("eeh-inject", _inject, ("pe", "kind", "function", "address", "mask"),
              f"pe=<pe> [kind={_KINDS}] [function=<0..19 or name>] [address=<u64>] "
              "[mask=<u64>]"),
    PeCommand("eeh-reset-pe", _reset_pe, ("pe", "kind"),
              f"pe=<pe> [kind={'|'.join(RESET_KINDS)}]"),
    PeCommand("query-pe-error-log", _error_log, ("pe",), "pe=<pe>"),
    PeCommand("eeh-set-policy", _set_policy, ("max-freezes", "window-s"),
              "[max-freezes=<int>] [window-s=<seconds>]"),
    PeCommand("query-eeh-policy", _query_policy),
    PeCommand("query-eeh-timeline", _timeline, ("last",), f"[last=<1..{MAX_TIMELINE}>]"),
)


def _bind(c: PeCommand, plat: Platform) -> Command:
    async def run(args: Args) -> object:
        try:
            return await c.run(plat, args)
        except PlatformError as e:  # the platform's refusal: the operator reads why
            raise QmpError(str(e)) from e
    return Command(c.name, run, c.params, c.usage)


def pe_commands(plat: Platform) -> CommandTable:
    """The PE commands on `plat`."""
    return CommandTable([_bind(c, plat) for c in PE_COMMANDS], prefix=DOWNSTREAM_PREFIX)


def pe_command_names() -> list[str]:
    """Every name the PE commands answer to: downstream first, then the short one."""
    return [n for c in PE_COMMANDS for n in (DOWNSTREAM_PREFIX + c.name, c.name)]
