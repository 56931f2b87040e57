"""A watchdog for the device model's loop thread: a loop that stops answering is caught.

    dog = Watchdog(lambda: host.server.loop, limit_ms=2000, on_stall=fail)
    dog.start()     # a thread of its own, outside the loop it watches
    ...
    dog.stop()      # before the loop is stopped on purpose

The model, the PE policy and the platform channels run on one loop thread
(`AdapterHost`). If a callback on it never returns (an endless loop, a deadlock: the
thread is alive, only stalled), nothing on that loop can notice. The watchdog's thread
schedules a no-op on the loop (`call_soon_threadsafe`) every `limit_ms / 4` and checks
that it ran: when one has waited more than `limit_ms`, it calls `on_stall(ModelStalled)`
once, on its own thread, and stops watching (the platform fails the model cleanly:
`Platform._model_stalled`, docs/reliability.md). A watchdog that itself overslept (the
whole process stopped or starved of CPU, as under a debugger or SIGSTOP) starts its
measure again instead of blaming the loop.

The limit is `PlatformConfig.watchdog_ms`: DEFAULT_WATCHDOG_MS (2000) by default, 0 for
no watchdog, else between MIN_WATCHDOG_MS and MAX_WATCHDOG_MS. Why 2000: well above the
longest legitimate hold of the loop measured (the soak's worst recovery cycle, 478 ms on
2 shared cores, and work per vfio-user message and per doorbell is bounded), and well
below QEMU's 5 s wait for a vfio-user reply, so the guests' accesses fail at once before
their vCPUs sit out that timeout access after access.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from enum import Enum

from hypervisor_shim.errors import ShimError

log = logging.getLogger(__name__)

DEFAULT_WATCHDOG_MS = 2000
MIN_WATCHDOG_MS = 100
MAX_WATCHDOG_MS = 60_000


class WatchdogError(ShimError):
    """A watchdog limit out of bounds."""

    def __init__(self, limit_ms: object) -> None:
        super().__init__(f"watchdog_ms must be 0 (off) or an integer from {MIN_WATCHDOG_MS} "
                         f"to {MAX_WATCHDOG_MS}, not {limit_ms!r}")
        self.limit_ms = limit_ms


class ModelStalled(ShimError):
    """The device model's loop did not run a scheduled no-op within the limit."""

    def __init__(self, waited_ms: int, limit_ms: int) -> None:
        super().__init__(f"the device model's loop has not answered for {waited_ms} ms "
                         f"(watchdog limit {limit_ms} ms)")
        self.waited_ms = waited_ms
        self.limit_ms = limit_ms


class WatchdogState(Enum):
    CREATED = "created"
    WATCHING = "watching"
    FIRED = "fired"  # the loop stalled; on_stall was called (once)
    STOPPED = "stopped"


def check_limit(limit_ms: object) -> int:
    """`limit_ms` if it is a valid watchdog limit (0: off), else WatchdogError."""
    if not isinstance(limit_ms, int) or isinstance(limit_ms, bool) or not (
            limit_ms == 0 or MIN_WATCHDOG_MS <= limit_ms <= MAX_WATCHDOG_MS):
        raise WatchdogError(limit_ms)
    return limit_ms


class Watchdog:
    def __init__(self, loop_of: Callable[[], asyncio.AbstractEventLoop], limit_ms: int,
                 on_stall: Callable[[ModelStalled], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`loop_of`: the loop to watch, asked each time (it may be replaced)."""
        self.limit_ms = check_limit(limit_ms)
        self._loop_of = loop_of
        self._on_stall = on_stall
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._answered = 0  # the last beat the loop ran (written on the loop thread)
        self.state = WatchdogState.CREATED
        self.beats = 0  # beats answered, for tests and the log
        self.fired_at: float | None = None  # clock() when it fired

    def start(self) -> None:
        if self.limit_ms == 0 or self.state is not WatchdogState.CREATED:
            return
        self.state = WatchdogState.WATCHING
        self._thread = threading.Thread(target=self._run, name="model-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the loop is stopped on purpose); waits for the thread."""
        self._stop.set()
        if self.state is WatchdogState.WATCHING:
            self.state = WatchdogState.STOPPED
        th = self._thread
        if th is not None and th is not threading.current_thread():
            th.join(timeout=10)

    def _beat(self, n: int) -> None:  # on the watched loop
        self._answered = n
        self.beats += 1

    def _run(self) -> None:
        limit = self.limit_ms / 1000
        period = limit / 4
        sent = 0  # the last beat scheduled
        sent_at = 0.0
        woke = self._clock()
        while not self._stop.wait(period):
            now = self._clock()
            overslept = now - woke > period + limit / 2
            woke = now
            if sent and self._answered != sent and not overslept:
                if now - sent_at > limit:
                    self._fire(int((now - sent_at) * 1000))
                    return
                continue  # the beat is still due: wait for it
            sent += 1  # answered (or the measure starts again): the next beat
            sent_at = now
            try:
                self._loop_of().call_soon_threadsafe(self._beat, sent)
            except RuntimeError:  # the loop is closed: nothing left to watch
                return

    def _fire(self, waited_ms: int) -> None:
        if self._stop.is_set():
            return
        self.state = WatchdogState.FIRED
        self.fired_at = self._clock()
        exc = ModelStalled(waited_ms, self.limit_ms)
        log.critical("%s; failing it", exc)
        try:
            self._on_stall(exc)
        except Exception:
            log.exception("failing the stalled device model")
