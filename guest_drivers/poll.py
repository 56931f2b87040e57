"""Adaptive polling: busy while work flows, asleep when idle, woken at once by a send.

Userspace drivers here have no interrupt handler of their own (a guest's MSI-X goes to
the kernel), so each driver thread polls its descriptors in DMA memory. Polling must not
burn a shared CPU: after the last piece of work the thread keeps looking for `busy_s`
(yielding the CPU between looks), then sleeps, doubling the sleep from `min_sleep_s` up
to `max_sleep_s`. Sleeping is a wait on the driver's wake event, so `send()`, a platform
event or a stop request ends the sleep at once.

Idle pollers park: a poller whose sleep has reached `park_after_s` and whose driver can
say cheaply whether it has work (`pending`: a look at DMA memory, no MMIO, safe from
another thread) hands that look to the process's one `IdleWatch` thread and sleeps until
woken or `health_s` has passed (the driver's health check is due then anyway). The watch
looks at every parked poller each `max_sleep_s` and wakes those with work: N idle drivers
cost one wake-up per period, not N. A poller settled in that state (its last park ended
by the watch or by its health timeout, not by a send or an event) parks again as soon
as a look finds nothing `pending`, without the sleeps in between: sparse work (a probe
now and then) costs one wake-up per piece, not the ladder's three; and the watch may look
at it less often (`settled_watch_s`; the agent in a guest: 0.1 s): a look of the watch
over eight parked VF drivers cost ~1 ms of a TCG guest's CPU, 33 a second were half of an
idle guest's (docs/reliability.md; in harness mode the default, `max_sleep_s`, is kept:
there a look is cheap). In a TCG guest a wake-up of a sleeping thread (timer, futex,
scheduler, the Python loop around it) costs ~0.5 ms of host CPU: eight idle VF drivers
waking 33 times a second each kept ~0.13 of a host CPU busy per guest, more than an
adapter error's recovery of the eight costs (docs/reliability.md).

Spinning is shared: at most `spinners` threads of a process (default: one less than its
CPUs, so none in a one-CPU guest) are in their busy phase at once; the others go straight
to sleeping.
Many drivers in one process (the harness runs 64 VF drivers as threads) would otherwise
each spin after every frame: at 64 VFs under 20 probes/s each, that alone kept about 0.7
of a CPU busy and slowed everything else in the process (bench.recovery).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PollConfig:
    busy_s: float = 0.002  # keep looking this long after the last work
    min_sleep_s: float = 0.0005
    max_sleep_s: float = 0.03  # idle, not settled: at most ~33 looks a second
    health_s: float = 1.0  # idle: read a register that cannot be all-ones this often
    # threads of the process spinning at once; None: CPUs - 1 (none on one CPU: a spin
    # there only delays the thread that would make the work, and under TCG each spin
    # costs its whole busy_s of host CPU)
    spinners: int | None = None
    # a poller that can park (`pending`) does so once its sleep has doubled up to this
    park_after_s: float = 0.001
    # the watch's period for a settled poller (sparse work, or none; None: max_sleep_s):
    # each look costs ~1 ms of host CPU in a TCG guest (8 parked VF drivers), so there
    # (the agent: 0.1 s) the settled steady state is looked at less often than a poller
    # just woken by an event or a send (max_sleep_s: the first frames after a recovery or
    # a send are seen as soon as before)
    settled_watch_s: float | None = None


class SpinSlots:
    """Who may spin now: poller -> the end of its busy phase (expired entries are free,
    so a thread that stops while spinning holds nothing)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._until: dict[int, float] = {}

    def take(self, who: int, until: float, limit: int) -> bool:
        now = time.monotonic()
        with self._lock:
            live = {k: v for k, v in self._until.items() if v > now}
            if who in live or len(live) < limit:
                live[who] = until
                self._until = live
                return True
            self._until = live
            return False


