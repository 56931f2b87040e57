"""The PE policy: the platform's software state of the PE tree, on top of the model.

The device model (hardware) enforces the gates: a frozen PE's MMIO reads all-ones, its
DMA and interrupts stop. This module decides *when* its primitives are called and what
each caller is told:

- **isolated / recovering**: set when a PE freezes, cleared when it is back in state 0
  (isolated) and when its driver reports it recovered (recovering).
- **freeze counting**: Linux's eeh_max_freezes rule: a window starts at a PE's first
  freeze; the (max_freezes + 1)-th freeze within `window_s` makes the PE permanently
  failed (state 5 with retry hint 0, every call -1); a freeze after the window restarts
  the count. Freezes of VF PEs caused by the adapter PE count against the adapter PE.
- **lockout**: from the moment the adapter PE freezes until the adapter driver calls
  open-sriov-allow-unfreeze for a VF PE, that VF PE reads state 5 (with the retry hint)
  and its owner's thaw, reset and configure calls are answered -2 (busy, retry).
  Lifting it pushes `lockout-lifted` at once: waiting drivers are woken by the event.
- **failed resets**: a reset that completes without bringing the PE back (it stays frozen:
  `pe-reset-done` is pushed with `failed: true`) counts; `max_reset_failures` (3, as Linux
  tries a reset 3 times) in a row make the PE and every PE below it permanently failed.
  A reset that succeeds restarts the count.

Every decision is a `Notice` handed to `notify` (the hcall server routes it to the owner's
channel, the timeline records it, the console turns it into a QMP event). The policy is
single-threaded: it runs on the device model's loop thread, like the model.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from device_model import Adapter, Event, EventKind, Pe, PeKind
from eeh_abi.limits import limit, violation
from eeh_abi.papr import (
    FREEZE_WINDOW_S,
    MAX_FREEZES,
    MAX_RESET_TRIES,
    RETRY_HINT_MS,
    EehOption,
    PeState,
    SlotReset,
    Status,
)
from eeh_abi.vocabulary import Kind
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe.names import pe_name

HOST = "host"  # the owner name of drivers running on the host (harness mode)


# The adapter driver's deadline (`PolicyConfig.adapter_driver_deadline_ms`): while the
# adapter PE is frozen or recovering, its driver takes at most this long between two steps
# (a report or a call on the adapter PE). The slowest step is a reset: with "spec" timing
# an adapter reset is held 250 ms and settles 1.8 s (device_model.ResetTiming.SPEC), and
# a driver tries at most max_reset_failures (3) of them in a row, 6.2 s in all; 10 s is
# that with 3.8 s to spare for a slow (TCG) guest, so a driver that is working is never
# taken for a stuck one, even if it went silent through all three resets.
ADAPTER_DRIVER_DEADLINE_MS = 10_000


class OnDriverLost(enum.StrEnum):
    """What the platform does when the adapter driver is lost (hypervisor_shim.pe.
    driver_watch): restart its guest, recover the adapter itself, or fail the adapter."""

    RESTART_GUEST = "restart-guest"
    PLATFORM_RECOVER = "platform-recover"
    FAIL = "fail"


class PolicyError(ShimError):
    """A policy setting that cannot be applied."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"policy {what}: {reason}")
        self.what = what
        self.reason = reason


@dataclass(frozen=True)
class PolicyConfig:
    """The policy's settings. Each limit is declared here, once (`eeh_abi.limits`): this
    check and the topology file's parser (`eeh_sriov.topology`) both read it."""

    max_freezes: int = field(default=MAX_FREEZES, metadata=limit(0, 1_000_000))
    window_s: float = field(default=FREEZE_WINDOW_S,
                            metadata=limit(0, 10 * 365 * 86400, integer=False, lo_open=True))
    retry_hint_ms: int = field(default=RETRY_HINT_MS, metadata=limit(1, 3_600_000))
    lockout: bool = True  # False only to show that the ordering checks catch its absence
    # failed resets in a row: permanent failure
    max_reset_failures: int = field(default=MAX_RESET_TRIES, metadata=limit(1, 100))
    errinjct: bool = False  # guests may inject errors on their own PEs
    # the adapter driver's deadline (see ADAPTER_DRIVER_DEADLINE_MS) and what to do when
    # the driver is lost (OnDriverLost; restart-guest falls back to platform-recover
    # where there is no guest to restart: harness mode)
    adapter_driver_deadline_ms: int = field(default=ADAPTER_DRIVER_DEADLINE_MS,
                                            metadata=limit(100, 3_600_000))
    on_adapter_driver_lost: OnDriverLost = OnDriverLost.RESTART_GUEST

    def __post_init__(self) -> None:
        bad = violation(self)
        if bad is not None:
            raise PolicyError(*bad)
        try:
            object.__setattr__(self, "on_adapter_driver_lost",
                               OnDriverLost(self.on_adapter_driver_lost))
        except ValueError:
            raise PolicyError("on_adapter_driver_lost", "must be one of " + ", ".join(
                o.value for o in OnDriverLost) + f", not {self.on_adapter_driver_lost!r}"
            ) from None


