"""Calls registered to go out when the platform lifts a PE's lockout (`Channel.on_lift`).

A VF driver refused with -2 (its PE locked out while the adapter recovers) will make the
same call again once the platform pushes `lockout-lifted` for its PE. Instead of each
driver thread being woken to build and write its call (at 64 VFs, 64 threads each waiting
for the GIL after one pushed line), the thread registers the exact call with its channel;
the channel's reader thread, on the lift of that PE, writes every call registered for the
PEs of the pushed line, in one write, before it hands the event to its subscribers. The
driver thread then only waits for its reply. As Linux's EEH core re-issuing the unfreeze
of every PE it had parked once told the slot is usable again.

A registered call is in one of three states: registered (not written: the thread may
still write it itself, the fallback when no lift comes, or drop it), written (it has an
id and a reply slot; the thread waits for that reply), or dropped (cancelled, or the
channel closed). Every transition happens under the channel's lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class LiftRetry:
    """One call registered for a PE's lift. `id` is 0 until the reader writes it, then
    the request's id; -1 once dropped."""

    __slots__ = ("args", "call", "id", "pe", "slot", "tail", "thread")

    def __init__(self, call: str, pe: int, args: Mapping[str, Any], tail: bytes,
                 thread: int) -> None:
        self.call = call
        self.pe = pe
        self.args = dict(args)  # with "pe"
        self.tail = tail  # the request's encoded tail (`request_tail`), built once
        self.thread = thread  # the registering thread (its held reports go out first)
        self.id = 0
        self.slot: Any = None  # where its reply goes once written (the channel's)

    @property
    def written(self) -> bool:
        return self.id > 0


class LiftRetries:
    """The registered calls by PE (under the channel's lock), in registration order."""

    __slots__ = ("_by_pe",)

    def __init__(self) -> None:
        self._by_pe: dict[int, list[LiftRetry]] = {}

    def add(self, retry: LiftRetry) -> None:
        self._by_pe.setdefault(retry.pe, []).append(retry)

    def remove(self, retry: LiftRetry) -> bool:
        """Take an unwritten registration out; False if it was not registered."""
        lst = self._by_pe.get(retry.pe)
        if lst is None or retry not in lst:
            return False
        lst.remove(retry)
        if not lst:
            del self._by_pe[retry.pe]
        return True

    def take(self, pes: list[int]) -> list[LiftRetry]:
        """The registrations of `pes` (a lift), taken out, in the order of `pes`."""
        out: list[LiftRetry] = []
        for pe in pes:
            lst = self._by_pe.pop(pe, None)
            if lst:
                out += lst
        return out

    def clear(self) -> list[LiftRetry]:
        out = [r for lst in self._by_pe.values() for r in lst]
        self._by_pe.clear()
        return out

    def __bool__(self) -> bool:
        return bool(self._by_pe)

    def __len__(self) -> int:
        return sum(len(lst) for lst in self._by_pe.values())