class IdleWatch:
    """Looks at parked pollers' `pending()` every period (the shortest of theirs) and wakes
    those with work. Invariant: its thread runs while a poller is parked and ends once
    none has been for `linger_s` (started by the next park), so a process whose drivers
    all stopped keeps no thread of the watch. The linger: probes to every VF at once wake
    every parked driver in one look; a thread ended there and started again at the next
    park cost a thread's start per round of probes (in a TCG guest a few ms of host CPU).
    Between looks it sleeps its period; a period above `wait_above_s` (settled pollers
    only) is a wait on its condition instead, which a park asking for a shorter one ends
    (the watch then looks at the new shortest period from then): a poller parked just
    after a recovery is looked at within its own period, not the settled ones'."""

    def __init__(self, linger_s: float = 0.5, wait_above_s: float = 0.05) -> None:
        self.linger_s = linger_s
        self.wait_above_s = wait_above_s
        self._waiting = 0.0  # the period the thread waits out on the condition (0: none)
        self._cv = threading.Condition()
        # poller -> (its pending(), what wakes it, its period)
        self._parked: dict[int, tuple[Callable[[], bool], Callable[[], None], float]] = {}
        self._thread: threading.Thread | None = None
        self._lingering = False  # the thread waits out linger_s with nobody parked
        self.looks = 0  # passes over the parked pollers
        self.woken = 0  # pollers woken with work pending
        self.threads = 0  # threads started

    def park(self, who: int, pending: Callable[[], bool], wake: Callable[[], None],
             period_s: float) -> None:
        """Look at `pending()` each `period_s` and call `wake()` (once) when it is true."""
        with self._cv:
            self._parked[who] = (pending, wake, period_s)
            if self._thread is None:
                self.threads += 1
                self._thread = threading.Thread(target=self._run, name="idle-watch",
                                                daemon=True)
                self._thread.start()
            elif self._lingering:  # its periods start again from this park
                self._lingering = False
                self._cv.notify()
            elif 0.0 < period_s < self._waiting:  # a shorter period: from now on
                self._waiting = 0.0
                self._cv.notify()

    @property
    def running(self) -> bool:
        """Whether the watch's thread runs (it ends linger_s after the last unpark)."""
        return self._thread is not None

    def unpark(self, who: int) -> None:
        # the last one out wakes nobody: the thread sees it at the end of its period,
        # unless that is a long wait (settled pollers'): then at once, so that the
        # thread ends linger_s after the last driver stopped, not a long period later
        with self._cv:
            self._parked.pop(who, None)
            if not self._parked and self._waiting:
                self._waiting = 0.0
                self._cv.notify()

    def _run(self) -> None:
        empty_since: float | None = None
        while True:
            with self._cv:
                if not self._parked:
                    now = time.monotonic()
                    empty_since = now if empty_since is None else empty_since
                    if now - empty_since >= self.linger_s:
                        self._thread = None  # under the lock: the next park starts another
                        self._lingering = False
                        return
                    self._lingering = True
                    self._cv.wait(self.linger_s - (now - empty_since))
                    continue
                empty_since = None
                period = min(p for _, _, p in self._parked.values())
                if period > self.wait_above_s:
                    self._waiting = period
                    cut = self._cv.wait(period)  # notified: a park wants a shorter period
                    self._waiting = 0.0
                    if cut:
                        continue
            if period <= self.wait_above_s:
                time.sleep(period)  # short: a park joins the next look
            with self._cv:
                parked = list(self._parked.items())
            self.looks += 1
            for who, (pending, wake, _) in parked:
                try:
                    due = pending()
                except Exception:  # the driver's function went away: it will see why
                    due = True
                if due:
                    self.woken += 1
                    self.unpark(who)
                    wake()


_SLOTS = SpinSlots()  # the process's
WATCH = IdleWatch()  # the process's (its counters: benchmarks, tests)
_DEFAULT_SPINNERS = max(0, (os.cpu_count() or 1) - 1)