def _code(pe: Pe) -> PeState:
    return pe.status().code  # the model's PeStateCode is eeh_abi.papr.PeState


class PeFlag(enum.Flag):
    NONE = 0
    ISOLATED = enum.auto()
    RECOVERING = enum.auto()
    LOCKED_OUT = enum.auto()
    PERMANENT = enum.auto()

    def names(self) -> list[str]:
        names = _FLAG_NAMES.get(self._value_)
        if names is None:  # once per combination of flags
            names = _FLAG_NAMES[self._value_] = tuple(
                f.name.lower().replace("_", "-") for f in PeFlag
                if f and f in self and f.name is not None)
        return list(names)


_FLAG_NAMES: dict[int, tuple[str, ...]] = {}  # PeFlag value -> PeFlag.names()
# the flags' bits, for the checks of every call on a PE (an int test, not Flag.__contains__)
_PERMANENT = PeFlag.PERMANENT.value
_LOCKED_OUT = PeFlag.LOCKED_OUT.value
_ISOLATED = PeFlag.ISOLATED.value
# ibm,set-slot-reset's function -> the function, and the notice of a reset it asserts or
# releases ("reset-hot", "reset-deactivate"...)
_SLOT_RESETS: dict[int, SlotReset] = {int(f): f for f in SlotReset}
_RESET_NOTICE = {f: "reset-" + f.name.lower() for f in SlotReset}


@dataclass
class FreezeCounter:
    """Linux's rule: count freezes in a window that starts at the first one."""

    window_start: float | None = None
    count: int = 0
    total: int = 0

    def add(self, now: float, window_s: float) -> int:
        if self.window_start is None or now - self.window_start > window_s:
            self.window_start = now
            self.count = 0
        self.count += 1
        self.total += 1
        return self.count


@dataclass
class PeRecord:
    pe: Pe
    owner: str | None
    flags: PeFlag = PeFlag.NONE
    freezes: FreezeCounter = field(default_factory=FreezeCounter)
    reset_failures: int = 0  # failed resets in a row
    adapter: str = ""  # the adapter's name ("": the only, unnamed one: hypervisor_shim.pe.names)
    # "adapter"/"vf3" on the unnamed adapter; "nic1"/"nic1.vf3" on adapter nic1
    name: str = field(init=False)

    def __post_init__(self) -> None:
        vf = None if self.pe.kind is PeKind.ADAPTER else int(self.pe.name[2:])
        self.name = pe_name(self.adapter, vf)

    @property
    def address(self) -> int:
        return self.pe.address


@dataclass(frozen=True)
class Notice:
    """A decision or event of the policy: pushed to `owners` as `event` (if not None),
    always recorded in the timeline as `kind`."""

    kind: str
    pe: str | None
    address: int | None
    data: Mapping[str, Any]
    owners: tuple[str, ...] = ()
    event: str | None = None  # the hcall event name pushed to the owners


@dataclass(frozen=True)
class StateReply:
    state: PeState
    retry_ms: int
    flags: PeFlag


@dataclass(frozen=True)
class CallResult:
    status: Status
    retry_ms: int = 0
    why: str = ""
    ret: Mapping[str, Any] = field(default_factory=dict)


# a success that returns nothing (most calls' result: one shared, its `ret` read-only)
SUCCESS = CallResult(Status.SUCCESS, ret=MappingProxyType({}))


