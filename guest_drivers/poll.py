"""Adaptive polling: busy while work flows, asleep when idle, woken at once by a send.

Userspace drivers here have no interrupt handler of their own (a guest's MSI-X goes to
the kernel), so each driver thread polls its descriptors in DMA memory. Polling must not
burn a shared CPU: after the last piece of work the thread keeps looking for `busy_s`
(yielding the CPU between looks), then sleeps, doubling the sleep from `min_sleep_s` up
to `max_sleep_s`. Sleeping is a wait on the driver's wake event, so `send()`, a platform
event or a stop request ends the sleep at once.

Spinning is shared: at most `spinners` threads of a process (default: one less than its
CPUs, at least one) are in their busy phase at once; the others go straight to sleeping.
Many drivers in one process (the harness runs 64 VF drivers as threads) would otherwise
each spin after every frame: at 64 VFs under 20 probes/s each, that alone kept about 0.7
of a CPU busy and slowed everything else in the process (bench.recovery).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class PollConfig:
    busy_s: float = 0.002  # keep looking this long after the last work
    min_sleep_s: float = 0.0005
    max_sleep_s: float = 0.03  # idle: at most ~33 looks a second
    health_s: float = 1.0  # idle: read a register that cannot be all-ones this often
    spinners: int = 0  # threads of the process spinning at once; 0: CPUs - 1, at least 1


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


_SLOTS = SpinSlots()  # the process's
_DEFAULT_SPINNERS = max(1, (os.cpu_count() or 1) - 1)


class AdaptivePoller:
    def __init__(self, cfg: PollConfig, wake: threading.Event,
                 slots: SpinSlots | None = None) -> None:
        self.cfg = cfg
        self._slots = slots or _SLOTS
        self._wake = wake
        self._sleep = 0.0
        self._last_work = time.monotonic()
        self._spin_until = 0.0  # the end of the busy phase this poller holds a slot for
        self._spinners = cfg.spinners or _DEFAULT_SPINNERS
        self.sleeps = 0
        self.woken = 0  # sleeps ended early by the wake event
        self.spins_skipped = 0  # busy phases given up: other threads were spinning

    def idle(self, did_work: bool) -> None:
        """Call once per loop iteration with whether it did anything."""
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
        self._sleep = min(self.cfg.max_sleep_s, max(self.cfg.min_sleep_s, self._sleep * 2))
        self.sleeps += 1
        if self._wake.wait(self._sleep):
            self.woken += 1
            self._sleep = 0.0
            self._last_work = time.monotonic()
        self._wake.clear()

    @property
    def current_sleep(self) -> float:
        return self._sleep
