"""The types of the platform's operator API (`hypervisor_shim.platform.Platform`).

What the operator API returns is typed (frozen dataclasses); each type's `to_json()` is
its form on the console's QMP wire (README "Console"), in the field order shown there:

  PeInfo      query-pes entry     {pe, address, state, retry_ms, owner, freeze_count, flags}
  Injection   eeh-inject          {pe, kind, log-seq} or {pe, kind, function, id, armed}, ...
  ResetDone   eeh-reset-pe        {pe, kind, status}
  PolicyView  query-eeh-policy    {max-freezes, window-s, retry-hint-ms, lockout, errinjct}

What listeners receive (`Platform.add_listener`) is a `PlatformEvent`, its `name` the QMP
event the console sends and its `to_json()` that event's data:

  policy notices about a PE's state   -> PeStateChanged      EEH_PE_STATE_CHANGED
  lockout-lifted                      -> LockoutLifted       EEH_LOCKOUT_LIFTED
  permanent-failure                   -> PePermanentFailure  EEH_PE_PERMANENT_FAILURE
  other decisions and driver reports  -> RecoveryStep        EEH_RECOVERY_STEP

A request the platform refuses (an unknown PE, a kind that does not apply to that PE, a
reset the PE refuses, a policy value out of range, the device model down) raises
`PlatformError` with a message for the operator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from device_model import ResetKind
from eeh_abi.vocabulary import Kind
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe import Notice, PeRecord, PolicyConfig, StateReply


class PlatformError(ShimError):
    """A platform request that cannot be carried out; the message is for the operator."""


# eeh-reset-pe's kinds.
RESET_KINDS: Mapping[str, ResetKind] = {"hot": ResetKind.HOT,
                                        "fundamental": ResetKind.FUNDAMENTAL}
# Flags a PE may carry (PeInfo.flags).
PE_FLAGS = ("isolated", "recovering", "locked-out", "permanent")


# ---- results ----------------------------------------------------------------------------

@dataclass(frozen=True)
class PeInfo:
    pe: str  # "adapter", "vf0", ...
    address: int  # the PE's config address
    state: int  # PAPR 0/1/2/4/5
    retry_ms: int
    owner: str | None  # the guest (or identity) holding the PE's function
    freeze_count: int  # every freeze since start
    flags: tuple[str, ...]  # of PE_FLAGS

    def to_json(self) -> dict[str, Any]:
        return {"pe": self.pe, "address": self.address, "state": self.state,
                "retry_ms": self.retry_ms, "owner": self.owner,
                "freeze_count": self.freeze_count, "flags": list(self.flags)}


@dataclass(frozen=True)
class Injection:
    """What an injection did. Only the fields its kind sets are on the wire."""

    pe: str
    kind: str  # an InjectKind (hypervisor_shim.injection)
    function: int | None = None  # errinjct: the ibm,errinjct function code
    id: int | None = None  # errinjct: the armed injection's id
    armed: bool | None = None  # errinjct: waits for the next matching access
    log_seq: int | None = None  # the error-log entry recorded (adapter-fatal, vf-error)
    frozen: bool | None = None  # freeze: whether the PE was not frozen before

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pe": self.pe, "kind": str(self.kind)}
        for key, value in (("function", self.function), ("id", self.id),
                           ("armed", self.armed), ("log-seq", self.log_seq),
                           ("frozen", self.frozen)):
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class ResetDone:
    pe: str
    kind: str  # of RESET_KINDS
    status: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"pe": self.pe, "kind": self.kind, "status": self.status}


@dataclass(frozen=True)
class PolicyView:
    max_freezes: int
    window_s: float
    retry_hint_ms: int
    lockout: bool
    errinjct: bool

    @classmethod
    def of(cls, c: PolicyConfig) -> PolicyView:
        return cls(c.max_freezes, c.window_s, c.retry_hint_ms, c.lockout, c.errinjct)

    def to_json(self) -> dict[str, Any]:
        return {"max-freezes": self.max_freezes, "window-s": self.window_s,
                "retry-hint-ms": self.retry_hint_ms, "lockout": self.lockout,
                "errinjct": self.errinjct}


# ---- events -----------------------------------------------------------------------------

# Policy notices that change what query-pes shows of a PE: each is a PeStateChanged.
STATE_NOTICES = frozenset({
    Kind.PE_FROZEN, Kind.PE_THAWED, Kind.MMIO_THAWED, Kind.DMA_THAWED, Kind.PE_RESET_DONE,
    Kind.RESET_HOT, Kind.RESET_FUNDAMENTAL, Kind.RESET_DEACTIVATE, Kind.PERMANENT_CLEARED,
    Kind.LOCKOUT_LIFTED, Kind.PERMANENT_FAILURE})


@dataclass(frozen=True)
class PeStateChanged:
    name: ClassVar[str] = "EEH_PE_STATE_CHANGED"
    pe: str
    state: int
    flags: tuple[str, ...]
    cause: str  # the policy notice

    def to_json(self) -> dict[str, Any]:
        return {"pe": self.pe, "state": self.state, "flags": list(self.flags),
                "cause": self.cause}


@dataclass(frozen=True)
class LockoutLifted:
    name: ClassVar[str] = "EEH_LOCKOUT_LIFTED"
    pe: str
    owner: str | None

    def to_json(self) -> dict[str, Any]:
        return {"pe": self.pe, "owner": self.owner}


@dataclass(frozen=True)
class PePermanentFailure:
    name: ClassVar[str] = "EEH_PE_PERMANENT_FAILURE"
    pe: str
    freeze_count: int | None

    def to_json(self) -> dict[str, Any]:
        return {"pe": self.pe, "freeze-count": self.freeze_count}


@dataclass(frozen=True)
class RecoveryStep:
    name: ClassVar[str] = "EEH_RECOVERY_STEP"
    who: str | None  # "platform", or the guest whose driver reported the step
    step: str
    pe: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"who": self.who, "step": self.step, "pe": self.pe,
                "detail": dict(self.detail)}


PlatformEvent = PeStateChanged | LockoutLifted | PePermanentFailure | RecoveryStep
PlatformListener = Callable[[PlatformEvent], None]
"""Receives every platform event, on the device model's loop thread: it must not block
(hand the event to your own loop with `loop.call_soon_threadsafe`)."""


def events_of(n: Notice, rec: PeRecord | None, st: StateReply | None) -> list[PlatformEvent]:
    """The platform events of a policy notice (`rec`, `st`: its PE's record and state)."""
    out: list[PlatformEvent] = []
    if n.kind == Kind.LOCKOUT_LIFTED and rec is not None:
        out.append(LockoutLifted(rec.name, rec.owner))
    if n.kind == Kind.PERMANENT_FAILURE and rec is not None:
        out.append(PePermanentFailure(rec.name, n.data.get("freeze_count")))
    if n.kind in STATE_NOTICES:
        if rec is not None and st is not None:
            out.append(PeStateChanged(rec.name, int(st.state), tuple(st.flags.names()),
                                      n.kind))
    else:
        out.append(RecoveryStep("platform", n.kind, n.pe, dict(n.data)))
    return out
