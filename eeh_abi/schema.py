"""The platform calls and pushed events, declared once: the schema the rest is made from.

Each `CallSpec` says what a call takes (`Arg`: name, type, optional, allowed values),
what its reply carries (`Field`), its statuses, and how the caller is authorized: the
`Action` it performs on the PE named by its `target` argument. From it come the server's
validation and dispatch (`hypervisor_shim.hcall.calls`: one handler per `Call`), the
authorization of every call, the client's call names (`Channel.call(Call.X, ...)`), and
the call and event tables of docs/platform-calls.md
(`python -m hypervisor_shim.hcall.calldoc --write`).

Adding a platform call: a `Call` member and its `CallSpec` here, its handler in the
server's table, its test (docs/howto-platform-call.md). Standard library only.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from eeh_abi.papr import Status
from eeh_abi.vocabulary import Kind


class Call(enum.StrEnum):
    QUERY_FUNCTIONS = "query-functions"
    QUERY_PARTITION = "query-partition"
    REGISTER = "register"
    REPORT = "report"
    GET_CONFIG_ADDR_INFO2 = "get-config-addr-info2"
    READ_SLOT_RESET_STATE2 = "read-slot-reset-state2"
    SET_EEH_OPTION = "set-eeh-option"
    SET_SLOT_RESET = "set-slot-reset"
    CONFIGURE_PE = "configure-pe"
    SLOT_ERROR_DETAIL = "slot-error-detail"
    OPEN_SRIOV_ALLOW_UNFREEZE = "open-sriov-allow-unfreeze"
    ERRINJCT = "errinjct"


class Action(enum.StrEnum):
    """What a call does to the PE it names; the platform authorizes the caller for it
    (`hypervisor_shim.pe.access.authorize`)."""

    READ_STATE = "read-state"  # also allowed to the PF's owner on the VF PEs below it
    THAW = "thaw"
    RESET = "reset"
    CONFIGURE = "configure"
    ERROR_DETAIL = "error-detail"
    ALLOW_UNFREEZE = "allow-unfreeze"  # only on the adapter PE, only by its owner
    INJECT = "inject"  # also needs the policy's errinjct switch
    REGISTER = "register"
    REPORT = "report"


class ArgType(enum.StrEnum):
    INT = "integer"
    TEXT = "text"
    BOOL = "bool"
    NUMBER = "number"  # integer or float
    OBJECT = "object"
    LIST = "list"  # of integers
    STEPS = "list of steps"  # `report`'s `steps`: objects, each checked by `check_steps`


_PY_TYPES: Mapping[ArgType, tuple[type, ...]] = MappingProxyType({
    ArgType.INT: (int,), ArgType.TEXT: (str,), ArgType.BOOL: (bool,),
    ArgType.NUMBER: (int, float), ArgType.OBJECT: (dict,), ArgType.LIST: (list,),
    ArgType.STEPS: (list,),
})
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # what any integer argument may be


@dataclass(frozen=True)
class Arg:
    name: str
    type: ArgType
    doc: str = ""
    optional: bool = False
    choices: Mapping[int, str] | None = None  # the allowed values and what each means
    range: tuple[int, int] | None = None  # the allowed values, both ends included


@dataclass(frozen=True)
class Field:
    name: str
    doc: str


@dataclass(frozen=True)
class CallSpec:
    call: Call
    doc: str
    args: tuple[Arg, ...] = ()
    reply: tuple[Field, ...] = ()
    statuses: tuple[Status, ...] = (Status.SUCCESS, Status.PARAM_ERROR)
    action: Action | None = None  # what the call does to the PE named by `target`
    target: str | None = None  # the argument naming that PE (None: the call names none)

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)


@dataclass(frozen=True)
class EventSpec:
    name: Kind  # pushed events are named like the policy's timeline entries
    when: str
    data: tuple[Field, ...] = ()


# A run of reports as one line: `report` with `"steps": [{step, detail, guest_time}, ...]`
# (and `pe`) records each step as the report it stands for, in order: the same timeline
# entries as that many single reports. A platform that takes it says so in its
# `query-functions` reply: `report_steps`, the most steps a line
# may carry (at most MAX_REPORT_STEPS); a client that did not read it sends single
# reports. Bad steps refuse the whole line (none recorded), the reason naming the first.
REPORT_STEPS = "report_steps"
MAX_REPORT_STEPS = 64  # a recovery round reports ~2-6 steps of a PE; 64 of 1 KiB fit a line
STEP_FIELDS = ("step", "detail", "guest_time")  # what each of `steps` may carry

_S, _HW, _BUSY, _PARAM, _STATE, _NS = (Status.SUCCESS, Status.HW_ERROR, Status.BUSY,
                                       Status.PARAM_ERROR, Status.UNEXPECTED_STATE,
                                       Status.NOT_SUPPORTED)
_PE = Arg("pe", ArgType.INT, "PE address")

_SPECS = (
    CallSpec(Call.QUERY_FUNCTIONS, "the functions the caller owns and where they are", reply=(
        Field("functions", "list of `{name, kind (\"pf\"/\"vf\"), vf, addr, pe, slot, socket, "
              "handlers}` owned by the caller (`slot`: the guest's PCIe slot number of the "
              "function's root port; `socket`: the vfio-user socket in harness mode; "
              "`handlers`: whether the topology gives this partition's VF drivers error "
              "handlers); a VF also has `config` (`mac`, `vlan`, `mtu`, `anti_spoof`: what "
              "the adapter driver sets and the VF driver restores), the PF `adapter` "
              "(`num_vfs`, `vf_pes`, and `vfs`: every VF's `config`)"),
        Field(REPORT_STEPS, "the most steps one `report` takes in `steps` (absent: a "
              "platform that takes single reports only)")),
        statuses=(_S,)),
    CallSpec(Call.QUERY_PARTITION, "who the caller is to the platform, what it owns, and "
             "the policy it recovers under", reply=(
                 Field("owner", "the name the channel is bound to (a guest's name, `host`)"),
                 Field("functions", "the names of the functions the caller owns"),
                 Field("pes", "list of `{name, pe, kind (\"adapter\"/\"vf\")}`: the PEs the "
                       "caller owns"),
                 Field("pf_owner", "whether the caller owns the PF (is the adapter driver)"),
                 Field("policy", "`retry_hint_ms` (the lockout's retry hint), `max_freezes` "
                       "and `window_s` (more freezes within the window: permanent failure), "
                       "`max_reset_failures`, `errinjct` (whether the caller may inject on "
                       "its PEs)")),
             statuses=(_S,)),
    CallSpec(Call.REGISTER, "a driver bound to a function", args=(
        Arg("addr", ArgType.INT, "config address of a function the caller owns"),
        Arg("driver", ArgType.TEXT, "the driver's name"),
        Arg("handlers", ArgType.BOOL, "has error handlers (default true)", optional=True)),
        action=Action.REGISTER, target="addr"),
    CallSpec(Call.REPORT, "a driver's step, recorded in the timeline (source `driver`); "
             "or a run of steps on one PE (`steps`), recorded as that many reports",
             args=(Arg("step", ArgType.TEXT, "the step (`eeh_abi.vocabulary.DRIVER_KINDS`); "
                       "required unless `steps`", optional=True),
                   Arg("pe", ArgType.INT, "the PE the step is about", optional=True),
                   Arg("detail", ArgType.OBJECT, "recorded with the step", optional=True),
                   Arg("guest_time", ArgType.NUMBER, "the guest's monotonic seconds",
                       optional=True),
                   Arg("steps", ArgType.STEPS, "instead of `step`, `detail` and "
                       "`guest_time`: 1 to `report_steps` (`query-functions`) objects "
                       "`{step, detail, guest_time}`, each as a report of its own on `pe`, "
                       "in order; all recorded or, if any is refused, none (the error "
                       "names the first bad one: `steps[i]: ...`)", optional=True)),
             statuses=(_S, _BUSY, _PARAM), action=Action.REPORT, target="pe"),
    CallSpec(Call.GET_CONFIG_ADDR_INFO2, "a function's PE, or whether its PE is shared",
             args=(Arg("addr", ArgType.INT, "config address"),
                   Arg("function", ArgType.INT,
                       choices={0: "PE address", 1: "sharing mode"})),
             reply=(Field("pe", "function 0: the PE address"),
                    Field("mode", "function 1: 0 none, 1 not shared, 2 shared "
                          "(the adapter PE)")),
             action=Action.READ_STATE, target="addr"),
    CallSpec(Call.READ_SLOT_RESET_STATE2, "the PE's state", args=(_PE,), reply=(
        Field("state", "0, 1, 2, 4, 5 (`eeh_abi.papr.PeState`)"),
        Field("capabilities", "1: PE reset supported"),
        Field("retry_ms", "for state 5: the hint; 0 = permanently unavailable"),
        Field("flags", "the platform's view: `isolated`, `recovering`, `locked-out`, "
              "`permanent`")),
        action=Action.READ_STATE, target="pe"),
    CallSpec(Call.SET_EEH_OPTION, "enable EEH, or thaw MMIO or DMA", args=(
        _PE, Arg("option", ArgType.INT, choices={0: "disable", 1: "enable", 2: "thaw MMIO",
                                                 3: "thaw DMA"})),
        statuses=(_S, _HW, _BUSY, _PARAM, _STATE), action=Action.THAW, target="pe"),
    CallSpec(Call.SET_SLOT_RESET, "assert or release a reset of the PE", args=(
        _PE, Arg("function", ArgType.INT, choices={0: "deactivate", 1: "hot (an FLR for a "
                                                   "VF PE)", 3: "fundamental"})),
        statuses=(_S, _HW, _BUSY, _PARAM, _STATE, _NS), action=Action.RESET, target="pe"),
    CallSpec(Call.CONFIGURE_PE, "reconfigure the PE after its reset (the adapter PE: "
             "SR-IOV re-enabled as the topology says)", args=(_PE,),
             statuses=(_S, _HW, _BUSY, _PARAM, _STATE), action=Action.CONFIGURE,
             target="pe"),
    CallSpec(Call.SLOT_ERROR_DETAIL, "the PE's error log", args=(
        _PE, Arg("function", ArgType.INT, "default 1", optional=True,
                 choices={1: "temporary", 2: "permanent"})),
        reply=(Field("log", "the PE's error log entries, oldest first: the newest that fit "
                     "48 KiB (the model keeps 256)"),
               Field("omitted", "how many older ones were left out, if any")),
        action=Action.ERROR_DETAIL, target="pe"),
    CallSpec(Call.OPEN_SRIOV_ALLOW_UNFREEZE, "lift the lockout of VF PEs once the adapter "
             "has recovered", args=(
                 Arg("pe", ArgType.INT, "the adapter PE"),
                 Arg("vf_pes", ArgType.LIST, "VF PE addresses")),
             reply=(Field("allowed", "the VF PEs whose lockout was lifted"),),
             statuses=(_S, _HW, _PARAM, _STATE), action=Action.ALLOW_UNFREEZE,
             target="pe"),
    CallSpec(Call.ERRINJCT, "arm an error injection (needs `[policy] errinjct = true`)",
             args=(_PE, Arg("function", ArgType.INT, "ioa-bus-error-64", range=(0, 19)),
                   Arg("address", ArgType.INT, "default 0", optional=True),
                   Arg("mask", ArgType.INT, "default 0", optional=True)),
             reply=(Field("id", "of the armed injection"),),
             action=Action.INJECT, target="pe"),
)
CALL_SPECS: Mapping[Call, CallSpec] = MappingProxyType({s.call: s for s in _SPECS})
CALLS: tuple[Call, ...] = tuple(CALL_SPECS)
# by the name a caller sends (a str key: no Call() conversion per request), and each
# call's argument names (check_args runs for every request)
_SPEC_BY_NAME: Mapping[str, CallSpec] = MappingProxyType({s.call.value: s for s in _SPECS})
_ARG_NAMES: Mapping[Call, frozenset[str]] = MappingProxyType(
    {s.call: frozenset(a.name for a in s.args) for s in _SPECS})

# A batched event: the platform pushes an owner's run of events of one name and one data
# (within one turn of its loop, nothing else pushed to that owner between them) as one
# line whose data also lists the PEs it is for, the first of them as `pe`:
#     {"event": "lockout-lifted", "pe": 98304, "data": {"pes": [98304, 98560, ...]}}
# It means that event for each PE of the list (eeh_abi.hcall.unbatch); a line for one PE
# has no `pes`. The lift of every VF PE's lockout and the side-effect freezes of a PE tree
# are batched this way (one line per owner, not one per VF PE).
BATCHED_PES = "pes"
MAX_BATCH = 1024  # PEs in one batched line (a line of at most ~12 KiB of them)

# A quiet request: `"quiet": true` next to `args` asks the platform to answer only if the
# call is refused or fails (status not 0); an ok quiet call gets no reply line. The
# platform answers a channel's requests in order, so any later reply means each earlier
# quiet request was ok (eeh_abi.hcall.Channel.post). Without the member (or false) every
# request is answered, as before.
QUIET = "quiet"

_EVENT_SPECS = (
    EventSpec(Kind.PE_FROZEN, "a PE the caller owns froze (also as a side-effect of the "
              "adapter PE: batched, one line per owner, `pes`)",
              (Field("origin", "PE address that froze first"),
               Field("side_effect", "bool"), Field("reason", ""),
               Field("freeze_count", ""), Field("locked_out", "bool"),
               Field("pes", "when batched: every PE this freeze is for"))),
    EventSpec(Kind.LOCKOUT_LIFTED, "the adapter driver allowed this VF PE to unfreeze "
              "(batched: one line per owner for all its VF PEs, `pes`)",
              (Field("pes", "when batched: every VF PE lifted (the event is for each)"),)),
    EventSpec(Kind.PERMANENT_FAILURE, "the PE froze more than `max_freezes` times within "
              "`window_s`, or its reset failed `max_reset_failures` times in a row, or the "
              "device model died or stalled, or the adapter driver was lost under "
              "`on_adapter_driver_lost = \"fail\"`; state 5 with hint 0 from now on",
              (Field("freeze_count", ""),
               Field("cause", "`device-model-died` or `device-model-stalled` when the "
                     "device model died or stalled, `adapter-driver-lost` when the "
                     "adapter driver was"))),
    EventSpec(Kind.PE_RESET_DONE, "a reset of the PE (or of the adapter PE above it) "
              "completed", (Field("reset", "`hot`/`fundamental`"),
                            Field("failed", "true when it completed without bringing the PE "
                                  "back (it is still frozen)"))),
    EventSpec(Kind.FUNCTION_REMOVED, "the platform removed a function whose driver "
              "registered without error handlers, when its PE froze",
              (Field("name", "the function"), Field("reason", ""))),
    EventSpec(Kind.FUNCTION_ADDED, "the platform added that function back after resetting "
              "its PE once the lockout lifted", (Field("name", "the function"),)),
)
EVENT_SPECS: Mapping[Kind, EventSpec] = MappingProxyType({e.name: e for e in _EVENT_SPECS})
EVENTS: tuple[Kind, ...] = tuple(EVENT_SPECS)


class ArgError(ValueError):
    """A request's arguments that do not fit its call (the reason is the message)."""


