"""Partitionable Endpoints: the unit that freezes, thaws and resets as one.

A `Pe` holds the hardware side of a PE: its freeze flags (MMIO, DMA), its reset state, its
error log and PAPR recovery info. The freeze *gates* are `mmio_open()` and `dma_open()`:
every guest access and every DMA of a function asks its PE first. A gate checks the PE and
its ancestors, so the instant the adapter PE's own flag is set no VF access or DMA can pass,
before the freeze has even been recorded on each VF PE: propagation is atomic with respect
to guest accesses by construction.

An error while the PE's reset is asserted or settling (state 1 or 5) cannot freeze it any
further; its freeze is deferred to the end of the reset, which then does not clear it: the
PE comes back frozen, with a new PE_FROZEN (a new freeze to count), never silently healthy.

Fault hook (off by default): `fail_resets = n` makes the next n resets of this PE fail: each
completes (state 1, then 5) but leaves the PE frozen, with PE_RESET_FAILED instead of
PE_RESET_DONE, as an adapter that does not come back from reset would.

Policy (lockout, allow-unfreeze, maximum freezes) is not here: the hypervisor shim calls
these primitives and decides when.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from device_model.clock import Clock, Timer
from device_model.errors import UnknownPeError
from device_model.events import EventBus, EventKind
from device_model.reset import RECOVERY_KIND, RECOVERY_KIND_FLR, ResetKind, ResetTiming
from eeh_abi.papr import (
    RECOVERY_KIND_SHIFT,
    RECOVERY_RESET,
    RECOVERY_SIDE_EFFECT,
    PeState,
    Status,
)

log = logging.getLogger(__name__)

ERROR_LOG_DEPTH = 256


# PE states as ibm,read-slot-reset-state2 returns them (there is no 3).
PeStateCode = PeState


class PeKind(enum.Enum):
    ADAPTER = "adapter"
    VF = "vf"


@dataclass(frozen=True)
class PeStatus:
    code: PeStateCode
    unavailable_ms: int = 0  # retry hint, meaningful for UNAVAILABLE only


_NORMAL, _RESET, _FROZEN, _DMA_STOPPED = (
    PeStatus(c) for c in (PeStateCode.NORMAL, PeStateCode.RESET, PeStateCode.FROZEN,
                          PeStateCode.DMA_STOPPED))

# a reset kind as events name it ("hot", "fundamental")
_RESET_NAME = {k: k.name.lower() for k in ResetKind}


class ErrorSource(enum.Enum):
    INJECTED = "injected"  # ibm,errinjct functions 0-19
    DMA_FAULT = "dma-fault"  # the function's own DMA hit an unmapped address
    ADAPTER_FATAL = "adapter-fatal"  # adapter internal error
    VF_ERROR = "vf-error"  # an error local to one VF


@dataclass(frozen=True)
class ErrorLogEntry:
    seq: int
    time: float
    pe: int
    function: str
    source: ErrorSource
    detail: str
    address: int = 0
    error_function: int | None = None  # ibm,errinjct function code
    aer_bit: int = 0  # AER uncorrectable status bit recorded
    fatal: bool = False  # severity of that bit
    aer: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "pe": self.pe, "function": self.function,
                "source": self.source.value, "detail": self.detail, "address": self.address,
                "error_function": self.error_function, "aer_bit": self.aer_bit,
                "fatal": self.fatal, "aer": dict(self.aer)}


class PeHooks(Protocol):
    """What the adapter does when a PE's reset or thaw changes its functions."""

    def reset_of(self, pe: Pe, kind: ResetKind) -> tuple[str, str]:
        """The function a `kind` reset of `pe` resets, and how: (its name, the
        `FunctionReset` value)."""
        ...

    def reset_asserted(self, pe: Pe, kind: ResetKind) -> None:
        """Reset `pe`'s function (announced by the PE's `pe-reset-asserted`, no
        `function-reset` of its own)."""
        ...

    def reset_done(self, pe: Pe, kind: ResetKind) -> None: ...
    def dma_thawed(self, pe: Pe) -> None: ...

    def after(self, delay: float, fn: Callable[[], None]) -> Timer | None:
        """Run `fn` in `delay` s (at once if 0), keeping its errors out of the loop."""
        ...