class AdaptivePoller:
    def __init__(self, cfg: PollConfig, wake: threading.Event,
                 slots: SpinSlots | None = None, *,
                 pending: Callable[[], bool] | None = None,
                 watch: IdleWatch | None = None) -> None:
        """`pending`: whether the driver has work, cheaply and from any thread (None:
        the poller never parks and wakes itself every `max_sleep_s` when idle)."""
        self.cfg = cfg
        self._slots = slots or _SLOTS
        self._pending = pending
        self._watch = watch or WATCH
        self._wake = wake
        self._sleep = 0.0
        self._last_work = time.monotonic()
        self._spin_until = 0.0  # the end of the busy phase this poller holds a slot for
        self._spinners = _DEFAULT_SPINNERS if cfg.spinners is None else cfg.spinners
        self.sleeps = 0  # every sleep of the thread (ladder or park): its wake-ups
        self.woken = 0  # sleeps ended early by the wake event
        self.spins_skipped = 0  # busy phases given up: other threads were spinning
        self.parked = 0  # idle sleeps handed to the IdleWatch
        self.parked_at_once = 0  # of them, parks without the busy phase and the sleeps
        # the last park ended by the watch (work it saw) or by the health timeout, not
        # by someone's wake: the driver is in its sparse steady state
        self._settled = False
        self._by_watch = False  # set by the watch's wake, before the event

    def idle(self, did_work: bool) -> None:
        """Call once per loop iteration with whether it did anything. Settled, the
        poller parks as soon as `pending` says there is nothing left (after work too: no
        second look of the driver's own; anything else, a send, an event, a setting, sets
        the wake event, which ends the park at once)."""
        pending = self._pending
        if self._settled and pending is not None and not pending():
            self.parked_at_once += 1  # sparse work done: no busy phase, no ladder
            self.sleeps += 1
            self._park(pending)
            return
        if did_work:
            self._last_work = time.monotonic()
            self._sleep = 0.0
            return
        now = time.monotonic()
        until = self._last_work + self.cfg.busy_s
        if now < until:
            if until <= self._spin_until or self._slots.take(id(self), until, self._spinners):
                self._spin_until = until
                time.sleep(0)  # yield: traffic is likely to continue
                return
            self.spins_skipped += 1
            self._last_work = now - self.cfg.busy_s  # this busy phase is over
        at_max = self._sleep >= min(self.cfg.park_after_s, self.cfg.max_sleep_s)
        self._sleep = min(self.cfg.max_sleep_s, max(self.cfg.min_sleep_s, self._sleep * 2))
        self.sleeps += 1
        if at_max and pending is not None:
            self._park(pending)
            return
        if self._wake.wait(self._sleep):
            self.woken += 1
            self._settled = False
            self._sleep = 0.0
            self._last_work = time.monotonic()
        self._wake.clear()

    def _park(self, pending: Callable[[], bool]) -> None:
        """Idle, its sleep doubled up to `park_after_s`: the watch looks for work instead."""
        self.parked += 1
        self._sleep = self.cfg.max_sleep_s
        self._by_watch = False
        # settled: its work is sparse (or none), looked at each settled_watch_s; woken
        # by an event or a send, each max_sleep_s (what comes next comes soon)
        period = self.cfg.max_sleep_s
        if self._settled and self.cfg.settled_watch_s is not None:
            period = max(period, self.cfg.settled_watch_s)
        self._watch.park(id(self), pending, self._watch_wake, period)
        try:
            woken = self._wake.wait(max(self.cfg.health_s, self.cfg.max_sleep_s))
        finally:
            self._watch.unpark(id(self))
        self._wake.clear()
        self._settled = not woken or self._by_watch
        if woken:
            self.woken += 1
            self._sleep = 0.0
            self._last_work = time.monotonic()

    @property
    def settled(self) -> bool:
        """In the sparse steady state (see the module docstring): the driver's `pending`
        may let work that can wait (TX completions) wait for its next wake-up."""
        return self._settled

    def _watch_wake(self) -> None:
        self._by_watch = True
        self._wake.set()

    @property
    def current_sleep(self) -> float:
        return self._sleep
