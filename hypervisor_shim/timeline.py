"""The run's timeline: every decision, call, event and driver report, one JSON line each.

    tl = Timeline(run_dir / "events.jsonl")
    tl.record("policy", "pe-frozen", pe="adapter", data={...})
    tl.entries   # in memory too, for assertions in order
    tl.flush()   # the file holds every entry recorded so far (a reader that must see them)

Each entry: `t` (host monotonic seconds, the same clock as the device model's
AsyncioClock), `source` ("model", "policy", "call", "driver", "console", "shim"),
`kind`, optional `pe`, `owner`, `data`, and for driver reports `guest_time` (the
guest's own monotonic clock). Thread-safe; listeners see each entry as it is written, on
the thread that recorded it (a listener that raises is logged: `hypervisor_shim.listeners`).

The file is written through a buffer, in the order of `entries`, and not flushed per
entry (a flush is a write(2) that also hands the GIL away, on the platform's loop thread
for most entries): a thread of the timeline's own flushes it `flush_window_s` (50 ms)
after the first entry the file does not hold yet, so a live reader (`tail -f`, a test)
sees every entry at most ~50 ms after it was recorded, and the file is flushed at most
once per window however many entries a window brings. `close()` (Platform.stop) and
`flush()` write out everything at once; so does the interpreter's exit (a finalizer).
What a crash can lose: a process killed outright (SIGKILL, os._exit, a fatal signal) loses
at most the entries recorded in the last `flush_window_s` before it died; memory
(`entries`) and listeners are not delayed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from eeh_abi import strict_json
from hypervisor_shim.listeners import Listeners

log = logging.getLogger(__name__)

FLUSH_WINDOW_S = 0.05  # an entry reaches the file at most this long after it was recorded
FILE_BUFFER_BYTES = 1 << 16  # between flushes, write(2)s of this size at most (~300 entries)

# every entry's text: json.dumps(value, default=str)'s (its separators, NaN written as
# NaN), from one C encoder built once, not per call (eeh_abi.strict_json.encoder: no
# check for circular containers, an entry's data are JSON values decoded or built here;
# a cycle ends in RecursionError instead of ValueError)
_encode_line: Callable[[Any], str] = strict_json.encoder(default=str, separators=(", ", ": "),
                                                         allow_nan=True)


def json_text(value: Any) -> str:
    """`value` as the timeline writes it: json.dumps(value, default=str)'s text, without
    building an encoder per call (RecursionError for a circular value)."""
    return _encode_line(value)

_esc = json.encoder.encode_basestring_ascii  # a str as _encode_line writes it
_PLAIN_NUMBER = (int, float)


def _time_text(t: float) -> str:
    """`repr(round(t, 6))` at half the cost for a float of the timeline's usual range (both
    round correctly to 6 decimals; repr writes the shortest text of that double, which
    in [1e-4, 1e8) is the 6 decimals without their trailing zeros: checked by
    tests/unit/shim/test_timeline_lines.py)."""
    if type(t) is float and 1e-4 <= t < 1e8:
        text = f"{t:.6f}".rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(t, 6))


def _entry_line(e: Entry) -> str:
    """`_encode_line(e.to_json())`, built from its members (`_line`, without its newline)."""
    return _line(e.t, e.source, e.kind, e.pe, e.owner, e.data, e.guest_time)[:-1]


def _line(t: float, source: str, kind: str, pe: str | None, owner: str | None,
          data: dict[str, Any], gt: float | None) -> str:
    """An entry's line (with its newline): `_encode_line(entry.to_json())`'s text built
    from the members (no dict, no scan of the entry's own keys; `data` alone goes
    through the encoder): the same text (a str subclass, e.g. a `Kind`, written as its
    value like the encoder does), checked by tests/unit/shim/test_timeline_lines.py.
    Members of another type than the usual go the general way."""
    if not (type(t) in _PLAIN_NUMBER and -1e15 < t < 1e15 and isinstance(source, str)
            and isinstance(kind, str) and (pe is None or isinstance(pe, str))
            and (owner is None or isinstance(owner, str))
            and (gt is None or (type(gt) in _PLAIN_NUMBER and -1e300 < gt < 1e300))):
        return _encode_line(Entry(t, source, kind, pe, owner, data, gt).to_json()) + "\n"
    parts = ['{"t": ', _time_text(t), ', "source": ', _esc(source), ', "kind": ',
             _esc(kind)]
    if pe is not None:
        parts += (', "pe": ', _esc(pe))
    if owner is not None:
        parts += (', "owner": ', _esc(owner))
    if data:
        parts += (', "data": ', _encode_line(data))
    if gt is not None:
        parts += (', "guest_time": ', repr(gt))
    parts.append("}\n")
    return "".join(parts)


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


def _new_entry(t: float, source: str, kind: str, pe: str | None, owner: str | None,
               data: dict[str, Any], guest_time: float | None) -> Entry:
    """`Entry(t, source, kind, pe, owner, data, guest_time)` at half the cost (one per
    timeline entry): a frozen dataclass's __init__ sets each member through
    object.__setattr__; Entry has no slots, no __post_init__ and no other members, so
    its instance dict filled at once is the same object (tests/unit/shim/
    test_timeline_lines.py holds the member list to this)."""
    e = object.__new__(Entry)
    e.__dict__.update(t=t, source=source, kind=kind, pe=pe, owner=owner, data=data,
                      guest_time=guest_time)
    return e


class _LineFile:
    """events.jsonl's side of a timeline: lines written to a buffered file under the
    timeline's lock (so in the order of its entries), flushed by a thread of its own
    `window_s` after the first line the file does not hold yet, or at once on `flush()` and
    `close()`. It holds no reference to its Timeline, so that a timeline dropped without
    close() is collected: its finalizer (or the interpreter's exit) closes the file."""

    IDLE_S = 1.0  # the thread's longest sleep (it notices an abandon() from itself)

    def __init__(self, path: Path, lock: threading.Lock, window_s: float) -> None:
        self.path = path
        self._file: TextIO | None = open(path, "a", buffering=FILE_BUFFER_BYTES)
        self._cond = threading.Condition(lock)
        self._window_s = window_s
        self._dirty = False  # lines written since the last flush (under the lock)
        self._abandoned = False  # the timeline was collected while this thread ran
        self.flushes = 0  # every flush of the file, for tests and figures
        self.failures = 0  # flushes by the thread that raised (full disk...): logged
        self._thread = threading.Thread(target=self._run, name="timeline-flush", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        """Caller holds the lock."""
        if self._file is None:
            return
        self._file.write(line)
        if not self._dirty:
            self._dirty = True
            self._cond.notify()  # the flusher's window starts

    def flush(self) -> None:
        """Caller holds the lock."""
        if self._file is not None and self._dirty:
            self._dirty = False
            self.flushes += 1
            self._file.flush()

    def close(self) -> None:
        with self._cond:
            self._close_locked()
        if self._thread is not threading.current_thread():
            self._thread.join(5)

    def abandon(self) -> None:
        """The finalizer's: close, unless the collection runs on this file's own thread,
        which may hold the lock then: it closes the file itself on its next turn."""
        if self._thread is threading.current_thread():
            self._abandoned = True
        else:
            self.close()

    def _close_locked(self) -> None:
        if self._file is None:
            return
        file, self._file = self._file, None
        if self._dirty:
            self._dirty = False
            self.flushes += 1
        self._cond.notify()
        file.close()  # flushes the buffer (raises, closed all the same, if it cannot)

    def _run(self) -> None:
        with self._cond:
            while self._file is not None:
                if self._abandoned:
                    self._close_locked()
                elif not self._dirty:
                    self._cond.wait(self.IDLE_S)  # until a line is written, or close()
                else:
                    # the window: lines written meanwhile go out with this flush (only
                    # close() notifies while dirty, and it flushes itself)
                    self._cond.wait(self._window_s)
                    try:
                        self.flush()
                    except OSError:  # a full disk: tried again a window later
                        self._dirty = True
                        self.failures += 1
                        if self.failures == 1:
                            log.exception("timeline: flushing %s failed", self.path)


class Timeline:
    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 keep: bool = True, flush_window_s: float = FLUSH_WINDOW_S) -> None:
        self.path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._file: _LineFile | None = None
        if path is not None:
            self._file = _LineFile(path, self._lock, flush_window_s)
            weakref.finalize(self, self._file.abandon)
        self._keep = keep
        self.entries: list[Entry] = []
        self.bytes_written = 0  # of JSON lines, file or not (what budgets charge)
        self.listeners: Listeners[Entry] = Listeners("timeline listener", log)
        self.t0 = clock()

    @property
    def flushes(self) -> int:
        """How many times the file was flushed (0 without a file)."""
        return self._file.flushes if self._file is not None else 0

    def add_listener(self, listener: Listener) -> None:
        self.listeners.add(listener)

    def remove_listener(self, listener: Listener) -> None:
        self.listeners.remove(listener)

    def record(self, source: str, kind: str, *, pe: str | None = None,
               owner: str | None = None, data: Mapping[str, Any] | None = None,
               guest_time: float | None = None, t: float | None = None) -> Entry:
        """Record an entry (its `data` copied: the caller may pass its own mapping)."""
        if t is None:
            t = self._clock()
        copy = dict(data) if data else {}
        entry = _new_entry(t, source, kind, pe, owner, copy, guest_time)
        line = _line(t, source, kind, pe, owner, copy, guest_time)
        with self._lock:
            self.bytes_written += len(line)
            if self._keep:
                self.entries.append(entry)
            if self._file is not None:
                self._file.write(line)
        self.listeners.call(entry)  # a listener's bug must not stop the platform: logged
        return entry

    def flush(self) -> None:
        """Write every entry recorded so far to the file now (for a reader that cannot
        wait for the flush window)."""
        with self._lock:
            if self._file is not None:
                self._file.flush()

    def snapshot(self) -> list[Entry]:
        with self._lock:
            return list(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.snapshot())

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def close(self) -> None:
        """Flush and close the file (idempotent); entries stay in memory."""
        if self._file is not None:
            self._file.close()


def load(path: Path) -> list[Entry]:
    """Read an events.jsonl back (skipping lines that are not entries)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(Entry.from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return out
