"""Callbacks registered by others (the console, the removal hooks, tests), called in order.

A listener that raises must not stop the platform, nor the listeners after it, and must
not fail silently: its first failure is logged with the traceback
(`logging.exception`), later ones of the same listener are counted (`failures`) and
logged as one line each at debug level, so a listener that fails on every event does not
flood the log. Thread-safe: registering and calling may happen on different threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

A = TypeVar("A")


class Listeners(Generic[A]):
    def __init__(self, what: str, logger: logging.Logger) -> None:
        self.what = what  # for the log: "timeline listener", "platform event listener"
        self._log = logger
        self._lock = threading.Lock()
        # replaced whole on add/remove (under the lock), read without it: call() takes no
        # lock and copies nothing (it runs for every timeline entry)
        self._callbacks: tuple[Callable[[A], None], ...] = ()
        self.failures: dict[Callable[[A], None], int] = {}

    def add(self, callback: Callable[[A], None]) -> None:
        with self._lock:
            self._callbacks = (*self._callbacks, callback)

    def remove(self, callback: Callable[[A], None]) -> None:
        with self._lock:
            if callback in self._callbacks:
                i = self._callbacks.index(callback)
                self._callbacks = self._callbacks[:i] + self._callbacks[i + 1:]

    def __len__(self) -> int:
        return len(self._callbacks)

    def call(self, arg: A) -> None:
        for cb in self._callbacks:
            try:
                cb(arg)
            except Exception:
                with self._lock:
                    n = self.failures.get(cb, 0) + 1
                    self.failures[cb] = n
                if n == 1:
                    self._log.exception("%s %r failed on %r (its further failures are "
                                        "counted and logged at debug level)",
                                        self.what, cb, arg)
                else:
                    self._log.debug("%s %r failed again (%d failures)", self.what, cb, n,
                                    exc_info=True)
