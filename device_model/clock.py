"""Time for the model: a monotonic clock that can also schedule callbacks.

The model never sleeps and never reads the system clock itself. Everything that takes time
(a reset held, a reset settling, an FLR completing) is a callback scheduled on an injected
`Clock`. Tests use `ManualClock` and move time by hand; the vfio-user server runs the model
on an asyncio loop through `AsyncioClock`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A scheduled callback that can still be cancelled."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Monotonic time in seconds."""
        ...

    def call_later(self, delay: float, fn: Callable[[], None]) -> Timer:
        """Run `fn` once, `delay` seconds from now (never synchronously)."""
        ...


class _ManualTimer:
    __slots__ = ("cancelled", "fn", "when")

    def __init__(self, when: float, fn: Callable[[], None]) -> None:
        self.when = when
        self.fn = fn
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that only moves when told to: deterministic time for tests.

    `advance(dt)` runs every callback that falls due, in time order (ties in scheduling
    order), with `now()` equal to each callback's due time while it runs; callbacks
    scheduled by callbacks run in the same call if they fall due before its end.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, fn: Callable[[], None]) -> _ManualTimer:
        timer = _ManualTimer(self._now + max(0.0, delay), fn)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def pending(self) -> int:
        """How many callbacks are scheduled and not cancelled."""
        return sum(1 for _, _, t in self._heap if not t.cancelled)

    def next_due(self) -> float | None:
        """When the earliest pending callback falls due (None: nothing pending)."""
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def advance(self, dt: float) -> int:
        """Move time forward by `dt` seconds; returns how many callbacks ran."""
        if dt < 0:
            raise ValueError("time only moves forward")
        target = self._now + dt
        ran = 0
        while self._heap and self._heap[0][0] <= target:
            when, _, timer = heapq.heappop(self._heap)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.fn()
            ran += 1
        self._now = target
        return ran

    def run_all(self, limit: float = 3600.0) -> int:
        """Advance until nothing is pending (at most `limit` seconds); returns callbacks run."""
        ran = 0
        start = self._now
        while (due := self.next_due()) is not None and due - start <= limit:
            ran += self.advance(due - self._now)
        return ran


class AsyncioClock:
    """The clock of an asyncio event loop (the vfio-user server runs the model on one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._loop = loop if loop is not None else asyncio.get_running_loop()

    def now(self) -> float:
        return self._loop.time()

    def call_later(self, delay: float, fn: Callable[[], None]) -> asyncio.TimerHandle:
        return self._loop.call_later(max(0.0, delay), fn)
