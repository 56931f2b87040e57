"""The run's timeline: every decision, call, event and driver report, one JSON line each.

    tl = Timeline(run_dir / "events.jsonl")
    tl.record("policy", "pe-frozen", pe="adapter", data={...})
    tl.entries   # in memory too, for assertions in order

Each entry: `t` (host monotonic seconds, the same clock as the device model's
AsyncioClock), `source` ("model", "policy", "call", "driver", "console", "shim"),
`kind`, optional `pe`, `owner`, `data`, and for driver reports `guest_time` (the
guest's own monotonic clock). Thread-safe; listeners see each entry as it is written, on
the thread that recorded it (a listener that raises is logged: `hypervisor_shim.listeners`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hypervisor_shim.listeners import Listeners

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Entry:
    t: float
    source: str
    kind: str
    pe: str | None = None
    owner: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    guest_time: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": round(self.t, 6), "source": self.source, "kind": self.kind}
        if self.pe is not None:
            out["pe"] = self.pe
        if self.owner is not None:
            out["owner"] = self.owner
        if self.data:
            out["data"] = self.data
        if self.guest_time is not None:
            out["guest_time"] = self.guest_time
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Entry:
        return cls(float(obj["t"]), str(obj["source"]), str(obj["kind"]), obj.get("pe"),
                   obj.get("owner"), dict(obj.get("data") or {}), obj.get("guest_time"))


Listener = Callable[[Entry], None]


class Timeline:
    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 keep: bool = True) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._file: TextIO | None = open(path, "a") if path is not None else None
        self._keep = keep
        self.entries: list[Entry] = []
        self.bytes_written = 0  # of JSON lines, file or not (what budgets charge)
        self.listeners: Listeners[Entry] = Listeners("timeline listener", log)
        self.t0 = clock()

    def add_listener(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    def record(self, source: str, kind: str, *, pe: str | None = None,
               owner: str | None = None, data: dict[str, Any] | None = None,
               guest_time: float | None = None, t: float | None = None) -> Entry:
        entry = Entry(self._clock() if t is None else t, source, kind, pe, owner,
                      dict(data or {}), guest_time)
        line = json.dumps(entry.to_json(), default=str) + "\n"
        with self._lock:
            self.bytes_written += len(line)
            if self._keep:
                self.entries.append(entry)
            if self._file is not None:
                self._file.write(line)
                self._file.flush()
        self.listeners.call(entry)  # a listener's bug must not stop the platform: logged
        return entry

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.snapshot())

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def load(path: Path) -> list[Entry]:
    """Read an events.jsonl back (skipping lines that are not entries)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(Entry.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return out
