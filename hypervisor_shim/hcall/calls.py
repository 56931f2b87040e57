"""The platform calls: arguments checked, caller authorized, policy asked, reply built.

`PlatformCalls.handle(owner, request)` is synchronous and runs on the device model's
loop thread (the policy and the model are single-threaded). It never raises for a
caller's input: every mistake is a status (-3 with the reason in `error`).
docs/platform-calls.md is the reference.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from device_model import ErrorFunction, PeKind
from device_model.errors import DeviceModelError
from eeh_abi.hcall import Reply, Request
from eeh_abi.papr import SharingMode, Status
from hypervisor_shim.pe import Action, CallResult, PePolicy, PeRecord, authorize
from hypervisor_shim.timeline import Timeline

log = logging.getLogger(__name__)

_INT = (int,)
_SCHEMAS: dict[str, dict[str, tuple[type, ...]]] = {
    "query-functions": {},
    "register": {"addr": _INT, "driver": (str,), "handlers": (bool,)},
    "report": {"step": (str,), "pe": _INT, "detail": (dict,), "guest_time": (int, float)},
    "get-config-addr-info2": {"addr": _INT, "function": _INT},
    "read-slot-reset-state2": {"pe": _INT},
    "set-eeh-option": {"pe": _INT, "option": _INT},
    "set-slot-reset": {"pe": _INT, "function": _INT},
    "configure-pe": {"pe": _INT},
    "slot-error-detail": {"pe": _INT, "function": _INT},
    "open-sriov-allow-unfreeze": {"pe": _INT, "vf_pes": (list,)},
    "errinjct": {"pe": _INT, "function": _INT, "address": _INT, "mask": _INT},
}
_OPTIONAL = {"report": {"pe", "detail", "guest_time"}, "register": {"handlers"},
             "slot-error-detail": {"function"}, "errinjct": {"address", "mask"}}


MAX_ERROR = 300  # characters of a reason in a reply (it may quote the caller's input)
MAX_RECORDED_ARGS = 2048  # bytes of a call's arguments kept in the timeline
MAX_LOG_BYTES = 48 * 1024  # slot-error-detail: the newest entries that fit a reply line


class BadArgs(Exception):
    """Internal: a request whose arguments do not fit its call."""


def _short(text: str, limit: int = MAX_ERROR) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _recorded(args: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as the timeline keeps them (bounded: a caller's flood of big
    arguments must not grow the run's record without limit)."""
    try:
        size = len(json.dumps(args, default=str))
    except (TypeError, ValueError, RecursionError):
        size = MAX_RECORDED_ARGS + 1
    if size <= MAX_RECORDED_ARGS:
        return dict(args)
    return {"truncated": True, "bytes": size, "keys": _short(str(sorted(args)[:16]), 200)}


def check_args(call: str, args: Mapping[str, Any]) -> None:
    schema = _SCHEMAS[call]
    unknown = set(args) - set(schema)
    if unknown:
        raise BadArgs(f"unknown argument(s) {sorted(unknown)} for {call}")
    for name, types in schema.items():
        if name not in args:
            if name in _OPTIONAL.get(call, ()):
                continue
            raise BadArgs(f"{call} needs argument {name!r}")
        value = args[name]
        if isinstance(value, bool) and bool not in types:
            raise BadArgs(f"argument {name!r} must be {types[0].__name__}, not bool")
        if not isinstance(value, types):
            raise BadArgs(f"argument {name!r} must be {types[0].__name__}")
        if isinstance(value, int) and not -(1 << 63) <= value < 1 << 64:
            raise BadArgs(f"argument {name!r} out of range")


@dataclass
class Registration:
    owner: str
    addr: int
    driver: str
    handlers: bool