def spec_of(call: str) -> CallSpec:
    """The spec of a call named by a caller; ArgError for an unknown one."""
    spec = _SPEC_BY_NAME.get(call) if isinstance(call, str) else None
    if spec is None:
        raise ArgError(f"unknown call {_short(str(call))!r}")
    return spec


def _short(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_args(spec: CallSpec, args: Mapping[str, Any]) -> None:
    """ArgError unless `args` fit the call: no unknown or missing ones, each of its type
    (a bool is not an integer), integers within INT_MIN..INT_MAX and their choices/range,
    lists of integers."""
    names = _ARG_NAMES[spec.call]
    if not names.issuperset(args):
        unknown = set(args) - names
        raise ArgError(f"unknown argument(s) {sorted(unknown)[:16]} for {spec.call}")
    for arg in spec.args:
        if arg.name not in args:
            if arg.optional:
                continue
            raise ArgError(f"{spec.call} needs argument {arg.name!r}")
        _check_value(arg, args[arg.name])


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(arg: Arg, value: object) -> None:
    kind = type(value)  # the common cases first: what the checks below would pass
    if kind is int:
        if arg.type is ArgType.INT and arg.choices is None and arg.range is None \
                and INT_MIN <= value <= INT_MAX:  # type: ignore[operator]
            return  # a PE or config address
    elif (kind is str and arg.type is ArgType.TEXT) \
            or (kind is float and arg.type is ArgType.NUMBER):
        return  # a step's name, a guest's time
    if isinstance(value, bool) and arg.type is not ArgType.BOOL:
        raise ArgError(f"argument {arg.name!r} must be {arg.type}, not bool")
    if not isinstance(value, _PY_TYPES[arg.type]):
        raise ArgError(f"argument {arg.name!r} must be {arg.type}")
    if isinstance(value, list) and arg.type is ArgType.LIST \
            and not all(_is_int(v) for v in value):
        raise ArgError(f"argument {arg.name!r} must be a list of integers")
    if not isinstance(value, int) or isinstance(value, bool):
        return
    if not INT_MIN <= value <= INT_MAX:
        raise ArgError(f"argument {arg.name!r} out of range")
    if arg.choices is not None and value not in arg.choices:
        raise ArgError(f"{arg.name} must be " + " or ".join(
            f"{v} ({what})" for v, what in arg.choices.items()))
    if arg.range is not None and not arg.range[0] <= value <= arg.range[1]:
        raise ArgError(f"{arg.name} must be {arg.range[0]}..{arg.range[1]}")


def report_steps(args: Mapping[str, Any], limit: int) -> list[Mapping[str, Any]]:
    """The reports a checked `report` call's `args` stand for, in order, each as the
    `args` of a single report (`step`, its `pe` if the call names one, `detail`,
    `guest_time`): `args` itself, or one per element of `steps` (at most `limit`; 0: the
    platform takes no `steps`). ArgError for the first thing wrong (an element's reason
    starts with `steps[i]: `); nothing is returned unless every element is valid."""
    steps = args.get("steps")
    if steps is None:
        if "step" not in args:
            raise ArgError("report needs argument 'step' (or 'steps')")
        return [args]
    if limit <= 0:
        raise ArgError("report takes no 'steps' here: send one report a step")
    mixed = [n for n in STEP_FIELDS if n in args]
    if mixed:
        raise ArgError(f"report with 'steps' takes {mixed} in each step, not beside them")
    if not 0 < len(steps) <= limit:
        raise ArgError(f"steps must be a list of 1..{limit} steps, not {len(steps)}")
    spec = CALL_SPECS[Call.REPORT]
    pe = {"pe": args["pe"]} if "pe" in args else {}
    out: list[Mapping[str, Any]] = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict):
            raise ArgError(f"steps[{i}]: a step is an object {{step, detail, guest_time}}")
        unknown = [k for k in step if k not in STEP_FIELDS]
        if unknown:
            raise ArgError(f"steps[{i}]: unknown argument(s) {sorted(map(str, unknown))[:16]}"
                           f" (a step has {', '.join(STEP_FIELDS)})")
        if "step" not in step:
            raise ArgError(f"steps[{i}]: report needs argument 'step'")
        for name, value in step.items():
            arg = spec.arg(name)
            assert arg is not None
            try:
                _check_value(arg, value)
            except ArgError as e:
                raise ArgError(f"steps[{i}]: {e}") from None
        out.append({**step, **pe})
    return out
