"""What the PF and VF drivers share: a worker thread per function that probes, polls,
checks the function's health and runs its PE's recovery.

All hardware access of a driver happens on its worker thread (API calls from other
threads queue their work and wake it), so the data path and recovery never race. The
thread sleeps adaptively when idle (guest_drivers.poll). A driver with error handlers
owns a `PeRecovery` for its PE and is woken by the platform's events; one without
(`handlers=False`) registers as such and does nothing on an error: the platform removes
its function and adds it back after recovery (`detach` / `reattach`).

`recovery_lock` (optional, shared by several drivers): a driver holds it for the whole of
each recovery run, so the drivers sharing it recover one after another, as Linux's
single EEH recovery thread does (the agent's `serial_recovery`: a baseline for
benchmarks; by default every driver recovers on its own thread, in parallel).
"""

from __future__ import annotations

import abc
import enum
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from eeh_abi import nic
from eeh_abi.hcall import ChannelClosed, HcallError
from eeh_abi.papr import ChannelState, ErsResult
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.platform.base import FunctionAccess, FunctionGone
from guest_drivers.platform.errors import PlatformError
from guest_drivers.poll import AdaptivePoller, PollConfig
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome, Participant, RecoveryPolicy, SavedConfig
from guest_drivers.services import Services

log = logging.getLogger("guest_drivers")

ALL_ONES32 = 0xFFFFFFFF


MEM_BME = int(nic.Command.MEMORY | nic.Command.BUS_MASTER)


class DriverError(PlatformError):
    """A driver could not do what was asked (probe failed, bad setting)."""


class DriverState(enum.Enum):
    NEW = "new"
    UP = "up"
    RECOVERING = "recovering"
    FAILED = "failed"  # permanent failure or disconnected: does nothing until its PE
    # is reset (the operator's reset clears a permanent failure): then it probes again
    DETACHED = "detached"  # its function was removed
    STOPPED = "stopped"


