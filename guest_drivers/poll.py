"""Adaptive polling: busy while work flows, asleep when idle, woken at once by a send.

Userspace drivers here have no interrupt handler of their own (a guest's MSI-X goes to
the kernel), so each driver thread polls its descriptors in DMA memory. Polling must not
burn a shared CPU: after the last piece of work the thread keeps looking for `busy_s`
(yielding the CPU between looks), then sleeps, doubling the sleep from `min_sleep_s` up
to `max_sleep_s`. Sleeping is a wait on the driver's wake event, so `send()`, a platform
event or a stop request ends the sleep at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class PollConfig:
    busy_s: float = 0.002  # keep looking this long after the last work
    min_sleep_s: float = 0.0005
    max_sleep_s: float = 0.03  # idle: at most ~33 looks a second
    health_s: float = 1.0  # idle: read a register that cannot be all-ones this often


class AdaptivePoller:
    def __init__(self, cfg: PollConfig, wake: threading.Event) -> None:
        self.cfg = cfg
        self._wake = wake
        self._sleep = 0.0
        self._last_work = time.monotonic()
        self.sleeps = 0
        self.woken = 0  # sleeps ended early by the wake event

    def idle(self, did_work: bool) -> None:
        """Call once per loop iteration with whether it did anything."""
        if did_work:
            self._last_work = time.monotonic()
            self._sleep = 0.0
            return
        if time.monotonic() - self._last_work < self.cfg.busy_s:
            time.sleep(0)  # yield: traffic is likely to continue
            return
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