class Pe:
    def __init__(self, *, address: int, kind: PeKind, name: str, parent: Pe | None,
                 clock: Clock, bus: EventBus, hooks: PeHooks, timing: ResetTiming,
                 hold: float, settle: float) -> None:
        self.address = address
        self.kind = kind
        self.name = name
        self.parent = parent
        self.children: list[Pe] = []
        if parent is not None:
            parent.children.append(self)
        self._clock = clock
        self._bus = bus
        self._hooks = hooks
        self._timing = timing
        self._hold = hold
        self._settle = settle
        self._mmio_frozen = False
        self._dma_frozen = False
        self._reset_active = False
        self._reset_kind = ResetKind.HOT
        self._release_requested = False
        self._hold_until = 0.0
        self._settle_until: float | None = None
        self._timer: Timer | None = None
        self._mmio_closed = False  # frozen, in reset or settling: the gate's one-bit view
        self._dma_closed = False
        self.side_effect = False
        self.reset_happened = False
        self.last_reset_kind: int = 0
        self.freeze_count = 0
        self.fail_resets = 0  # fault hook: the next n resets leave the PE frozen
        self._deferred_freeze: str | None = None  # an error during the reset
        self._log: deque[ErrorLogEntry] = deque(maxlen=ERROR_LOG_DEPTH)
        self.log_overflow = 0

    def __repr__(self) -> str:
        return f"<Pe {self.name} 0x{self.address:x} state={self.status().code.name}>"

    # ---- gates (hot path)
    def mmio_open(self) -> bool:
        if self._mmio_closed:
            return False
        p = self.parent
        while p is not None:
            if p._mmio_closed:
                return False
            p = p.parent
        return True

    def dma_open(self) -> bool:
        if self._dma_closed:
            return False
        p = self.parent
        while p is not None:
            if p._dma_closed:
                return False
            p = p.parent
        return True

    def _update(self) -> None:
        busy = self._reset_active or self._settle_until is not None
        self._mmio_closed = self._mmio_frozen or busy
        self._dma_closed = self._dma_frozen or busy

    def ancestors(self) -> Iterator[Pe]:
        p = self.parent
        while p is not None:
            yield p
            p = p.parent

    def descendants(self) -> Iterator[Pe]:
        for c in self.children:
            yield c
            yield from c.descendants()

    # ---- state
    @property
    def busy(self) -> bool:
        """Reset asserted or settling."""
        return self._reset_active or self._settle_until is not None

    def status(self) -> PeStatus:
        # one walk up the tree (the nearest busy ancestor decides, as before its own
        # reset, then a freeze of its own or of an ancestor); the states without a retry
        # hint are shared constants (a platform call reads a PE's state several times)
        mmio, dma = self._mmio_frozen, self._dma_frozen
        p = self.parent
        while p is not None:
            if p._reset_active or p._settle_until is not None:
                return PeStatus(PeStateCode.UNAVAILABLE, p._remaining_ms())
            mmio = mmio or p._mmio_frozen
            dma = dma or p._dma_frozen
            p = p.parent
        if self._reset_active:
            return _RESET
        if self._settle_until is not None:
            return PeStatus(PeStateCode.UNAVAILABLE, self._remaining_ms())
        if mmio:
            return _FROZEN
        if dma:
            return _DMA_STOPPED
        return _NORMAL

    @property
    def frozen(self) -> bool:
        """This PE's own freeze (either half) is set."""
        return self._mmio_frozen or self._dma_frozen

    def _remaining_ms(self) -> int:
        now = self._clock.now()
        if self._reset_active:
            if not self._release_requested:
                return self._timing.retry_hint_ms
            left = max(0.0, self._hold_until - now) + self._settle
        else:
            left = max(0.0, (self._settle_until or now) - now)
        return max(1, math.ceil(left * 1000))

    @property
    def recovery_info(self) -> int:
        """PAPR recovery info: bit 31 reset happened, 30 side-effect freeze, 28-29 kind."""
        word = RECOVERY_SIDE_EFFECT if self.side_effect else 0
        if self.reset_happened:
            word |= RECOVERY_RESET | (self.last_reset_kind << RECOVERY_KIND_SHIFT)
        return word

    # ---- freeze and thaw
    def freeze(self, reason: str) -> bool:
        """Freeze this PE and, atomically for guests, every PE below it.

        Returns True if this PE was not fully frozen before. Descendants are marked frozen
        "as a side-effect" (recovery-info bit 30) when the freeze is new to them. On a PE in
        reset or settling the freeze is deferred to the end of the reset (returns False).
        """
        if self.busy:
            self._deferred_freeze = reason
            return False
        changed = self._freeze_one(reason, None)
        for d in self.descendants():
            d._freeze_one(reason, self)
        return changed

    def _freeze_one(self, reason: str, origin: Pe | None) -> bool:
        if self._mmio_frozen and self._dma_frozen:
            return False
        self._mmio_frozen = self._dma_frozen = True
        self._update()
        self.freeze_count += 1
        if origin is not None:
            self.side_effect = True
        self._bus.emit(EventKind.PE_FROZEN, pe=self.address, reason=reason,
                       side_effect=origin is not None,
                       origin=(origin or self).address)
        return True

    def _ancestor_blocks(self, dma: bool) -> bool:
        for a in self.ancestors():
            if a.busy or a._mmio_frozen or (dma and a._dma_frozen):
                return True
        return False

    def thaw_mmio(self) -> Status:
        """Release MMIO: state 2 -> 4. A no-op (OK) if MMIO is not frozen."""
        if self.busy or self._ancestor_blocks(dma=False):
            return Status.UNEXPECTED_STATE
        if not self._mmio_frozen:
            return Status.SUCCESS
        self._mmio_frozen = False
        self._update()
        self._bus.emit(EventKind.PE_MMIO_THAWED, pe=self.address)
        return Status.SUCCESS

    def thaw_dma(self) -> Status:
        """Release DMA: state 4 -> 0 (MMIO must be released first)."""
        if self.busy or self._ancestor_blocks(dma=True) or self._mmio_frozen:
            return Status.UNEXPECTED_STATE
        if not self._dma_frozen:
            return Status.SUCCESS
        self._dma_frozen = False
        self._update()
        self._bus.emit(EventKind.PE_DMA_THAWED, pe=self.address)
        self._hooks.dma_thawed(self)
        return Status.SUCCESS

    # ---- reset
    def activate_reset(self, kind: ResetKind | int) -> Status:
        """Assert a reset (state 1). Functions are reset now; release with deactivate."""
        if type(kind) is not ResetKind:
            try:
                kind = ResetKind(kind)
            except ValueError:
                return Status.PARAM_ERROR
        if self.kind is PeKind.VF and kind is ResetKind.FUNDAMENTAL:
            return Status.NOT_SUPPORTED
        p = self.parent
        while p is not None:
            if p.busy:
                return Status.UNEXPECTED_STATE
            p = p.parent
        if self._reset_active:
            return Status.SUCCESS
        self._cancel_timer()
        self._settle_until = None
        self._reset_active = True
        self._reset_kind = kind
        self._release_requested = False
        self._hold_until = self._clock.now() + self._hold
        self._update()
        # one event for the PE's reset and its function's: the function's reset is part of
        # it (other functions reset by it, the VFs under a PF, announce their own)
        function, how = self._hooks.reset_of(self, kind)
        self._bus.emit(EventKind.PE_RESET_ASSERTED, pe=self.address, function=function,
                       reset=_RESET_NAME[kind], function_reset=how)
        self._hooks.reset_asserted(self, kind)
        return Status.SUCCESS

    def deactivate_reset(self) -> Status:
        """Release the reset once its hold time has passed; then settle (state 5); then 0."""
        if not self._reset_active or self._release_requested:
            return Status.SUCCESS
        self._release_requested = True
        self._after(self._hold_until - self._clock.now(), self._release)
        return Status.SUCCESS

    def reset(self, kind: ResetKind | int) -> Status:
        """Activate and release at once: the whole sequence, timed by the reset timing."""
        status = self.activate_reset(kind)
        if status is Status.SUCCESS:
            self.deactivate_reset()
        return status

    def _release(self) -> None:
        self._timer = None
        self._reset_active = False
        if self._settle <= 0:  # no settling (a VF PE: FLR has none): released is done,
            self._settled()    # one event, `pe-reset-done` (or `pe-reset-failed`)
            return
        self._settle_until = self._clock.now() + self._settle
        self._update()
        self._bus.emit(EventKind.PE_RESET_DEASSERTED, pe=self.address,
                       reset=_RESET_NAME[self._reset_kind])
        self._after(self._settle, self._settled)

    def _settled(self) -> None:
        self._timer = None
        self._settle_until = None
        failed = self.fail_resets > 0
        if failed:
            self.fail_resets -= 1
        self._mmio_frozen = self._dma_frozen = failed
        if not failed:
            self.side_effect = False
        self.reset_happened = True
        self.last_reset_kind = (RECOVERY_KIND[self._reset_kind] if self.kind is PeKind.ADAPTER
                                else RECOVERY_KIND_FLR)
        self._update()
        kind = EventKind.PE_RESET_FAILED if failed else EventKind.PE_RESET_DONE
        self._bus.emit(kind, pe=self.address, reset=_RESET_NAME[self._reset_kind])
        self._hooks.reset_done(self, self._reset_kind)
        deferred, self._deferred_freeze = self._deferred_freeze, None
        if deferred is not None:
            self.freeze(deferred)

    def _after(self, delay: float, fn: Callable[[], None]) -> None:
        self._timer = self._hooks.after(delay, fn)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # ---- error log
    def log_error(self, entry: ErrorLogEntry) -> None:
        if len(self._log) == self._log.maxlen:
            self.log_overflow += 1
        self._log.append(entry)
        self._bus.emit(EventKind.ERROR_LOGGED, pe=self.address, function=entry.function,
                       source=entry.source.value, seq=entry.seq, detail=entry.detail,
                       error_function=entry.error_function, fatal=entry.fatal)

    def error_log(self) -> tuple[ErrorLogEntry, ...]:
        return tuple(self._log)

    def clear_error_log(self) -> None:
        self._log.clear()


class PeTree:
    """The adapter PE and its VF PEs, addressed by PE configuration address."""

    def __init__(self, adapter: Pe, vfs: list[Pe]) -> None:
        self.adapter = adapter
        self.vfs = tuple(vfs)
        self._by_address = {pe.address: pe for pe in (adapter, *vfs)}

    def __iter__(self) -> Iterator[Pe]:
        yield self.adapter
        yield from self.vfs

    def __len__(self) -> int:
        return 1 + len(self.vfs)

    def get(self, address: int) -> Pe:
        try:
            return self._by_address[address]
        except KeyError:
            raise UnknownPeError(address) from None

    def vf(self, index: int) -> Pe:
        if not 0 <= index < len(self.vfs):
            raise UnknownPeError(index)
        return self.vfs[index]