@dataclass
class PlatformCalls:
    policy: PePolicy
    timeline: Timeline
    directory: Callable[[str], Sequence[Mapping[str, Any]]]  # owner -> its functions
    registrations: dict[int, Registration] = field(default_factory=dict)
    on_report: Callable[[str, Mapping[str, Any]], None] | None = None

    @property
    def pf_owner(self) -> str | None:
        return self.policy.adapter_record.owner

    def handle(self, owner: str, req: Request) -> Reply:
        try:
            if req.call not in _SCHEMAS:
                raise BadArgs(f"unknown call {_short(req.call, 64)!r}")
            check_args(req.call, req.args)
            method = getattr(self, "_" + req.call.replace("-", "_"))
            result: CallResult = method(owner, req.args)
        except BadArgs as e:
            result = CallResult(Status.PARAM_ERROR, why=str(e))
        except DeviceModelError as e:
            result = CallResult(Status.PARAM_ERROR, why=str(e))
        except Exception as e:  # a bug here must not take the channel down
            log.exception("platform call %s failed", req.call)
            result = CallResult(Status.HW_ERROR, why=f"internal error: {type(e).__name__}")
        ret = dict(result.ret)
        if result.status == Status.BUSY:
            ret["retry_ms"] = result.retry_ms
        why = _short(result.why) if result.why else None
        if req.call != "report":
            self.timeline.record("call", _short(req.call, 64), owner=owner,
                                 pe=self._pe_name(req.args),
                                 data={"args": _recorded(req.args), "status": int(result.status),
                                       **({"why": why} if why else {})})
        return Reply(req.id, int(result.status), ret, why)

    def _pe_name(self, args: Mapping[str, Any]) -> str | None:
        addr = args.get("pe", args.get("addr"))
        if isinstance(addr, int) and not isinstance(addr, bool):
            rec = self.policy.record(addr)
            return rec.name if rec else None
        return None

    # ------------------------------------------------------------------ helpers
    def _pe(self, owner: str, addr: int, action: Action) -> PeRecord:
        rec = self.policy.record(addr)
        if rec is None or not authorize(owner, rec, action, self.pf_owner):
            raise BadArgs(f"no PE {addr:#x} in this partition")
        return rec

    # ------------------------------------------------------------------ calls
    def _query_functions(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        return CallResult(Status.SUCCESS, ret={"functions": [dict(f) for f in
                                                             self.directory(owner)]})

    def _register(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        rec = self._pe(owner, args["addr"], Action.REGISTER)
        reg = Registration(owner, rec.address, args["driver"], args.get("handlers", True))
        self.registrations[rec.address] = reg
        return CallResult(Status.SUCCESS)

    def _report(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        pe_name = None
        if "pe" in args:
            rec = self._pe(owner, args["pe"], Action.REPORT)
            pe_name = rec.name
            if args["step"] in ("recovered", "resume"):
                self.policy.recovered(rec)
        detail = args.get("detail", {})
        try:
            small = len(json.dumps(detail, default=str)) < 8192
        except (TypeError, ValueError, RecursionError):
            small = False
        self.timeline.record("driver", str(args["step"])[:64], pe=pe_name, owner=owner,
                             data=detail if small else {"truncated": True},
                             guest_time=args.get("guest_time"))
        if self.on_report is not None:
            self.on_report(owner, args)
        return CallResult(Status.SUCCESS)

    def _get_config_addr_info2(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        rec = self._pe(owner, args["addr"], Action.READ_STATE)
        if args["function"] == 0:
            return CallResult(Status.SUCCESS, ret={"pe": rec.address})
        if args["function"] == 1:
            shared = rec.pe.kind is PeKind.ADAPTER and bool(rec.pe.children)
            mode = SharingMode.SHARED if shared else SharingMode.NOT_SHARED
            return CallResult(Status.SUCCESS, ret={"mode": int(mode)})
        raise BadArgs("function must be 0 (PE address) or 1 (sharing mode)")

    def _read_slot_reset_state2(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        rec = self._pe(owner, args["pe"], Action.READ_STATE)
        st = self.policy.state(rec)
        return CallResult(Status.SUCCESS, ret={"state": int(st.state), "capabilities": 1,
                                               "retry_ms": st.retry_ms,
                                               "flags": st.flags.names()})

    def _set_eeh_option(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        return self.policy.set_eeh_option(self._pe(owner, args["pe"], Action.THAW),
                                          args["option"])

    def _set_slot_reset(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        return self.policy.set_slot_reset(self._pe(owner, args["pe"], Action.RESET),
                                          args["function"])

    def _configure_pe(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        return self.policy.configure_pe(self._pe(owner, args["pe"], Action.CONFIGURE))

    def _slot_error_detail(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        rec = self._pe(owner, args["pe"], Action.ERROR_DETAIL)
        if args.get("function", 1) not in (1, 2):
            raise BadArgs("function must be 1 (temporary) or 2 (permanent)")
        entries = [e.to_json() for e in rec.pe.error_log()]
        kept: list[dict[str, Any]] = []
        size = 0
        for e in reversed(entries):  # the newest entries that fit one reply line
            size += len(json.dumps(e, default=str)) + 1
            if size > MAX_LOG_BYTES:
                break
            kept.append(e)
        kept.reverse()
        ret: dict[str, Any] = {"log": kept}
        if len(kept) < len(entries):
            ret["omitted"] = len(entries) - len(kept)  # the oldest, left out
        return CallResult(Status.SUCCESS, ret=ret)

    def _open_sriov_allow_unfreeze(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        rec = self._pe(owner, args["pe"], Action.ALLOW_UNFREEZE)
        vf_pes = args["vf_pes"]
        if len(vf_pes) > len(self.policy.records) or not all(
                isinstance(a, int) and not isinstance(a, bool) for a in vf_pes):
            raise BadArgs("vf_pes must be a list of VF PE addresses")
        return self.policy.allow_unfreeze(rec, vf_pes)

    def _errinjct(self, owner: str, args: Mapping[str, Any]) -> CallResult:
        if not self.policy.config.errinjct:
            raise BadArgs("error injection by guests is not enabled in this topology")
        rec = self._pe(owner, args["pe"], Action.INJECT)
        try:
            fn = ErrorFunction(args["function"])
        except ValueError:
            raise BadArgs("function must be 0..19") from None
        inj = self.policy.adapter.inject(rec.pe, int(fn), args.get("address", 0) & (2**64 - 1),
                                         args.get("mask", 0) & (2**64 - 1))
        return CallResult(Status.SUCCESS, ret={"id": inj.id})
