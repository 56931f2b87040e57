"""A channel's held runs of step reports, each sent as one `report` line with `steps`.

A driver's recovery round posts its step reports held (`Channel.post(Call.REPORT, ...,
quiet=True, hold=True)`): they wait in the channel's queue for the round's next call. When
the platform takes batched reports (it announced `report_steps` in its `query-functions`
reply: docs/platform-calls.md, "Batched reports"), a thread's run of held reports on one
PE is one `ReportRun` in that queue, one request id, and goes out as one line

    {"v":1,"id":9,"call":"report","args":{"pe":98304,"steps":[{"step":"reset",...},...]},
     "quiet":true}

which the platform records as that many reports, in order, each the entry a single
report of it makes. A run of one step goes out as the single report it is.

Which reports join a run (`HeldRuns`, every method under the channel's lock): a held quiet
report on PE p joins the run its thread has open on p; any other request of that thread,
or any request naming p, closes the run (later reports start a new one), and so does
writing it (the writer takes the whole queue). So the lines keep each thread's order and
each PE's order, as when every report was a line of its own. A run also closes at the
platform's limit of steps and before its line could exceed the line limit. Standard
library only (runs in guests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from eeh_abi import strict_json

# A run's steps' JSON, at most (the rest of its line is ~100 bytes; a line is 64 KiB)
RUN_BYTES = 60 * 1024

OnReply = Callable[[Any], None]


def step_json(args: Mapping[str, Any], default: Callable[[Any], Any]) -> bytes:
    """A report's `args` but its `pe`, as one element of `steps` (JsonError if they are
    not JSON)."""
    return strict_json.dumps({k: v for k, v in args.items() if k != "pe"},
                             default=default).encode()


class ReportRun:
    """One thread's held reports on one PE, one request (`id`), in the channel's queue."""

    __slots__ = ("id", "on_replies", "pe", "quiet", "size", "steps", "thread")

    def __init__(self, msg_id: int, pe: int, thread: int, quiet: bool) -> None:
        self.id = msg_id
        self.pe = pe
        self.thread = thread
        self.quiet = quiet  # False: its line asks for the reply (the channel's MAX_QUIET_RUN)
        self.steps: list[bytes] = []  # each step's JSON (`step_json`)
        self.size = 0
        self.on_replies: list[OnReply | None] = []

    def add(self, step: bytes, on_reply: OnReply | None) -> None:
        self.steps.append(step)
        self.size += len(step) + 1
        self.on_replies.append(on_reply)

    def tail(self) -> bytes:
        """The request's line after its id, as `eeh_abi.hcall.request_tail` makes it:
        one report of the PE, or all of them in `steps`."""
        if len(self.steps) == 1:
            return b'"call":"report","args":{"pe":%d,%s}' % (self.pe, self.steps[0][1:])
        return b'"call":"report","args":{"pe":%d,"steps":[%s]}}' % (
            self.pe, b",".join(self.steps))

    def on_reply(self, reply: Any) -> None:
        """The run's reply (a refusal, for a quiet run: all its reports were refused, as
        the platform records all of a run or none) goes to each report's `on_reply`."""
        for fn in self.on_replies:
            if fn is not None:
                fn(reply)


class HeldRuns:
    """The runs open to more reports, by thread and by PE (the channel's lock held)."""

    __slots__ = ("by_pe", "by_thread")

    def __init__(self) -> None:
        self.by_thread: dict[int, ReportRun] = {}
        self.by_pe: dict[int, ReportRun] = {}

    def joinable(self, thread: int, pe: int, size: int, limit: int) -> ReportRun | None:
        """The open run a report of `thread` on `pe` (`size` bytes of JSON) joins."""
        run = self.by_thread.get(thread)
        if run is None or run.pe != pe or len(run.steps) >= limit \
                or run.size + size > RUN_BYTES:
            return None
        return run

    def open(self, run: ReportRun) -> None:
        self.close(run.thread, run.pe)
        self.by_thread[run.thread] = run
        self.by_pe[run.pe] = run

    def close(self, thread: int, pe: object) -> None:
        """A request of `thread` naming `pe` (any value, or None) other than a report
        joining its run: the runs it must not overtake are closed."""
        run = self.by_thread.pop(thread, None)
        if run is not None and self.by_pe.get(run.pe) is run:
            del self.by_pe[run.pe]
        if type(pe) is int:
            other = self.by_pe.pop(pe, None)
            if other is not None and self.by_thread.get(other.thread) is other:
                del self.by_thread[other.thread]

    def seal(self) -> None:
        """Every queued run is being written: none takes more reports."""
        self.by_thread.clear()
        self.by_pe.clear()

    def __bool__(self) -> bool:
        return bool(self.by_thread)
