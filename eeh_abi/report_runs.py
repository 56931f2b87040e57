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
or any request naming p, closes the run (later reports start a new one). An open run is
the thread's own: it is not in the channel's queue, so another thread's write does not
take it along (at 64 VFs one VF's reports were cut into several lines by the other VFs'
calls); it is queued, with the next request id, when it closes, so the queue stays in id
order, and goes out in the same write as the request that closed it. A thread's
`flush()` closes its run; the channel's reader closes every run open for HOLD_MAX_S or
more (a thread that stopped without flushing: a run is never stuck). A waited `report`
of the thread on the run's PE is its last step (`Channel.call`): the run's line then asks
for its reply, which is the call's. So the lines keep each thread's order and each PE's
order, as when every report was a line of its own. A run also closes at the platform's
limit of steps and before its line could exceed the line limit. Standard library only
(runs in guests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from eeh_abi import strict_json
from eeh_abi.hcall_codec import HcallError, jsonable

# A run's steps' JSON, at most (the rest of its line is ~100 bytes; a line is 64 KiB)
RUN_BYTES = 60 * 1024
# A run open this long (its thread neither called nor flushed) is queued by the reader
HOLD_MAX_S = 0.5

OnReply = Callable[[Any], None]


def step_json(args: Mapping[str, Any]) -> bytes:
    """A report's `args` but its `pe`, as one element of `steps` (HcallError if they are
    not JSON, as for any request that cannot be encoded)."""
    try:
        return strict_json.dumps({k: v for k, v in args.items() if k != "pe"},
                                 default=jsonable).encode()
    except strict_json.JsonError as e:
        raise HcallError(f"message cannot be sent: {e.reason}") from None


class ReportRun:
    """One thread's held reports on one PE: one request, its `id` given when it closes
    (0 while open) and it is queued."""

    __slots__ = ("id", "on_replies", "opened", "pe", "quiet", "size", "steps", "thread")

    def __init__(self, pe: int, thread: int, opened: float) -> None:
        self.id = 0
        self.pe = pe
        self.thread = thread
        self.opened = opened  # (time.monotonic(): the reader's HOLD_MAX_S)
        # False: its line asks for the reply (the channel's MAX_QUIET_RUN, a waited step)
        self.quiet = True
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
    """The open runs, by thread and by PE (the channel's lock held); a closed run is
    taken out (and returned: the channel queues it)."""

    __slots__ = ("by_pe", "by_thread")

    def __init__(self) -> None:
        # (insertion order is opening order: the first is the oldest)
        self.by_thread: dict[int, ReportRun] = {}
        self.by_pe: dict[int, ReportRun] = {}

    def joinable(self, thread: int, pe: int, size: int, limit: int) -> ReportRun | None:
        """The open run a report of `thread` on `pe` (`size` bytes of JSON) joins."""
        run = self.by_thread.get(thread)
        if run is None or run.pe != pe or len(run.steps) >= limit \
                or run.size + size > RUN_BYTES:
            return None
        return run

    def open(self, run: ReportRun) -> list[ReportRun]:
        """Open `run`; the runs it closes (its thread's, its PE's)."""
        closed = self.close(run.thread, run.pe)
        self.by_thread[run.thread] = run
        self.by_pe[run.pe] = run
        return closed

    def close(self, thread: int, pe: object) -> list[ReportRun]:
        """A request of `thread` naming `pe` (any value, or None) other than a report
        joining its run: the runs it must not overtake, closed (its thread's first)."""
        closed = []
        run = self.by_thread.pop(thread, None)
        if run is not None:
            closed.append(run)
            if self.by_pe.get(run.pe) is run:
                del self.by_pe[run.pe]
        if type(pe) is int:
            other = self.by_pe.pop(pe, None)
            if other is not None and other is not run:
                closed.append(other)
                if self.by_thread.get(other.thread) is other:
                    del self.by_thread[other.thread]
        return closed

    def close_all(self) -> list[ReportRun]:
        """Every open run, closed, oldest first."""
        closed = list(self.by_thread.values())
        self.by_thread.clear()
        self.by_pe.clear()
        return closed

    def oldest(self) -> float:
        """When the oldest open run opened (there is one)."""
        return next(iter(self.by_thread.values())).opened

    def __bool__(self) -> bool:
        return bool(self.by_thread)
