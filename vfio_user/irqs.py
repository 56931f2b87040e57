"""Interrupt delivery of one connection: eventfds per (index, vector), masks, pending.

`IrqTable` is the `IrqSink` a function gets at attach. A trigger on an unmasked vector
with an eventfd writes the eventfd; on a masked vector it is latched pending and delivered
at unmask; on a vector without an eventfd it is counted as dropped. The table owns every
eventfd it holds and closes it when replaced, de-assigned, or at `close`. A lock makes
triggers from another thread safe against concurrent SET_IRQS (an fd number is never
written after it was closed).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

log = logging.getLogger("vfio_user")

Vector = tuple[int, int]  # (irq index, sub-index)


@dataclass
class IrqStats:
    delivered: int = 0  # eventfd written
    latched: int = 0  # trigger on a masked vector, left pending
    dropped: int = 0  # no eventfd (or the table is closed)
    failed: int = 0  # eventfd write failed


class IrqTable:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[Vector, int] = {}
        self._masked: set[Vector] = set()
        self._pending: set[Vector] = set()
        self._closed = False
        self.stats = IrqStats()

    # -- the IrqSink side (the device)

    def trigger(self, index: int, vector: int) -> None:
        key = (index, vector)
        with self._lock:
            if self._closed:
                self.stats.dropped += 1
            elif key in self._masked:
                self._pending.add(key)
                self.stats.latched += 1
            else:
                self._signal(key)

    def _signal(self, key: Vector) -> None:
        fd = self._fds.get(key)
        if fd is None:
            self.stats.dropped += 1
            return
        try:
            os.eventfd_write(fd, 1)
            self.stats.delivered += 1
        except BlockingIOError:  # counter saturated: an interrupt is pending anyway
            self.stats.delivered += 1
        except OSError as e:
            self.stats.failed += 1
            log.warning("eventfd write for irq %s failed: %s", key, e)

    # -- the SET_IRQS side (the client)

    def assign(self, index: int, start: int, fds: Sequence[int]) -> None:
        """Vectors start.. get these eventfds (the table now owns them)."""
        with self._lock:
            for i, fd in enumerate(fds):
                old = self._fds.get((index, start + i))
                self._fds[(index, start + i)] = fd
                if old is not None and old != fd:
                    _close(old)

    def deassign(self, index: int, vectors: Iterable[int]) -> None:
        with self._lock:
            for v in vectors:
                fd = self._fds.pop((index, v), None)
                if fd is not None:
                    _close(fd)

    def disable(self, index: int) -> None:
        """Every vector of `index`: close its eventfd, forget masks and pending."""
        with self._lock:
            for key in [k for k in self._fds if k[0] == index]:
                _close(self._fds.pop(key))
            self._masked = {k for k in self._masked if k[0] != index}
            self._pending = {k for k in self._pending if k[0] != index}

    def mask(self, index: int, vectors: Iterable[int]) -> None:
        with self._lock:
            self._masked.update((index, v) for v in vectors)

    def unmask(self, index: int, vectors: Iterable[int]) -> None:
        """Unmask; a vector that was triggered while masked is delivered now."""
        with self._lock:
            for v in vectors:
                key = (index, v)
                self._masked.discard(key)
                if key in self._pending:
                    self._pending.discard(key)
                    self._signal(key)

    def clear_pending(self) -> None:
        with self._lock:
            self._pending.clear()

    # -- inspection and teardown

    def eventfd(self, index: int, vector: int) -> int | None:
        return self._fds.get((index, vector))

    def is_masked(self, index: int, vector: int) -> bool:
        return (index, vector) in self._masked

    def is_pending(self, index: int, vector: int) -> bool:
        return (index, vector) in self._pending

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        """Close every eventfd; later triggers are dropped."""
        with self._lock:
            self._closed = True
            for fd in self._fds.values():
                _close(fd)
            self._fds.clear()
            self._masked.clear()
            self._pending.clear()


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
