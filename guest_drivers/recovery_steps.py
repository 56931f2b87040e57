"""What one PE's recovery round does on the platform, and the state it keeps.

`RecoverySteps` is the base of guest_drivers.recovery.PeRecovery (which decides what
happens when: events in, rounds, outcomes): the platform calls a round makes (thaw,
reset, configure-pe) with their waits (busy, settling, the lockout) and the plumbing they
share (the PE's state, calls that give up when the round is interrupted, reports).

Invariants: `_progressed` is set from the moment this round changed the PE's state (a
thaw, or a reset asserted), so a freeze heard after it is a new freeze (`RoundRestart`), not
the one being handled; `_lift_seq` / `_reset_seq` only grow (a wait compares them with
the value read before its call, so a lift or a reset between the call and the wait is
not lost).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from eeh_abi.hcall import CallTimeout, ChannelClosed, HcallError, Reply
from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.recovery_types import Participant, PeStatus, RecoveryPolicy
from guest_drivers.services import Services

log = logging.getLogger("guest_drivers.recovery")

TIMINGS_KEPT = 64

# Reports that wait for their reply: the outcomes of a round.
_WAITED_STEPS = frozenset({Kind.RECOVERED, Kind.PERMANENT_FAILURE, Kind.DISCONNECT,
                           Kind.ABORTED, Kind.NO_FREEZE})


def pe_status(r: Reply) -> PeStatus:
    """A read-slot-reset-state2 reply as a PeStatus."""
    flags = r.get("flags", [])
    return PeStatus(int(r.get("state", 0)), int(r.get("retry_ms", 0) or 0),
                    tuple(str(f) for f in flags) if isinstance(flags, list) else ())


class RoundRestart(Exception):
    """A new freeze arrived after recovery changed the PE's state."""


class RoundAborted(Exception):
    """The driver is stopping (detach/stop)."""


