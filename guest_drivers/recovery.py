"""The recovery of one PE, as Linux's EEH core runs it (eeh_handle_normal_event).

Drivers implement Linux's pci_error_handlers (`ErrorHandlers`): `error_detected(state)`,
`mmio_enabled()`, `slot_reset()` return an `ErsResult`, `resume()` returns nothing. The
results of every driver of the PE are merged with EEH's priority rule
(`eeh_abi.papr.merge_result`). `PeRecovery.run()` then does, on the caller's thread
(a driver's own worker thread, so recovery never races its data path):

    error_detected(FROZEN) on every driver                       -> "error-detected"
    if all said CAN_RECOVER:
        thaw MMIO (set-eeh-option 2)                             -> "mmio-thawed"
        mmio_enabled() on every driver                           -> "mmio-enabled"
    if still CAN_RECOVER:
        thaw DMA (set-eeh-option 3)                              -> "dma-thawed"
    if any said NEED_RESET:
        set-slot-reset 1 (hot) / 3 (fundamental), then 0; read-slot-reset-state2
        until state 0 (none once the PE's pe-reset-done came: a VF PE's comes
        before the release's reply); up to MAX_RESET_TRIES tries -> "reset"
        configure-pe; restore the saved config space (Command memory + bus master,
        MSI-X enable)                                           -> "configure"
        slot_reset() on every driver                             -> "slot-reset"
    resume() on every driver                                     -> "resume", "recovered"

Every step is reported to the platform (`report`, with guest_time), posted (the thread
does not wait for the reply; guest_drivers.services), except the outcome (`recovered`,
`permanent-failure`, ...), which waits: once it returns, the whole round is in the
platform's timeline. The round's posted reports are held (`Services.holding`): each goes
out in the same write as the round's next call, or before the thread waits. Waiting is event driven:
- a thaw, reset or configure answered -2 (busy: the VF PE is locked out while the
  adapter recovers) is reported as "unfreeze-refused"; the thread then sleeps until the
  platform pushes `lockout-lifted` for this PE (reported "lockout-lifted" with
  `by: event`), with the reply's `retry_ms` only as a bounded fallback timeout
  (`by: fallback`), and tries again (the "lockout-lifted" report goes once that call is
  answered: the platform answers every VF's first unfreeze after a lift in turn, and a
  report ahead of each would hold up the VFs after it). The call it will try again is
  registered with the channel before it sleeps (`Services.on_lift`, after the
  "unfreeze-refused" report is queued, so that report is written first): on the lift
  the channel's reader thread writes every registered call of the lifted PEs at once,
  before it wakes the threads, and the woken thread only takes its reply; with no lift
  by the fallback timeout the thread makes the call itself; a restart, a permanent
  failure or a stop drops it. So the timeline's order is as without it
  ("unfreeze-refused", the platform's `lockout-lifted`, the retried call, the driver's
  "lockout-lifted"), as Linux's EEH core re-issuing its parked PEs' unfreezes when told
  the adapter is back;
- while a reset settles (state 1, or 5 with a hint) it sleeps until `pe-reset-done`,
  or the hint;
- a new `pe-frozen` for this PE after recovery changed the PE's state (a thaw or reset
  succeeded) restarts recovery from error_detected ("restart"); one that arrives before
  is the freeze being handled;
- `permanent-failure` (pushed), state 5 with retry 0, or status -1 end it:
  error_detected(PERM_FAILURE) on every driver, "permanent-failure", and the outcome
  DISCONNECTED (the driver disconnects).

Detection: the platform's `pe-frozen` event (`on_event`), or a driver's all-ones read of
a register that cannot be all-ones, which only counts once read-slot-reset-state2 confirms
the PE is not in state 0 (`confirm_all_ones`), or that the function was reset (below).

An unexpected reset is a recovery. A reset this recovery did not ask for (the operator's
`eeh-reset-pe`, `Platform.reset_pe`, or the platform's own) leaves the PE in state 0 with
a function that lost its setup (Command register, MAC/VLAN/MTU, rings). The platform's
`pe-reset-done` for this PE pushed while no recovery runs starts one (trigger
`pe-reset-done`), and so does a driver's own sighting: an all-ones read with the PE in
state 0 whose function was reset, or a RESET_COUNT (BAR0 0x028) that moved. A driver says
what it saw with its optional `reset_behind() -> str | None` (the VF driver: Command lost
memory decoding / bus mastering, or RESET_COUNT differs from the value it last saw). Such a
round skips the thaws, as the PE is not frozen, and runs what follows a reset of its own:

    error_detected(FROZEN) on every driver     -> "error-detected" (trigger, `reset`: why)
    configure-pe; the saved config space restored -> "configure"
    slot_reset() on every driver                -> "slot-reset" (`reset`)
    resume() on every driver                    -> "resume", "recovered"

A `pe-reset-done` after which no driver sees a reset (its function as it was) ends the
round at once, with no report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from eeh_abi.hcall import CallTimeout, ChannelClosed, Event, HcallError, LiftRetry, Reply
from eeh_abi.papr import (
    ChannelState,
    EehOption,
    ErsResult,
    PeState,
    Status,
    merge_result,
)
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.recovery_steps import (
    RecoverySteps,
    RoundAborted,
    RoundFatal,
    RoundRestart,
    pe_status,
)
from guest_drivers.recovery_types import (
    Outcome,
    PeStatus,
    SavedConfig,
)
from guest_drivers.services import Services

log = logging.getLogger("guest_drivers.recovery")


def found_unrecovered(services: Services, pe: int) -> dict[str, Any] | None:
    """Before a driver's probe: the PE as the platform shows it if it is frozen (or locked
    out) or left recovering by a driver before this one (crashed mid-recovery): the probe
    is then a recovery (Driver._recover_at_probe). None when it is normal, permanently
    failed, or the platform cannot say (the probe goes as it would)."""
    try:
        r = services.call(Call.READ_SLOT_RESET_STATE2, pe=pe)
    except (ChannelClosed, HcallError, OSError):
        return None
    st = pe_status(r)
    if not r.ok or st.permanent or (st.state == PeState.NORMAL
                                    and "recovering" not in st.flags):
        return None
    return {"state": st.state, "flags": list(st.flags), "retry_ms": st.retry_ms}


class PeRecovery(RecoverySteps):
    """The recovery state machine of one PE. Events come in on any thread (`on_event`);
    `run()` runs on one driver thread when `pending` is set."""

    # The call a lockout refused, registered with the channel to be written on this PE's
    # lift (module docstring): armed only by the lockout's wait (`_lockout_wait` ->
    # `_wait`), taken by the round's next `_call` of the same call, dropped by any other
    # call, a `_check` that ends the round, and the round's end. Driver thread only.
    _last_call: tuple[Call, dict[str, Any]] | None = None
    _arming = False
    _retry: LiftRetry | None = None

    # ------------------------------------------------------------------ inputs
    @property
    def pending(self) -> bool:
        return self._pending and not self.failed

    @property
    def running(self) -> bool:
        return self._running

    @property
    def interrupted(self) -> bool:
        """A restart, a permanent failure or a stop is pending: a driver callback that
        waits (e.g. for "PF reset done") should give up and return."""
        return self._restart or self._permanent or self._closed

    def attach(self) -> None:
        self.services.listen_pe(self.pe, self.on_event)
        self.services.listen(self._on_reset_above, (Kind.PE_RESET_DONE,))

    def detach(self) -> None:
        self.services.unlisten_pe(self.pe, self.on_event)
        self.services.unlisten(self._on_reset_above)
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    def on_event(self, ev: Event) -> None:
        """A pushed platform event for this PE (reader thread: never blocks)."""
        wake = False
        with self._cv:
            if ev.name == Kind.PE_FROZEN:
                self._frozen_seq += 1
                self.last_freeze = dict(ev.data)
                if self._running:
                    if self._progressed:
                        self._restart = True
                else:
                    self._pending = True
                    self.trigger = Kind.PE_FROZEN
                    wake = True
            elif ev.name == Kind.LOCKOUT_LIFTED:
                self._lift_seq += 1
            elif ev.name == Kind.PERMANENT_FAILURE:
                self._permanent = True
                if not self._running:
                    self._pending = True
                    self.trigger = Kind.PERMANENT_FAILURE
                    wake = True
            elif ev.name == Kind.PE_RESET_DONE:
                self._reset_seq += 1
                if not ev.data.get("failed"):
                    self._reset_back_seq = self._reset_seq
                if not self._running and self.failed and not ev.data.get("failed"):
                    # a reset after the failure (the operator's, which clears a permanent
                    # failure): the driver may bring its function back (`revive`)
                    self.revive_requested = True
                    wake = True
                elif not self._running and not self.failed and not self._permanent:
                    # a reset this driver did not ask for (an operator's eeh-reset-pe, the
                    # platform's): a recovery, the function may have lost its setup
                    self._pending = True
                    self.trigger = Kind.PE_RESET_DONE
                    wake = True
            else:
                return
            self._cv.notify_all()
        if wake:
            self._wake()

    def _on_reset_above(self, ev: Event) -> None:
        """Any event of the partition (reader thread: never blocks). The platform pushes a
        PE's `pe-reset-done` to the owners of every PE below it, so one for another PE may
        be a reset of the PE above this one (the adapter PE above a VF PE), which clears
        a permanent failure of every PE below it: a failed recovery may revive."""
        if ev.name != Kind.PE_RESET_DONE or ev.pe == self.pe or ev.data.get("failed"):
            return
        with self._cv:
            if self._running or not self.failed:
                return
            self.revive_requested = True
            self._cv.notify_all()
        self._wake()

    def request(self, trigger: str) -> None:
        """Start a recovery (a driver's own detection, already confirmed)."""
        with self._cv:
            if not self._running:
                self._pending = True
                self.trigger = trigger
            self._cv.notify_all()
        self._wake()

    def revivable(self) -> bool:
        """After a failure, once a reset was pushed (this PE's or one above it): whether
        the PE is usable again, and if so made ready for the driver's new probe. Not while
        it is permanently failed (state 5, retry 0). A PE still frozen (a VF PE frozen
        with the adapter PE: the adapter's reset cleared the failure below it but thaws
        only itself) is reset as a recovery would; then configure-pe (the adapter PE:
        SR-IOV back, so its VFs exist again) and the saved config space restored."""
        with self._cv:
            self.revive_requested = False
        try:
            st = self._state()
        except RoundFatal:
            return False
        with self._cv:
            self._permanent = self._restart = False
            self._running = True  # the reset below is this recovery's own
        try:
            if st.state != PeState.NORMAL:
                self._reset()
            self._configure()
            return True
        except (RoundFatal, RoundRestart, RoundAborted) as e:
            log.warning("%s: not revived: %r", self.name, e)
            return False
        finally:
            self._drop_retry()
            with self._cv:
                self._running = False

    def revive(self, saved: Mapping[str, SavedConfig | None]) -> None:
        """The driver set its function up again after a failure the platform cleared:
        recovery starts afresh (`saved`: each participant's config space, by name)."""
        with self._cv:
            self.failed = False
            self._permanent = False
            self._pending = False
            self._restart = False
            self.revive_requested = False
        for p in self.participants:
            if p.name in saved:
                p.saved = saved[p.name]

    def confirm_all_ones(self, register: str, value: int) -> bool:
        """`register` read all-ones although it cannot: ask the platform for the PE's
        state. Only a state other than 0 counts (then recovery is pending: True)."""
        try:
            st = self._state()
        except RoundFatal as e:
            if e.permanent:
                self._permanent = True
                self.request(f"all-ones {register}")
                return True
            return False
        if st.state == PeState.NORMAL:
            why = self._reset_behind()
            if why is not None:  # the function was reset behind this driver's back
                self.confirmed += 1
                self._report(Kind.ALL_ONES_CONFIRMED, register=register, value=value,
                             state=st.state, reset=why)
                self.request(Kind.PE_RESET_DONE)
                return True
            self.false_alarms += 1
            if self.false_alarms <= 3:
                self._report(Kind.ALL_ONES_UNCONFIRMED, register=register, value=value)
            return False
        self.confirmed += 1
        self._report(Kind.ALL_ONES_CONFIRMED, register=register, value=value, state=st.state)
        with self._cv:  # the round this starts takes this state instead of reading it
            self._confirmed = (st, self._lift_seq, self._reset_seq)
        self.request(f"all-ones {register}")
        return True

    def _round_state(self) -> PeStatus:
        """The PE's state at the start of a round: the one `confirm_all_ones` read just
        before it requested this round, if no lift or reset was pushed since (the same
        thread, moments earlier: in a TCG guest the adapter driver's mailbox poll often
        reads all-ones before the freeze's push is handled, and a second read cost a
        round trip before the lockout's release); else read now."""
        with self._cv:
            known, self._confirmed = self._confirmed, None
        if known is not None and known[1:] == (self._lift_seq, self._reset_seq):
            return known[0]
        return self._state()

    # ------------------------------------------------------------------ the run
    def run(self) -> Outcome:
        with self.services.holding():  # the round's reports go out with its next call
            return self._run()

    def _run(self) -> Outcome:
        with self._cv:
            self._running = True
            self._pending = False
        try:
            while True:
                with self._cv:
                    self._restart = False
                    self._progressed = False
                self.rounds += 1
                try:
                    outcome = self._round()
                except RoundRestart:
                    self.restarts += 1
                    self._report(Kind.RESTART, reason="a new freeze during recovery",
                                 freeze=dict(self.last_freeze))
                    continue
                except RoundFatal as e:
                    outcome = self._fail(e.reason, e.permanent)
                except RoundAborted:
                    self._report(Kind.ABORTED, reason="the driver is stopping")
                    outcome = Outcome.ABORTED
                return outcome
        finally:
            self._drop_retry()
            with self._cv:
                self._running = False
                # a freeze pushed after the round's last check and before this return
                # would be lost (on_event only marks a restart while running): start again
                again = self._restart and not self._permanent and not self._closed
                self._restart = False
                if again:
                    self._pending = True
                    self.trigger = Kind.PE_FROZEN
            if again:
                self._wake()

    def _round(self) -> Outcome:
        self._t0 = self._clock()
        marks: dict[str, float] = {}
        self.timings.append(marks)
        if self._permanent:
            raise RoundFatal("the platform reported a permanent failure")
        st = self._round_state()
        reset = self._reset_behind() if st.state == PeState.NORMAL else None
        if st.state == PeState.NORMAL and reset is None:
            if self.trigger == Kind.PE_RESET_DONE:
                return Outcome.RECOVERED  # a reset that left this function as it was
            # a freeze seen before this round thawed it: nothing is frozen any more
            self._report(Kind.NO_FREEZE, trigger=self.trigger)
            return Outcome.RECOVERED
        result = self._each("error_detected", ErsResult.NONE, ChannelState.FROZEN)
        detail: dict[str, Any] = {"reset": reset} if reset is not None else {}
        self._report(Kind.ERROR_DETECTED, result=result.name, state=st.state,
                     trigger=self.trigger, freeze=dict(self.last_freeze), **detail)
        marks[Kind.ERROR_DETECTED] = self._ms()
        self._check()
        if result == ErsResult.DISCONNECT:
            raise RoundFatal("a driver asked to disconnect", permanent=False)
        if reset is not None:
            # the PE is back in state 0 after a reset it did not ask for: what follows a
            # reset of its own (configure-pe, the config space restored, slot_reset)
            self._configure()
            marks[Kind.CONFIGURE] = self._ms()
            result = self._each("slot_reset", ErsResult.NONE)
            self._report(Kind.SLOT_RESET, result=result.name, reset=reset)
            marks[Kind.SLOT_RESET] = self._ms()
            self._check()
            if result == ErsResult.DISCONNECT:
                raise RoundFatal("a driver asked to disconnect", permanent=False)
        elif result == ErsResult.CAN_RECOVER:
            self._thaw(EehOption.THAW_MMIO)
            self._report(Kind.MMIO_THAWED)
            marks[Kind.MMIO_THAWED] = self._ms()
            result = self._each("mmio_enabled", result)
            self._report(Kind.MMIO_ENABLED, result=result.name)
            self._check()
            if result == ErsResult.DISCONNECT:
                raise RoundFatal("a driver asked to disconnect", permanent=False)
        if result == ErsResult.CAN_RECOVER and reset is None:
            self._thaw(EehOption.THAW_DMA)
            self._report(Kind.DMA_THAWED)
            marks[Kind.DMA_THAWED] = self._ms()
            result = ErsResult.RECOVERED
        tries = 0
        while result == ErsResult.NEED_RESET:
            tries += 1
            if tries > len(self.policy.reset_kinds):
                raise RoundFatal("the PE did not recover after resets")
            self._reset()
            marks[Kind.RESET] = self._ms()
            self._configure()
            marks[Kind.CONFIGURE] = self._ms()
            result = self._each("slot_reset", ErsResult.NONE)
            self._report(Kind.SLOT_RESET, result=result.name)
            marks[Kind.SLOT_RESET] = self._ms()
            self._check()
            if result == ErsResult.DISCONNECT:
                raise RoundFatal("a driver asked to disconnect", permanent=False)
        for p in self.participants:
            try:
                p.handlers.resume()
            except Exception as e:
                log.exception("%s: resume failed", p.name)
                self._report(Kind.DRIVER_ERROR, driver=p.name, callback="resume", error=repr(e))
        self._report(Kind.RESUME)
        marks[Kind.RESUME] = self._ms()
        self._report(Kind.RECOVERED, ms=self._ms(), rounds=self.rounds, **self._details())
        self.recovered += 1  # after the report: whoever watches this sees it reported
        return Outcome.RECOVERED

    # ------------------------------------------------------------------ retries on a lift
    def _call(self, call: Call, **args: Any) -> Reply:
        retry, self._retry = self._retry, None
        reply = None
        if retry is not None:
            if retry.call == call and retry.args == {"pe": self.pe, **args}:
                reply = self._retried(retry)
            else:
                self.services.drop_retry(retry)
        if reply is None:
            reply = super()._call(call, **args)
        self._last_call = (call, args)
        return reply

    def _retried(self, retry: LiftRetry) -> Reply | None:
        """The registered call's reply (written by the channel's reader on the lift, or
        now if none came); None after a reply timeout (`_call` calls again)."""
        try:
            reply = self.services.retry_reply(retry)
        except CallTimeout:
            return None
        except (ChannelClosed, HcallError, OSError) as e:
            raise RoundFatal(f"{retry.call}: platform channel lost ({e})",
                             permanent=False) from None
        self._report_lift()
        return reply

    def _lockout_wait(self, reply: Reply, seq: int, call: str) -> None:
        self._arming = reply.status == Status.BUSY
        try:
            super()._lockout_wait(reply, seq, call)
        finally:
            self._arming = False

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        if self._arming and self._last_call is not None and self._retry is None:
            # after the refusal's report was queued, before the flush and the sleep
            self._arming = False
            call, args = self._last_call
            self._retry = self.services.on_lift(call, self.pe, **args)
        return super()._wait(cond, timeout)

    def _check(self) -> None:
        try:
            super()._check()
        except BaseException:
            self._drop_retry()
            raise

    def _drop_retry(self) -> None:
        retry, self._retry = self._retry, None
        if retry is not None:
            self.services.drop_retry(retry)

    def _details(self) -> dict[str, Any]:
        """What the drivers add to "recovered" (`recovery_detail()`, optional): a VF
        driver's ledger and its configuration before and after."""
        found: dict[str, dict[str, Any]] = {}
        for p in self.participants:
            fn = getattr(p.handlers, "recovery_detail", None)
            if fn is None:
                continue
            try:
                found[p.name] = dict(fn())
            except Exception as e:
                found[p.name] = {"error": repr(e)}
        if len(found) == 1:
            return next(iter(found.values()))
        return {"drivers": found} if found else {}

    def _reset_behind(self) -> str | None:
        """What a driver saw of a reset of its function it did not ask for (its optional
        `reset_behind() -> str | None`), or None: nothing was reset."""
        for p in self.participants:
            fn = getattr(p.handlers, "reset_behind", None)
            if fn is None:
                continue
            try:
                why = fn()
            except Exception as e:  # the function went away: the driver will see it
                log.debug("%s: reset_behind failed: %r", p.name, e)
                continue
            if why:
                return f"{p.name}: {why}"
        return None

    def _each(self, callback: str, start: ErsResult, *args: Any) -> ErsResult:
        result = start
        for p in self.participants:
            try:
                r = ErsResult(getattr(p.handlers, callback)(*args))
            except Exception as e:
                log.exception("%s: %s failed", p.name, callback)
                self._report(Kind.DRIVER_ERROR, driver=p.name, callback=callback, error=repr(e))
                r = ErsResult.DISCONNECT
            result = merge_result(result, r)
        return result

    def _fail(self, reason: str, permanent: bool) -> Outcome:
        self.failed = True
        for p in self.participants:
            try:
                p.handlers.error_detected(ChannelState.PERM_FAILURE)
            except Exception:
                log.exception("%s: error_detected(PERM_FAILURE) failed", p.name)
        self._report(Kind.PERMANENT_FAILURE if permanent else Kind.DISCONNECT, reason=reason)
        return Outcome.DISCONNECTED