class PePolicy:
    def __init__(self, adapter: Adapter, owners: Mapping[str, str], *,
                 config: PolicyConfig | None = None, clock: Callable[[], float],
                 notify: Callable[[Notice], None], enabled_vfs: int | None = None,
                 name: str = "") -> None:
        """`owners`: function name ("pf", "vf3", the adapter's own names) -> owner (guest
        name or HOST). `name`: the adapter's, in its PEs' names (pe.names)."""
        self.adapter = adapter
        self.name = name
        self.config = config or PolicyConfig()
        self._clock = clock
        self._notify = notify
        self.enabled_vfs = adapter.enabled_vfs() if enabled_vfs is None else enabled_vfs
        self.records: dict[int, PeRecord] = {}
        for pe in adapter.pes:
            fn = adapter.function_of(pe).name
            self.records[pe.address] = PeRecord(pe, owners.get(fn), adapter=name)
        # the records are made here once, for the model's PEs, which never change (nor
        # does the function of each: a VF's index, None for the PF's PE, for `present`)
        self._adapter_record = self.records[adapter.pes.adapter.address]
        self._vf_index: dict[int, int | None] = {
            pe.address: getattr(adapter.function_of(pe), "index", None) for pe in adapter.pes}
        adapter.events.add_listener(self._on_model_event)

    # ------------------------------------------------------------------ lookup
    @property
    def adapter_record(self) -> PeRecord:
        return self._adapter_record

    def record(self, address: int) -> PeRecord | None:
        return self.records.get(address)

    def by_name(self, name: str) -> PeRecord | None:
        for rec in self.records.values():
            if rec.name == name:
                return rec
        return None

    def present(self, rec: PeRecord) -> bool:
        """The adapter PE, and a VF's PE if the VF is enabled or has an owner: the PEs
        query-pes lists. Notices (pushed events, timeline, console events) name no
        other PE; the platform refuses injections on them."""
        index = self._vf_index[rec.pe.address]
        return index is None or index < self.enabled_vfs or rec.owner is not None

    def vf_records(self) -> list[PeRecord]:
        return [self.records[pe.address] for pe in self.adapter.pes.vfs]

    def set_config(self, **changes: Any) -> PolicyConfig:
        self.config = replace(self.config, **changes)
        self._emit(Kind.POLICY_SET, None, dict(max_freezes=self.config.max_freezes,
                                            window_s=self.config.window_s))
        return self.config

    # ------------------------------------------------------------------ model events
    def _on_model_event(self, ev: Event) -> None:
        if ev.kind is EventKind.PE_FROZEN and ev.pe is not None:
            origin = ev.data.get("origin", ev.pe)
            if origin == ev.pe:  # a PE's own freeze; side-effects follow from it
                self._frozen(self.records[ev.pe], str(ev.data.get("reason", "")))
        elif ev.kind is EventKind.PE_RESET_DONE and ev.pe is not None:
            rec = self.records[ev.pe]
            rec.reset_failures = 0
            self._emit(Kind.PE_RESET_DONE, rec, {"reset": ev.data.get("reset")},
                       event=Kind.PE_RESET_DONE, owners=self._owners_below(rec))
            self._refresh_isolated(rec)
        elif ev.kind is EventKind.PE_RESET_FAILED and ev.pe is not None:
            self._reset_failed(self.records[ev.pe], str(ev.data.get("reset")))

    def _reset_failed(self, rec: PeRecord, kind: str) -> None:
        rec.reset_failures += 1
        rec.flags |= PeFlag.ISOLATED | PeFlag.RECOVERING
        limit = self.config.max_reset_failures
        self._emit(Kind.RESET_FAILED, rec, {"reset": kind, "failures": rec.reset_failures,
                                         "max_reset_failures": limit})
        self._emit(Kind.PE_RESET_DONE, rec, {"reset": kind, "failed": True},
                   event=Kind.PE_RESET_DONE, owners=self._owners_below(rec))
        if rec.reset_failures >= limit and PeFlag.PERMANENT not in rec.flags:
            self._make_permanent(rec, {"reset_failures": rec.reset_failures,
                                       "freeze_count": rec.freezes.count,
                                       "origin": rec.address, "cause": Kind.RESET_FAILED})

    def _owners_below(self, rec: PeRecord) -> tuple[str, ...]:
        owners = [rec.owner] + [self.records[d.address].owner for d in rec.pe.descendants()]
        return tuple(dict.fromkeys(o for o in owners if o is not None))

    def _frozen(self, rec: PeRecord, reason: str) -> None:
        now = self._clock()
        count = rec.freezes.add(now, self.config.window_s)
        affected = [rec] + [self.records[d.address] for d in rec.pe.descendants()]
        for r in affected:
            r.flags |= PeFlag.ISOLATED | PeFlag.RECOVERING
        lockout = rec.pe.kind is PeKind.ADAPTER and self.config.lockout
        if lockout:
            for r in affected[1:]:
                if PeFlag.PERMANENT not in r.flags:  # no lockout (nor lift) for a dead PE
                    r.flags |= PeFlag.LOCKED_OUT
        self._emit(Kind.PE_FROZEN, rec, {"reason": reason, "freeze_count": count,
                                      "window_count": count, "side_effect": False,
                                      "origin": rec.address, "locked_out": False},
                   event=Kind.PE_FROZEN, owners=(rec.owner,) if rec.owner else ())
        for r in affected[1:]:
            self._emit(Kind.PE_FROZEN, r, {"reason": reason, "side_effect": True,
                                        "origin": rec.address, "freeze_count": count,
                                        "locked_out": PeFlag.LOCKED_OUT in r.flags},
                       event=Kind.PE_FROZEN, owners=(r.owner,) if r.owner else ())
        if lockout:
            self._emit(Kind.LOCKOUT_START, rec, {"vf_pes": [
                r.address for r in affected[1:]
                if PeFlag.LOCKED_OUT in r.flags and self.present(r)]})
        if count > self.config.max_freezes:
            self._make_permanent(rec, {"freeze_count": count,
                                       "max_freezes": self.config.max_freezes,
                                       "window_s": self.config.window_s,
                                       "origin": rec.address})

    def fail_all(self, cause: str) -> None:
        """Every PE permanently failed at once (the platform lost the device model)."""
        self._make_permanent(self.adapter_record, {"cause": cause,
                                                   "origin": self.adapter_record.address})

    def _make_permanent(self, rec: PeRecord, data: Mapping[str, Any]) -> None:
        """`rec` and every PE below it: permanently failed, pushed to their owners."""
        for r in [rec] + [self.records[d.address] for d in rec.pe.descendants()]:
            r.flags = (r.flags | PeFlag.PERMANENT) & ~PeFlag.LOCKED_OUT
            self._emit(Kind.PERMANENT_FAILURE, r, data, event=Kind.PERMANENT_FAILURE,
                       owners=(r.owner,) if r.owner else ())

    def _refresh_isolated(self, top: PeRecord) -> None:
        """`top` or a PE below it may have come back to state 0: no longer isolated."""
        recs = [top]
        if top.pe.children:
            recs += [self.records[d.address] for d in top.pe.descendants()]
        for rec in recs:
            if rec.flags._value_ & (_ISOLATED | _PERMANENT | _LOCKED_OUT) == _ISOLATED \
                    and _code(rec.pe) is PeState.NORMAL:
                rec.flags &= ~PeFlag.ISOLATED
                self._emit(Kind.PE_THAWED, rec, {})

    # ------------------------------------------------------------------ state
    def state(self, rec: PeRecord) -> StateReply:
        flags = rec.flags
        if flags._value_ & _PERMANENT:
            return StateReply(PeState.UNAVAILABLE, 0, flags)
        if flags._value_ & _LOCKED_OUT:
            return StateReply(PeState.UNAVAILABLE, self.config.retry_hint_ms, flags)
        status = rec.pe.status()
        return StateReply(status.code, status.unavailable_ms, flags)

    def _gate(self, rec: PeRecord) -> CallResult | None:
        """The answer for a PE that may not be acted on now, or None."""
        bits = rec.flags._value_
        if not bits & (_PERMANENT | _LOCKED_OUT):
            return None
        if bits & _PERMANENT:
            return CallResult(Status.HW_ERROR, why="the PE is permanently failed")
        if bits & _LOCKED_OUT:
            self._emit(Kind.UNFREEZE_REFUSED, rec, {"retry_ms": self.config.retry_hint_ms})
            return CallResult(Status.BUSY, self.config.retry_hint_ms,
                              "locked out until the adapter has recovered")
        return None

    # ------------------------------------------------------------------ calls
    def set_eeh_option(self, rec: PeRecord, option: int) -> CallResult:
        try:
            opt = EehOption(option)
        except ValueError:
            return CallResult(Status.PARAM_ERROR, why=f"unknown option {option}")
        if opt in (EehOption.DISABLE, EehOption.ENABLE):
            return SUCCESS  # EEH is always on for this adapter
        gated = self._gate(rec)
        if gated is not None:
            return gated
        pe = rec.pe
        op = pe.thaw_mmio if opt is EehOption.THAW_MMIO else pe.thaw_dma
        result = int(op())
        if result != 0:
            return CallResult(Status(result), why=f"PE in state {int(pe.status().code)}")
        self._emit(Kind.MMIO_THAWED if opt is EehOption.THAW_MMIO else Kind.DMA_THAWED, rec,
                   {"state": int(pe.status().code)})
        self._refresh_isolated(rec)
        return SUCCESS

    def set_slot_reset(self, rec: PeRecord, function: int) -> CallResult:
        fn = _SLOT_RESETS.get(function)
        if fn is None:
            return CallResult(Status.PARAM_ERROR, why=f"unknown reset function {function}")
        gated = self._gate(rec)
        if gated is not None:
            return gated
        pe = rec.pe
        if fn is SlotReset.DEACTIVATE:
            result = int(pe.deactivate_reset())
        else:
            result = int(pe.activate_reset(int(fn)))
        if result != 0:
            return CallResult(Status(result), why=f"PE in state {int(pe.status().code)}")
        self._emit(_RESET_NOTICE[fn], rec, {})
        return SUCCESS

    def configure_pe(self, rec: PeRecord) -> CallResult:
        gated = self._gate(rec)
        if gated is not None:
            return gated
        code = _code(rec.pe)
        if code in (PeState.RESET, PeState.UNAVAILABLE):
            return CallResult(Status.UNEXPECTED_STATE, why=f"PE in state {int(code)}")
        if rec.pe.kind is PeKind.ADAPTER and self.enabled_vfs:
            pf = self.adapter.pf
            if not (pf.sriov_enabled and pf.num_vfs == self.enabled_vfs):
                pf.enable_vfs(self.enabled_vfs)
        self._emit(Kind.CONFIGURED, rec, {"vfs": self.adapter.enabled_vfs()})
        return SUCCESS

    def allow_unfreeze(self, adapter_rec: PeRecord, vf_addresses: Iterable[int]) -> CallResult:
        if adapter_rec.pe.kind is not PeKind.ADAPTER:
            return CallResult(Status.PARAM_ERROR, why="not the adapter PE")
        if PeFlag.PERMANENT in adapter_rec.flags:
            return CallResult(Status.HW_ERROR, why="the adapter PE is permanently failed")
        targets: list[PeRecord] = []
        for addr in vf_addresses:
            rec = self.records.get(addr)
            if rec is None or rec.pe.kind is not PeKind.VF:
                return CallResult(Status.PARAM_ERROR, why=f"no VF PE at {addr:#x}")
            targets.append(rec)
        if _code(adapter_rec.pe) is not PeState.NORMAL:
            return CallResult(Status.UNEXPECTED_STATE,
                              why="the adapter PE has not recovered (state "
                                  f"{int(adapter_rec.pe.status().code)})")
        allowed = []
        self._emit(Kind.ALLOW_UNFREEZE, adapter_rec, {"vf_pes": [r.address for r in targets]})
        for rec in targets:
            if PeFlag.LOCKED_OUT in rec.flags:
                rec.flags &= ~PeFlag.LOCKED_OUT
                allowed.append(rec.address)
                self._emit(Kind.LOCKOUT_LIFTED, rec, {}, event=Kind.LOCKOUT_LIFTED,
                           owners=(rec.owner,) if rec.owner else ())
        adapter_rec.flags &= ~PeFlag.RECOVERING
        self._refresh_isolated(adapter_rec)
        return CallResult(Status.SUCCESS, ret={"allowed": allowed})

    def recovered(self, rec: PeRecord) -> None:
        """The owner's driver reports the PE recovered."""
        if PeFlag.PERMANENT not in rec.flags:
            rec.flags &= ~PeFlag.RECOVERING

    def clear_permanent(self, rec: PeRecord) -> None:
        """Operator action (console, with a reset of `rec`): forget a permanent failure and
        its freeze count. A PE that was permanently failed leaves its `recovering` flag
        too (no recovery of its driver is under way: the driver disconnected; it is told
        by the reset's pushed `pe-reset-done`), and `isolated` once back in state 0."""
        for r in [rec] + [self.records[d.address] for d in rec.pe.descendants()]:
            if PeFlag.PERMANENT in r.flags:
                r.flags &= ~(PeFlag.PERMANENT | PeFlag.RECOVERING)
            r.freezes = FreezeCounter()
            r.reset_failures = 0
        self._emit(Kind.PERMANENT_CLEARED, rec, {})
        self._refresh_isolated(rec)

    # ------------------------------------------------------------------ notices
    def emit(self, kind: str, rec: PeRecord | None, data: Mapping[str, Any], *,
             event: str | None = None, owners: tuple[str, ...] = ()) -> None:
        """A notice from a platform component other than the policy itself."""
        self._emit(kind, rec, data, event=event, owners=owners)

    def _emit(self, kind: str, rec: PeRecord | None, data: Mapping[str, Any], *,
              event: str | None = None, owners: tuple[str, ...] = ()) -> None:
        if rec is not None and not self.present(rec):
            return  # a VF that is not enabled: its PE is in no list, nothing names it
        self._notify(Notice(kind, rec.name if rec else None, rec.address if rec else None,
                            dict(data), owners, event))