class Driver(abc.ABC):
    kind = "?"
    driver_name = "eeh-?"
    health_register = nic.STATUS  # a register that cannot read all-ones

    def __init__(self, fn: FunctionAccess, services: Services, *, handlers: bool = True,
                 poll: PollConfig | None = None, policy: RecoveryPolicy | None = None,
                 recovery_lock: threading.Lock | None = None) -> None:
        self.fn = fn
        self.services = services
        self.name = fn.name
        self.pe = fn.info.pe
        self.addr = fn.info.addr
        self.handlers = handlers
        self.poll_cfg = poll or PollConfig()
        self.policy = policy
        self.recovery_lock = recovery_lock
        self.state = DriverState.NEW
        self.saved: SavedConfig | None = None
        self.recovery: PeRecovery | None = None
        self.probe_error: BaseException | None = None
        self.probes = 0
        self.io_errors = 0
        self.all_ones_seen = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._probed = threading.Event()
        self.poller = AdaptivePoller(self.poll_cfg, self._wake, pending=self.idle_pending())
        self._thread: threading.Thread | None = None
        self._last_health = 0.0
        self._resets_seen = 0  # the function's RESET_COUNT when this driver last set it up
        self.set_up = False  # probed (the function set up by this driver) at least once

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.state.value}>"

    # ------------------------------------------------------------------ lifecycle
    def start(self, wait: float | None = 60.0) -> None:
        """Probe on the driver's thread, then run. With `wait`, block until the probe is
        done and raise its error (DriverError) if it failed."""
        if self._thread is not None and self._thread.is_alive():
            raise DriverError(f"{self.name}: already running")
        self._stop.clear()
        self._probed.clear()
        self.probe_error = None
        self._thread = threading.Thread(target=self._main, name=f"drv-{self.name}",
                                        daemon=True)
        self._thread.start()
        if wait is not None:
            self.wait_probed(wait)

    def wait_probed(self, timeout: float) -> None:
        if not self._probed.wait(timeout):
            raise DriverError(f"{self.name}: probe did not finish within {timeout} s")
        if self.probe_error is not None:
            raise DriverError(f"{self.name}: probe failed: {self.probe_error}") \
                from self.probe_error

    def wake(self) -> None:
        self._wake.set()

    def request_stop(self) -> None:
        """Ask the thread to stop and wake it; returns at once (`stop` waits)."""
        self._stop.set()
        if self.recovery is not None:
            self.recovery.detach()
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the thread (the function is left as it is). False if the thread was still
        running after `timeout`: it is let go (a daemon thread) and where it was stuck is
        logged, its stack with it."""
        self.request_stop()
        t = self._thread
        stopped = True
        if t is not None and t is not threading.current_thread():
            t.join(max(0.0, timeout))
            if t.is_alive():
                stopped = False
                frame = sys._current_frames().get(t.ident or -1)
                where = "".join(traceback.format_stack(frame)) if frame is not None else "?"
                log.warning("%s: thread did not stop within %.1f s; it was at:\n%s",
                            self.name, timeout, where)
        if self.state not in (DriverState.FAILED, DriverState.DETACHED):
            self.state = DriverState.STOPPED
        return stopped

    def detach(self, reason: str) -> None:
        """The function was removed: stop, account for what was pending, let it go."""
        self.stop()
        self.on_detach(reason)
        try:
            self.fn.close()
        except Exception:  # the function is gone already: closing what is left may fail
            log.debug("%s: closing the removed function failed", self.name, exc_info=True)
        self.state = DriverState.DETACHED
        self.services.report(Kind.DETACH, self.pe, {"driver": self.name, "reason": reason})

    def reattach(self, fn: FunctionAccess, wait: float | None = 60.0) -> None:
        """The function is back (re-added by the platform): probe it again and run."""
        self.fn = fn
        self.pe = fn.info.pe
        self.addr = fn.info.addr
        self.start(wait)

    # ------------------------------------------------------------------ the thread
    def _main(self) -> None:
        try:
            self.probes += 1
            found = self.found_unrecovered() if self.handlers else None
            if found is None:
                self.probe()
                self.set_up = True
                self.saved = SavedConfig.save(self.fn)
            self._register()
            if self.handlers:
                self.recovery = PeRecovery(
                    self.services, self.pe, [Participant(self.name, self, self.fn, self.saved)],
                    name=self.name, policy=self.recovery_policy(), wake=self.wake)
                self.recovery.attach()
                if found is not None:
                    self._recover_at_probe(self.recovery, found)
            else:
                self.recovery = None
            self.state = DriverState.UP
            self.services.report(Kind.PROBE, self.pe, {"driver": self.name,
                                                    "handlers": self.handlers,
                                                    **self.probe_detail()})
        except BaseException as e:  # reported to whoever waits for the probe
            self.probe_error = e
            self.state = DriverState.FAILED
            log.exception("%s: probe failed", self.name)
            self.services.report(Kind.PROBE_FAILED, self.pe, {"driver": self.name,
                                                           "error": repr(e)})
            return
        finally:
            self._probed.set()
        try:
            self._loop()
        except Exception as e:
            log.exception("%s: driver thread failed", self.name)
            self.state = DriverState.FAILED
            self.services.report(Kind.DRIVER_ERROR, self.pe, {"driver": self.name,
                                                           "error": repr(e)})

    def _loop(self) -> None:
        while not self._stop.is_set():
            rec = self.recovery
            if rec is not None and rec.pending:
                self.state = DriverState.RECOVERING
                outcome = self._run_recovery(rec)
                if outcome is Outcome.ABORTED:
                    break
                if outcome is Outcome.DISCONNECTED:
                    self.state = DriverState.FAILED
                    self.on_disconnected()
                    if not self._wait_revival(rec):
                        return
                self.state = DriverState.UP
                continue
            try:
                did = self.poll()
                now = time.monotonic()
                if now - self._last_health >= self.poll_cfg.health_s or self.health_due(now):
                    self._last_health = now
                    self.check_health()
            except FunctionGone as e:
                self.io_errors += 1
                log.warning("%s: %s", self.name, e)
                self.services.report(Kind.FUNCTION_GONE, self.pe, {"driver": self.name,
                                                                "why": e.why})
                self.state = DriverState.FAILED
                return
            self.poller.idle(did)

    def _recover_at_probe(self, rec: PeRecovery, found: dict[str, Any]) -> None:
        """The PE was found frozen or left recovering (`found_unrecovered`): the probe is
        a recovery of it (the driver's slot_reset sets the function up, as its probe
        would), run on this thread before the driver is UP."""
        self.services.report(Kind.FOUND_FROZEN, self.pe, {"driver": self.name, **found})
        self.state = DriverState.RECOVERING
        rec.request(Kind.FOUND_FROZEN)
        outcome = self._run_recovery(rec)
        if outcome is not Outcome.RECOVERED or not self.set_up:
            raise DriverError(f"{self.name}: the PE found unrecovered at probe "
                              f"({found}) did not recover: {outcome.name.lower()}")
        self.saved = SavedConfig.save(self.fn)
        for p in rec.participants:
            if p.name == self.name:
                p.saved = self.saved

    def _wait_revival(self, rec: PeRecovery) -> bool:
        """FAILED: sleep until the driver stops (False) or its PE is reset and usable
        again (the operator's reset after a permanent failure, which the platform pushes
        as `pe-reset-done`): then probe the function again (True, the driver is UP)."""
        while not self._stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stop.is_set() or not rec.revive_requested or not rec.revivable():
                continue
            try:
                self.probes += 1
                self.probe()
                self.saved = SavedConfig.save(self.fn)
            except Exception as e:  # still failed: wait for the next reset
                log.warning("%s: probe after the reset failed: %r", self.name, e)
                self.services.report(Kind.PROBE_FAILED, self.pe, {
                    "driver": self.name, "error": repr(e), "revived": False})
                continue
            rec.revive({self.name: self.saved})
            self.services.report(Kind.PROBE, self.pe, {"driver": self.name,
                                                    "handlers": self.handlers,
                                                    "revived": True, **self.probe_detail()})
            return True
        return False

    def _run_recovery(self, rec: PeRecovery) -> Outcome:
        lock = self.recovery_lock
        if lock is None:
            return rec.run()
        while not lock.acquire(timeout=0.05):  # serial: wait for the drivers before us
            if self._stop.is_set():
                return Outcome.ABORTED
        try:
            return rec.run()
        finally:
            lock.release()

    def enable_function(self) -> None:
        """The first step of a probe (Linux's pci_enable_device + pci_set_master): the
        function enabled, then memory decoding and bus mastering in its Command register."""
        fn = self.fn
        fn.enable()
        cmd = fn.config_read(nic.CFG_COMMAND, 2)
        if cmd == 0xFFFF:
            raise DriverError(f"{self.name}: config space reads all-ones (frozen or absent)")
        fn.config_write(nic.CFG_COMMAND, 2, cmd | MEM_BME)

    def check_health(self) -> None:
        value = self.fn.read32(self.health_register)
        if value == ALL_ONES32:
            self.saw_all_ones("STATUS", value)
            return
        rec = self.recovery
        if rec is None or rec.pending or rec.running or rec.failed:
            return
        count = self.fn.read32(nic.RESET_COUNT)
        if count != ALL_ONES32 and count != self._resets_seen:
            # reset behind this driver's back and its pe-reset-done not seen (yet)
            rec.request(Kind.PE_RESET_DONE)

    def note_resets(self) -> None:
        """The function is set up (probe, slot_reset): remember its RESET_COUNT."""
        self._resets_seen = self.fn.read32(nic.RESET_COUNT)

    def reset_behind(self) -> str | None:
        """Whether the function was reset since this driver last set it up (an operator's
        or the platform's reset, not asked for by its recovery): its Command register lost
        memory decoding, or its RESET_COUNT moved. Asked by the recovery with the PE in
        state 0 (guest_drivers.recovery: an unexpected reset is a recovery). A function
        this driver never set up (found left recovering at probe) counts as reset."""
        if not self.set_up:
            return "not set up yet: found left recovering at probe"
        cmd = self.fn.config_read(nic.CFG_COMMAND, 2)
        if cmd != 0xFFFF and cmd & MEM_BME != MEM_BME:
            return f"command {cmd:#06x}: memory decoding or bus mastering off"
        count = self.fn.read32(nic.RESET_COUNT)
        if count != ALL_ONES32 and count != self._resets_seen:
            return f"RESET_COUNT {self._resets_seen} -> {count}"
        return None

    def saw_all_ones(self, register: str, value: int) -> bool:
        """A read returned all-ones where that cannot be: start recovery if the platform
        confirms the PE is not normal. False without handlers or when unconfirmed."""
        self.all_ones_seen += 1
        rec = self.recovery
        if rec is None or rec.pending or rec.running or rec.failed:
            return False
        return rec.confirm_all_ones(register, value)

    def _register(self) -> None:
        try:
            r = self.services.call(Call.REGISTER, addr=self.addr, driver=self.driver_name,
                                   handlers=self.handlers)
        except (ChannelClosed, HcallError) as e:
            raise DriverError(f"{self.name}: register: {e}") from None
        if not r.ok:
            raise DriverError(f"{self.name}: register refused: {r.status} {r.error or ''}")

    # ------------------------------------------------------------------ subclass hooks
    @abc.abstractmethod
    def probe(self) -> None:
        """Bring the function up (on the driver's thread)."""

    @abc.abstractmethod
    def poll(self) -> bool:
        """One look at the function; True if there was work."""

    def idle_pending(self) -> Callable[[], bool] | None:
        """What an idle poller may hand to the process's IdleWatch (guest_drivers.poll):
        whether `poll()` has work, from any thread, without MMIO. None (the default):
        the driver wakes itself every max_sleep_s when idle."""
        return None

    def health_due(self, now: float) -> bool:
        """Whether to check health before the next scheduled time (e.g. TX stuck)."""
        return False

    def probe_detail(self) -> dict[str, Any]:
        return {}

    def found_unrecovered(self) -> dict[str, Any] | None:
        """Before the probe: what the platform says of this driver's PE if it is not usable
        as it is and this driver recovers it first (the adapter driver: a frozen adapter
        PE, or one its previous driver left recovering); None: probe as usual."""
        return None

    def recovery_policy(self) -> RecoveryPolicy:
        return self.policy or RecoveryPolicy()

    def on_detach(self, reason: str) -> None:  # noqa: B027 - optional hook
        """Account for everything pending: the function is gone."""

    def on_disconnected(self) -> None:  # noqa: B027 - optional hook
        """Recovery ended in a permanent failure (after error_detected(PERM_FAILURE))."""

    # Linux's pci_error_handlers (see guest_drivers.recovery)
    @abc.abstractmethod
    def error_detected(self, state: ChannelState) -> ErsResult: ...

    @abc.abstractmethod
    def mmio_enabled(self) -> ErsResult: ...

    @abc.abstractmethod
    def slot_reset(self) -> ErsResult: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    def report(self, step: Kind, **detail: Any) -> None:
        """A step of this driver (posted: guest_drivers.services)."""
        self.services.report(step, self.pe, {"driver": self.name, **detail}, wait=False)

    def counters(self) -> dict[str, Any]:
        rec = self.recovery
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "state": self.state.value,
                               "handlers": self.handlers, "probes": self.probes,
                               "all_ones_seen": self.all_ones_seen, "io_errors": self.io_errors,
                               "poll_sleeps": self.poller.sleeps}
        if rec is not None:
            out["recovery"] = {"rounds": rec.rounds, "recovered": rec.recovered,
                               "restarts": rec.restarts, "lockout_waits": rec.lockout_waits,
                               "lockout_woken_by_event": rec.lockout_woken_by_event,
                               "lockout_fallbacks": rec.lockout_fallbacks,
                               "confirmed": rec.confirmed, "false_alarms": rec.false_alarms,
                               "failed": rec.failed}
        return out