class RoundFatal(Exception):
    """The round cannot go on: the PE is given up (`permanent`) or left as it is."""

    def __init__(self, reason: str, permanent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class RecoverySteps:
    """The state of one PE's recovery and the platform steps of a round (see the
    module docstring)."""

    def __init__(self, services: Services, pe: int, participants: Sequence[Participant], *,
                 name: str, policy: RecoveryPolicy | None = None,
                 wake: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.services = services
        self.pe = pe
        self.name = name
        self.participants = list(participants)
        self.policy = policy or RecoveryPolicy()
        self._wake = wake or (lambda: None)
        self._clock = clock
        self._cv = threading.Condition()
        self._pending = False
        self._running = False
        self._progressed = False  # this round changed the PE's state (thaw/reset)
        self._restart = False
        self._permanent = False
        self._closed = False
        self._frozen_seq = 0
        self._lift_seq = 0
        self._reset_seq = 0
        self._reset_back_seq = -1  # `_reset_seq` at the last pe-reset-done not `failed`
        self._lift_heard: dict[str, Any] | None = None  # a lift to report (_lockout_wait)
        # the state confirm_all_ones read, with _lift_seq and _reset_seq then (the
        # round it requested takes it: PeRecovery._round_state)
        self._confirmed: tuple[PeStatus, int, int] | None = None
        self.last_freeze: Mapping[str, Any] = {}
        self.trigger = ""  # what started the pending recovery
        self.failed = False
        self.revive_requested = False  # a pe-reset-done after the failure (see revive)
        self.rounds = 0  # recoveries run (restarts included)
        self.recovered = 0
        self.restarts = 0
        self.lockout_waits = 0
        self.lockout_woken_by_event = 0
        self.lockout_fallbacks = 0
        self.confirmed = 0
        self.false_alarms = 0
        # per recovery: step -> ms from start; the last TIMINGS_KEPT (an agent runs for
        # as long as its guest: its memory must not grow with every recovery)
        self.timings: deque[dict[str, float]] = deque(maxlen=TIMINGS_KEPT)
        self._t0 = 0.0

    # ------------------------------------------------------------------ steps
    def _thaw(self, option: EehOption) -> None:
        deadline = self._clock() + self.policy.state_timeout_s
        backoff = self.policy.backoff_min_s
        released = False
        while True:
            self._check()
            seq = self._lift_seq
            r = self._call(Call.SET_EEH_OPTION, option=int(option))
            if r.status == Status.SUCCESS:
                self._progressed = True
                return
            if r.status == Status.BUSY:
                self._lockout_wait(r, seq, f"set-eeh-option {int(option)}")
                continue
            if r.status == Status.UNEXPECTED_STATE:
                st = self._state()
                if option == EehOption.THAW_DMA and st.state == PeState.FROZEN:
                    raise RoundRestart()  # frozen again between the two thaws
                if st.state == PeState.RESET and not released:
                    # a reset asserted before this recovery was interrupted (a new freeze
                    # between activating and releasing it) is still held: release it once;
                    # the PE then settles and comes back thawed (waited for below)
                    self._busy_call(Call.SET_SLOT_RESET, deadline,
                                    function=int(SlotReset.DEACTIVATE))
                    self._report(Kind.RESET_RELEASED, why="held from an interrupted round")
                    released = True
                backoff = self._settle_wait(st, backoff, deadline, "thaw")
                continue
            raise RoundFatal(f"set-eeh-option {int(option)}: status {r.status} {r.error or ''}",
                         permanent=r.status == Status.HW_ERROR)

    def _reset(self) -> None:
        kinds = self.policy.reset_kinds
        for attempt, kind in enumerate(kinds, 1):
            t0 = self._clock()
            why = self._reset_once(kind)
            if why is None:
                self._report(Kind.RESET, kind=kind.name.lower(), attempt=attempt,
                             ms=round((self._clock() - t0) * 1000, 3))
                return
            self._report(Kind.RESET_FAILED, kind=kind.name.lower(), attempt=attempt, why=why)
        raise RoundFatal(f"reset failed {len(kinds)} times")

    def _reset_once(self, kind: SlotReset) -> str | None:
        """One reset: activate, release, wait for state 0. None when the PE is back."""
        deadline = self._clock() + self.policy.state_timeout_s / max(1, len(
            self.policy.reset_kinds))
        r = self._busy_call(Call.SET_SLOT_RESET, deadline, function=int(kind))
        if r.status == Status.NOT_SUPPORTED and kind is SlotReset.FUNDAMENTAL:
            kind = SlotReset.HOT  # a VF PE: fundamental is not supported, FLR is
            r = self._busy_call(Call.SET_SLOT_RESET, deadline, function=int(kind))
        if r.status != Status.SUCCESS:
            return f"set-slot-reset {int(kind)}: status {r.status} {r.error or ''}"
        # the reset changed the PE's state: a pe-frozen pushed from now on is a new freeze
        self._progressed = True
        released = self._reset_seq
        r = self._busy_call(Call.SET_SLOT_RESET, deadline, function=int(SlotReset.DEACTIVATE))
        if r.status != Status.SUCCESS:
            return f"set-slot-reset 0: status {r.status} {r.error or ''}"
        backoff = self.policy.backoff_min_s
        while True:
            self._check()
            seq = self._reset_seq
            if seq != released and self._reset_back_seq == seq:
                # the platform pushed this PE's pe-reset-done (not failed) since the
                # release: the PE is back in state 0 (a VF PE's, with no settle time, comes
                # before the release's reply), so no state read; a freeze after it is a
                # new one (`_progressed`), a restart at the next check
                return None
            st = self._state()
            if st.state == PeState.NORMAL:
                return None
            if st.state in (PeState.FROZEN, PeState.DMA_STOPPED):
                return f"state {st.state} after the reset"
            if self._clock() >= deadline:
                return f"still in state {st.state} after {self.policy.state_timeout_s} s"
            timeout = (st.retry_ms / 1000 if st.state == PeState.UNAVAILABLE and st.retry_ms
                       else backoff)
            backoff = min(backoff * 2, self.policy.backoff_max_s)
            self._wait(self._reset_seq_changed(seq),
                       min(timeout, max(0.0, deadline - self._clock())))

    def _reset_seq_changed(self, seq: int) -> Callable[[], bool]:
        return lambda: self._reset_seq != seq

    def _configure(self) -> None:
        deadline = self._clock() + self.policy.state_timeout_s
        r = self._busy_call(Call.CONFIGURE_PE, deadline)
        if r.status != Status.SUCCESS:
            raise RoundFatal(f"configure-pe: status {r.status} {r.error or ''}",
                         permanent=r.status == Status.HW_ERROR)
        restored: dict[str, Any] = {}
        for p in self.participants:
            if p.config is not None and p.saved is not None:
                try:
                    restored[p.name] = p.saved.restore(p.config)
                except Exception as e:  # the function went away: the driver will see it
                    restored[p.name] = {"error": repr(e)}
        self._report(Kind.CONFIGURE, restored=restored)

    def _busy_call(self, call: Call, deadline: float, **args: Any) -> Reply:
        """A reset/configure call, retried while the PE is locked out (-2), settling
        (-7), or the platform asks to call again later (990x)."""
        backoff = self.policy.backoff_min_s
        while True:
            self._check()
            seq = self._lift_seq
            r = self._call(call, **args)
            if r.status == Status.BUSY:
                self._lockout_wait(r, seq, call)
                continue
            if 9900 <= r.status <= 9905:  # PAPR "busy, call again in 10^x ms"
                self._wait(lambda: False, min(10 ** (r.status - 9900) / 1000,
                                              self.policy.backoff_max_s * 4))
                continue
            if r.status == Status.UNEXPECTED_STATE and self._clock() < deadline:
                st = self._state()
                backoff = self._settle_wait(st, backoff, deadline, call)
                continue
            if r.status == Status.HW_ERROR:
                raise RoundFatal(f"{call}: status -1 {r.error or ''}")
            return r

    def _settle_wait(self, st: PeStatus, backoff: float, deadline: float, what: str) -> float:
        if self._clock() >= deadline:
            raise RoundFatal(f"{what}: PE stuck in state {st.state}")
        hint = st.retry_ms / 1000 if st.state == PeState.UNAVAILABLE and st.retry_ms else 0.0
        seq_l, seq_r = self._lift_seq, self._reset_seq
        self._wait(lambda: self._lift_seq != seq_l or self._reset_seq != seq_r,
                   min(max(hint, backoff), self.policy.lockout_fallback_max_s))
        return min(backoff * 2, self.policy.backoff_max_s)

    def _lockout_wait(self, reply: Reply, seq: int, call: str) -> None:
        retry_ms = reply.get("retry_ms", 0)
        retry_ms = retry_ms if isinstance(retry_ms, int) and retry_ms >= 0 else 0
        self.lockout_waits += 1
        self._report(Kind.UNFREEZE_REFUSED, call=call, retry_ms=retry_ms)
        p = self.policy
        timeout = min(max(retry_ms / 1000, p.lockout_fallback_min_s), p.lockout_fallback_max_s)
        t0 = self._clock()
        lifted = self._wait(lambda: self._lift_seq != seq, timeout)
        self._check()
        by = "event" if lifted else "fallback"
        if lifted:
            self.lockout_woken_by_event += 1
        else:
            self.lockout_fallbacks += 1
        # reported once the call it lets through is answered (`_call`): at scale the
        # platform answers every VF's first unfreeze after the lift one after another, so
        # each report sent ahead of one would delay the unfreezes of every VF after it
        self._lift_heard = {"by": by, "waited_ms": round((self._clock() - t0) * 1000, 3)}

    def _report_lift(self) -> None:
        heard, self._lift_heard = self._lift_heard, None
        if heard is not None:
            self._report(Kind.LOCKOUT_LIFTED, **heard)

    # ------------------------------------------------------------------ plumbing
    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        """Sleep until `cond`, a restart/permanent/close, or `timeout`; True if `cond`.
        The reports held so far go out first (never held across a wait)."""
        self.services.flush()
        with self._cv:
            self._cv.wait_for(lambda: cond() or self._restart or self._permanent
                              or self._closed, timeout)
            return cond()

    def _check(self) -> None:
        if self._closed or self._permanent or self._restart:
            # a round that ends here still reports what it heard; one that goes on
            # reports it once its next call is answered (`_call`), not ahead of it
            self._report_lift()
        if self._closed:
            raise RoundAborted()
        if self._permanent:
            raise RoundFatal("the platform reported a permanent failure")
        if self._restart:
            raise RoundRestart()

    def _state(self) -> PeStatus:
        r = self._call(Call.READ_SLOT_RESET_STATE2)
        if r.status == Status.HW_ERROR:
            raise RoundFatal("read-slot-reset-state2: status -1")
        if r.status != Status.SUCCESS:
            raise RoundFatal(f"read-slot-reset-state2: status {r.status} {r.error or ''}",
                         permanent=False)
        st = pe_status(r)
        if st.permanent:
            raise RoundFatal(f"the PE is permanently unavailable (state {st.state}, retry 0)")
        return st

    def _call(self, call: Call, **args: Any) -> Reply:
        for attempt in range(self.policy.call_retries + 1):
            try:
                reply = self.services.call(call, pe=self.pe, **args)
                self._report_lift()
                return reply
            except CallTimeout:
                if attempt == self.policy.call_retries:
                    raise RoundFatal(f"{call}: no reply from the platform",
                                 permanent=False) from None
            except (ChannelClosed, HcallError, OSError) as e:
                raise RoundFatal(f"{call}: platform channel lost ({e})", permanent=False) from None
        raise AssertionError("unreachable")

    def _ms(self) -> float:
        return round((self._clock() - self._t0) * 1000, 3)

    def _report(self, step: Kind, **detail: Any) -> None:
        # intermediate steps are posted; an outcome waits, so that when `recovered` (the
        # count) moves, every step of the round is in the platform's timeline
        self.services.report(step, self.pe, {"driver": self.name, **detail},
                             wait=step in _WAITED_STEPS)
