"""The platform calls: arguments checked, caller authorized, policy asked, reply built.

`PlatformCalls.handle(owner, request)` is synchronous and runs on the device model's
loop thread (the policy and the model are single-threaded). It never raises for a
caller's input: every mistake is a status (-3 with the reason in `error`).

Everything but the handlers comes from the schema (`eeh_abi.schema`): the call's name,
its arguments' check, and its authorization (the `Action` it performs on the PE its
`target` argument names, resolved and authorized here before the handler runs; with
several adapters, each PE is acted on by its own adapter's policy). Each
call has one handler in `HANDLERS` (a test checks the two agree). docs/platform-calls.md
is the reference (generated from the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from device_model import ErrorFunction, PeKind
from device_model.errors import DeviceModelError
from eeh_abi.hcall import Reply, Request
from eeh_abi.papr import SharingMode, Status
from eeh_abi.schema import (
    MAX_REPORT_STEPS,
    REPORT_STEPS,
    ArgError,
    Call,
    CallSpec,
    check_args,
    report_steps,
    spec_of,
)
from eeh_abi.vocabulary import RECOVERED_STEPS, Source
from hypervisor_shim.hcall.budget import REPORT_BUDGET, Bucket, ReportBudget
from hypervisor_shim.pe import CallResult, PePolicy, PeRecord, authorize
from hypervisor_shim.pe.policy import SUCCESS
from hypervisor_shim.timeline import Timeline, json_text

log = logging.getLogger(__name__)

Args = Mapping[str, Any]

MAX_ERROR = 300  # characters of a reason in a reply (it may quote the caller's input)
MAX_RECORDED_ARGS = 2048  # bytes of a call's arguments kept in the timeline
MAX_LOG_BYTES = 48 * 1024  # slot-error-detail: the newest entries that fit a reply line


class BadArgs(ArgError):
    """Internal: a request whose arguments do not fit its call (beyond the schema)."""


def _short(text: str, limit: int = MAX_ERROR) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _recorded(args: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as the timeline keeps them (bounded: a caller's flood of big
    arguments must not grow the run's record without limit)."""
    if len(args) <= 8:
        for v in args.values():
            if v is not None and type(v) is not int and type(v) is not bool:
                break
        else:
            return dict(args)  # (the common case) well under the bound: no need to measure
    try:
        size = len(json.dumps(args, default=str))
    except (TypeError, ValueError, RecursionError):
        size = MAX_RECORDED_ARGS + 1
    if size <= MAX_RECORDED_ARGS:
        return dict(args)
    return {"truncated": True, "bytes": size, "keys": _short(str(sorted(args)[:16]), 200)}


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
    budget: ReportBudget = REPORT_BUDGET
    clock: Callable[[], float] = time.monotonic
    # (owner, PE name or None) -> report budget: per PE the owner reports on, and one for
    # its reports that name no PE
    buckets: dict[tuple[str, str | None], Bucket] = field(default_factory=dict)
    _refusing: dict[tuple[str, str | None], None] = field(default_factory=dict)  # open
    # every adapter's policy (several adapters); empty: `policy` alone
    trees: Sequence[PePolicy] = ()
    # the most steps one `report` takes (`steps`), announced as `report_steps`; 0: single
    # reports only, as a platform before them (nothing announced)
    max_report_steps: int = MAX_REPORT_STEPS

    def __post_init__(self) -> None:
        self.policies: tuple[PePolicy, ...] = tuple(self.trees) or (self.policy,)
        self._policy_at: dict[int, PePolicy] = {
            a: p for p in self.policies for a in p.records}
        # every adapter's records (made once by each policy, never replaced)
        self._records: dict[int, PeRecord] = {
            a: r for p in self.policies for a, r in p.records.items()}

    @property
    def pf_owner(self) -> str | None:
        """The owner of the (first) adapter's PF."""
        return self.policy.adapter_record.owner

    def record(self, addr: int) -> PeRecord | None:
        """The PE at `addr`, of whichever adapter."""
        return self._records.get(addr)

    def policy_of(self, rec: PeRecord) -> PePolicy:
        """The policy of `rec`'s adapter."""
        return self._policy_at[rec.address]

    def handle(self, owner: str, req: Request) -> Reply:
        rec: PeRecord | None = None
        named = False  # rec is the PE its entry names (_pe_name: `pe`, else `addr`)
        try:
            spec = spec_of(req.call)
            check_args(spec, req.args)
            rec = self._target(owner, spec, req.args)
            named = spec.target == "pe" or (spec.target == "addr" and "pe" not in req.args)
            result = HANDLERS[spec.call](self, owner, req.args, rec)
        except ArgError as e:
            result = CallResult(Status.PARAM_ERROR, why=str(e))
        except DeviceModelError as e:
            result = CallResult(Status.PARAM_ERROR, why=str(e))
        except Exception as e:  # a bug here must not take the channel down
            log.exception("platform call %s failed", _short(req.call, 64))
            result = CallResult(Status.HW_ERROR, why=f"internal error: {type(e).__name__}")
        if req.call == Call.REPORT:
            self.close_windows()
        ret = {**result.ret, "retry_ms": result.retry_ms} if result.status == Status.BUSY \
            else result.ret
        why = _short(result.why) if result.why else None
        if req.call != Call.REPORT:
            data = {"args": _recorded(req.args), "status": int(result.status)}
            if why:
                data["why"] = why
            self.timeline.record(Source.CALL, _short(req.call, 64), owner=owner,
                                 pe=rec.name if named and rec is not None
                                 else self._pe_name(req.args), data=data)
        return Reply(req.id, int(result.status), ret, why)

    def _target(self, owner: str, spec: CallSpec, args: Mapping[str, Any]) -> PeRecord | None:
        """The PE the call acts on, the caller authorized for the call's action on it;
        None for a call that names none (or leaves its optional target out)."""
        if spec.target is None or spec.target not in args:
            return None
        assert spec.action is not None, f"{spec.call} names a target but no action"
        addr = args[spec.target]
        rec = self.record(addr)
        if rec is None or not authorize(owner, rec, spec.action,
                                        self.policy_of(rec).adapter_record.owner):
            raise BadArgs(f"no PE {addr:#x} in this partition")
        return rec

    def _pe_name(self, args: Mapping[str, Any]) -> str | None:
        addr = args.get("pe", args.get("addr"))
        if isinstance(addr, int) and not isinstance(addr, bool):
            rec = self.record(addr)
            return rec.name if rec else None
        return None

    # ------------------------------------------------------------------ handlers
    # Each gets the caller, the checked arguments and the PE its target argument names
    # (authorized for the call's action; None when the call names none).
    def _query_functions(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        return CallResult(Status.SUCCESS, ret={"functions": [dict(f) for f in
                                                             self.directory(owner)],
                                               **self._announced()})

    def _announced(self) -> dict[str, int]:
        """What a client learns at start (`query-functions`) about the calls it may make:
        `report_steps` (the most steps one report may carry, within the report budget's
        burst)."""
        n = min(self.max_report_steps, self.budget.burst)
        return {REPORT_STEPS: n} if n > 0 else {}

    def _query_partition(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        pes = [{"name": r.name, "pe": r.address, "kind": r.pe.kind.value}
               for p in self.policies for r in p.records.values() if r.owner == owner]
        # the policy of the first adapter the owner holds a function of
        cfg = next((p.config for p in self.policies
                    if any(r.owner == owner for r in p.records.values())), self.policy.config)
        return CallResult(Status.SUCCESS, ret={
            "owner": owner, "functions": [str(f["name"]) for f in self.directory(owner)],
            "pes": pes,
            "pf_owner": any(p.adapter_record.owner == owner for p in self.policies),
            "policy": {"retry_hint_ms": cfg.retry_hint_ms, "max_freezes": cfg.max_freezes,
                       "window_s": cfg.window_s, "max_reset_failures": cfg.max_reset_failures,
                       "errinjct": cfg.errinjct}})

    def _register(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        rec = _named(rec)
        reg = Registration(owner, rec.address, args["driver"], args.get("handlers", True))
        self.registrations[rec.address] = reg
        return SUCCESS

    # ------------------------------------------------------------------ budgets
    def _over_budget(self, owner: str, pe: str | None, n: int = 1) -> CallResult | None:
        """None if `owner` may make `n` more reports on `pe` now (all taken), else the
        refusal of all `n` (counted as `n`)."""
        now = self.clock()
        b = self.buckets.get((owner, pe))
        if b is None:
            b = self.buckets[(owner, pe)] = Bucket(float(self.budget.burst), now)
        if b.take(self.budget, now, n):
            return None
        if b.refused == 0:
            b.window_start = now
            with contextlib.suppress(RuntimeError):  # no loop: the next report closes it
                asyncio.get_running_loop().call_later(self.budget.window_s + 0.01,
                                                      self.close_windows)
        b.refused += n
        b.refused_total += n
        self._refusing[(owner, pe)] = None
        return CallResult(Status.BUSY, retry_ms=self.budget.retry_ms,
                          why=f"over budget: at most {self.budget.burst} reports at once, "
                              f"{self.budget.rate_per_s:g} a second")

    def close_windows(self, force: bool = False) -> None:
        """Record one timeline entry for each owner's window of refused reports that is
        over (every window with `force`)."""
        if not self._refusing:  # every report: nothing to look at, most of the time
            return
        now = self.clock()
        for owner, pe in list(self._refusing):
            b = self.buckets[(owner, pe)]
            if b.refused and (force or now - b.window_start >= self.budget.window_s):
                self.timeline.record(Source.CALL, Call.REPORT.value, owner=owner, pe=pe, data={
                    "status": int(Status.BUSY), "over_budget": True, "refused": b.refused,
                    "window_s": round(now - b.window_start, 3),
                    "refused_total": b.refused_total})
                log.warning("%s: %d reports over budget refused in %.1f s", owner,
                            b.refused, now - b.window_start)
                b.refused = 0
                del self._refusing[(owner, pe)]

    def _report(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        """One report, or a run of them (`steps`: docs/platform-calls.md, "Batched
        reports"): their arguments are checked, the report budget takes one token per
        report (all or none), their details are measured against theirs (a detail over
        it costs its token, as a single report's does), all before any is recorded; each
        is then recorded exactly as a single report of that step would be, in order."""
        reports = report_steps(args, self.max_report_steps)
        refused = self._over_budget(owner, rec.name if rec else None, len(reports))
        if refused is not None:
            return refused
        batched = "steps" in args
        for i, one in enumerate(reports):
            self._check_detail(one.get("detail", {}), f"steps[{i}]: " if batched else "")
        for one in reports:
            if rec is not None and one["step"] in RECOVERED_STEPS:
                self.policy_of(rec).recovered(rec)
            self.timeline.record(Source.DRIVER, str(one["step"])[:64],
                                 pe=rec.name if rec else None, owner=owner,
                                 data=one.get("detail", {}),
                                 guest_time=one.get("guest_time"))
            if self.on_report is not None:
                self.on_report(owner, one)
        return SUCCESS

    def _check_detail(self, detail: Any, where: str) -> None:
        """BadArgs if a report's detail is over its budget (as JSON)."""
        try:
            size = len(json_text(detail)) if detail else 2
        except (TypeError, ValueError, RecursionError):
            size = self.budget.max_detail_bytes + 1
        if size > self.budget.max_detail_bytes:
            raise BadArgs(f"{where}detail over budget: {size} bytes, at most "
                          f"{self.budget.max_detail_bytes}")

    def _get_config_addr_info2(self, owner: str, args: Args, rec: PeRecord | None
                               ) -> CallResult:
        rec = _named(rec)
        if args["function"] == 0:
            return CallResult(Status.SUCCESS, ret={"pe": rec.address})
        shared = rec.pe.kind is PeKind.ADAPTER and bool(rec.pe.children)
        mode = SharingMode.SHARED if shared else SharingMode.NOT_SHARED
        return CallResult(Status.SUCCESS, ret={"mode": int(mode)})

    def _read_slot_reset_state2(self, owner: str, args: Args, rec: PeRecord | None
                                ) -> CallResult:
        rec = _named(rec)
        st = self.policy_of(rec).state(rec)
        return CallResult(Status.SUCCESS, ret={"state": int(st.state), "capabilities": 1,
                                               "retry_ms": st.retry_ms,
                                               "flags": st.flags.names()})

    def _set_eeh_option(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        return self.policy_of(_named(rec)).set_eeh_option(_named(rec), args["option"])

    def _set_slot_reset(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        return self.policy_of(_named(rec)).set_slot_reset(_named(rec), args["function"])

    def _configure_pe(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        return self.policy_of(_named(rec)).configure_pe(_named(rec))

    def _slot_error_detail(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        entries = [e.to_json() for e in _named(rec).pe.error_log()]
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

    def _open_sriov_allow_unfreeze(self, owner: str, args: Args, rec: PeRecord | None
                                   ) -> CallResult:
        vf_pes = args["vf_pes"]
        if len(vf_pes) > len(self._policy_at):
            raise BadArgs("vf_pes must be a list of VF PE addresses")
        # the adapter's own policy: a VF PE of another adapter is not among its records
        return self.policy_of(_named(rec)).allow_unfreeze(_named(rec), vf_pes)

    def _errinjct(self, owner: str, args: Args, rec: PeRecord | None) -> CallResult:
        policy = self.policy_of(_named(rec))
        if not policy.config.errinjct:
            raise BadArgs("error injection by guests is not enabled in this topology")
        fn = ErrorFunction(args["function"])
        inj = policy.adapter.inject(_named(rec).pe, int(fn),
                                         args.get("address", 0) & (2**64 - 1),
                                         args.get("mask", 0) & (2**64 - 1))
        return CallResult(Status.SUCCESS, ret={"id": inj.id})


def _named(rec: PeRecord | None) -> PeRecord:
    """The PE of a call whose target argument is required (so always resolved)."""
    assert rec is not None
    return rec


Handler = Callable[[PlatformCalls, str, Args, PeRecord | None], CallResult]

# One handler per call of the schema, and no other (tests/unit/abi/test_abi_schema.py).
HANDLERS: Mapping[Call, Handler] = {
    Call.QUERY_FUNCTIONS: PlatformCalls._query_functions,
    Call.QUERY_PARTITION: PlatformCalls._query_partition,
    Call.REGISTER: PlatformCalls._register,
    Call.REPORT: PlatformCalls._report,
    Call.GET_CONFIG_ADDR_INFO2: PlatformCalls._get_config_addr_info2,
    Call.READ_SLOT_RESET_STATE2: PlatformCalls._read_slot_reset_state2,
    Call.SET_EEH_OPTION: PlatformCalls._set_eeh_option,
    Call.SET_SLOT_RESET: PlatformCalls._set_slot_reset,
    Call.CONFIGURE_PE: PlatformCalls._configure_pe,
    Call.SLOT_ERROR_DETAIL: PlatformCalls._slot_error_detail,
    Call.OPEN_SRIOV_ALLOW_UNFREEZE: PlatformCalls._open_sriov_allow_unfreeze,
    Call.ERRINJCT: PlatformCalls._errinjct,
}
