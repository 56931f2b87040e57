"""The platform-call protocol: versioned JSON lines, one codec for server and client.

A guest's channel is a byte stream (virtio-serial port in a guest, unix socket on the
host). Each message is one JSON object on one line (UTF-8, ending in "\\n", at most
MAX_LINE bytes). docs/platform-calls.md is the reference; in short:

    request  {"v": 1, "id": 7, "call": "read-slot-reset-state2", "args": {"pe": 65536}}
    quiet    {"v": 1, "id": 8, "call": "report", "args": {...}, "quiet": true}
    reply    {"v": 1, "id": 7, "status": 0, "ret": {"state": 5, "retry_ms": 1000, ...}}
    event    {"v": 1, "event": "lockout-lifted", "pe": 65664, "data": {...}, "t": 12.5}
    batched  {"v": 1, "event": "lockout-lifted", "pe": 65664,
              "data": {..., "pes": [65664, 65920, ...]}, "t": 12.5}

A batched event is the same event for each PE of `data.pes` (the platform pushes an
owner's run of events of one name and one data as one line: the lift of every VF PE's
lockout, the side-effect freezes of a PE tree); `pe` is the first of them. `Channel`
hands its subscribers one event per PE (`unbatch`), without `pes`, as if each had been a
line of its own.

The calls, their arguments and replies, and the pushed events are declared in
`eeh_abi.schema`; the JSON is `eeh_abi.strict_json`'s. Replies carry the id of their
request; events carry no id. A line that cannot be parsed is answered with status -3 and
the request's id when the line's top-level `id` member could be read before it went wrong
(e.g. nested too deep after the id), else id null; the stream goes on with the next line.
A quiet request (`"quiet": true`, `eeh_abi.schema.QUIET`) is answered only when it is
refused or fails: an ok one gets no reply line, and the reply of any later request of
the channel (answered in order) says it was ok.

`Channel` is the synchronous client (standard library only; runs in a guest): one reader
thread demultiplexes replies (by id) and events (to subscribers); any number of driver
threads may call at once. A channel never blocks its callers for good: once the platform
has closed it (a socket's end of file; in a guest, the port's end of file after the
platform had answered: QEMU never reconnects the port), every call and post fails with
ChannelClosed, those waiting included; a write the platform does not take within the
channel's `timeout` (it stopped reading) fails with ChannelClosed and closes the channel
(part of a line may have gone out: the stream cannot be trusted after it).

Writes: a request's line is queued (in id order) and one thread at a time writes the
queue: a thread that finds another writing leaves its line to it and goes on (to wait for
its reply), so the lines of threads calling at once go out in one write, and no thread
waits on another's write(2). A post may be *held* (`post(..., hold=True)`: a driver's
step reports in a recovery round): queued, not written, it goes out in the same write as
the channel's next request that is not held, or at `flush()`, whichever comes first; the
reader thread flushes what is held once no line came for its 0.5 s select. One write for
a run of reports and the call after them: one wake-up of the platform's loop (and, in a
guest, one virtio kick) instead of one a line. The poster flushes before it blocks, so a
held report is never held across a wait. A thread's held quiet reports on one PE go
out as one `report` line with `steps` (`eeh_abi.report_runs`) once the platform said it
takes them (`report_steps` in the reply to `query-functions`, which the channel reads);
else as one line each. Such a run is the thread's until it closes (its next request, its
`flush()`): other threads' writes leave it, so it goes out whole with the thread's next
call; and a waited `report` (`call`) on its PE is its last step, in the same line.

Retries on a lift (`on_lift`, `eeh_abi.lift_retries`): a call refused because its PE is
locked out may be registered with the channel, keyed by its PE; when the platform pushes
`lockout-lifted` for that PE, the reader thread writes every call registered for the
line's PEs (in one write, before it hands the event to the subscribers), and the caller
only waits for its reply (`retry_reply`, which writes the call itself if no lift came:
the fallback). `drop_retry` cancels one (a restart, a permanent failure, a stop); a
closed channel drops them all (`retry_reply` then raises ChannelClosed). The wire is
unchanged: the same request, sent earlier.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from eeh_abi.hcall_codec import (
    MAX_DEPTH,
    MAX_LINE,
    VERSION,
    DecodeError,
    Event,
    HcallError,
    LineBuffer,
    Message,
    Reply,
    Request,
    decode,
    encode,
    jsonable,
    request_line,
    request_tail,
    unbatch,
)
from eeh_abi.lift_retries import LiftRetries, LiftRetry
from eeh_abi.report_runs import HOLD_MAX_S, HeldRuns, ReportRun, step_json
from eeh_abi.schema import MAX_REPORT_STEPS, REPORT_STEPS, Call
from eeh_abi.vocabulary import Kind

__all__ = [  # the codec's names (eeh_abi.hcall_codec) are this module's too
    "MAX_DEPTH", "MAX_LINE", "MAX_QUIET_RUN", "VERSION", "CallTimeout", "Channel",
    "ChannelClosed", "DecodeError", "Event", "EventHandler", "HcallError", "LiftRetry",
    "LineBuffer", "Message", "Reply", "Request", "decode", "encode", "jsonable", "request_line",
    "request_tail",
    "unbatch",
]

# Quiet posts written in a row: the next post asks for its reply (which settles them all),
# so a channel that only posts keeps a bounded table of quiet posts not known to be ok.
MAX_QUIET_RUN = 256
# The replies that say how many steps one `report` line may carry (`report_steps`)
_ANNOUNCING = frozenset({Call.QUERY_FUNCTIONS.value})


class ChannelClosed(HcallError):
    """The channel's other end went away (or it was closed here)."""


class CallTimeout(HcallError):
    """No reply to a call within its timeout."""

    def __init__(self, call: str, timeout: float) -> None:
        super().__init__(f"no reply to {call} within {timeout} s")
        self.call = call
        self.timeout = timeout


# ---------------------------------------------------------------------------- client
EventHandler = Callable[[Event], None]


class _Slot:
    """Where the reader thread leaves one call's reply: a lock held until the reply is
    in (lighter than a Queue: one lock, no condition variables). Filled at most once."""

    __slots__ = ("_lock", "reply")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.reply: Reply | None = None

    def put(self, reply: Reply) -> None:
        self.reply = reply
        self._lock.release()

    def get(self, timeout: float) -> Reply | None:
        return self.reply if self._lock.acquire(timeout=timeout) else None


class Channel:
    """Synchronous client of the platform calls over a file descriptor.

        ch = Channel.unix("/run/eeh/host.hcall")       # harness mode
        ch = Channel.open_device("/dev/vport1p1")      # in a guest (virtio-serial)
        r = ch.call(Call.READ_SLOT_RESET_STATE2, pe=0x10000)
        ch.subscribe(handler)                          # pushed events, on the reader thread
        ch.post(Call.REPORT, step=Kind.RESET, pe=0x18000)  # no wait for the reply (reports)

    Call names and their arguments: `eeh_abi.schema`; report steps: `eeh_abi.vocabulary`.
    """

    def __init__(self, fd: int, *, close: Callable[[], None] | None = None,
                 timeout: float = 30.0, eof_closes: bool = True) -> None:
        self._fd = fd
        os.set_blocking(fd, False)  # writes wait in select, so they can give up
        self._eof_closes = eof_closes
        self._answered = False  # a line came from the platform: its end is connected
        self._close_fn = close
        self.timeout = timeout
        self._wlock = threading.Lock()  # held by the one thread writing (`_drain`)
        self._lock = threading.Lock()
        # lines (and runs of held reports) queued, in id order, not yet written (`_lock`)
        self._out: list[bytes | ReportRun] = []
        self._runs = HeldRuns()  # the open runs of held reports, not queued (`_lock`)
        self._lift_retries = LiftRetries()  # calls to write on a PE's lift (`_lock`)
        self.lift_retries_written = 0  # registered calls the reader wrote on a lift
        # steps one `report` line may carry (the platform's `report_steps`; 0: one a line)
        self.report_steps = 0
        self._next_id = 1
        self._waiting: dict[int, _Slot] = {}
        self._posted: dict[int, Callable[[Reply], None] | None] = {}  # id -> on_reply
        # the ids of the quiet posts in `_posted`, increasing: settled (ok) by any reply
        # with a later id, the platform answering a channel's requests in order
        self._quiet: deque[int] = deque()
        self._quiet_run = 0  # quiet posts written since the last request answered in any case
        self._handlers: list[EventHandler] = []
        self._closed = threading.Event()
        self.events_seen = 0  # events handed to the subscribers (a batch: one per PE)
        self.event_lines = 0  # event lines read
        self.bad_lines = 0
        self.handler_errors = 0
        self._reader = threading.Thread(target=self._read_loop, name="hcall-reader",
                                        daemon=True)
        self._reader.start()

    @classmethod
    def unix(cls, path: str, timeout: float = 30.0) -> Channel:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError:
            sock.close()
            raise
        return cls(sock.fileno(), close=sock.close, timeout=timeout)

    @classmethod
    def open_device(cls, path: str, timeout: float = 30.0) -> Channel:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        # a virtio-serial port reads EOF while the host end is not connected: wait for it
        return cls(fd, close=lambda: os.close(fd), timeout=timeout, eof_closes=False)

    def subscribe(self, handler: EventHandler) -> None:
        with self._lock:
            self._handlers.append(handler)

    def unsubscribe(self, handler: EventHandler) -> None:
        with self._lock:
            if handler in self._handlers:
                self._handlers.remove(handler)

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def call(self, call: Call, timeout: float | None = None, **args: Any) -> Reply:
        """One platform call; blocks for its reply (other threads may call meanwhile)."""
        if self._closed.is_set():
            raise ChannelClosed("channel closed")
        slot = _Slot()
        msg_id = 0
        try:
            run = self._close_run_with(args, slot) if call == Call.REPORT and self._runs \
                else None
            msg_id = run.id if run is not None else self._request(call, args, slot=slot)
            reply = self._await(call, slot, timeout)
            if run is not None and not reply.ok:  # the run's held reports were refused too
                run.on_reply(reply)
            return reply
        except OSError as e:
            self._closed.set()
            raise ChannelClosed(f"channel write failed: {e}") from None
        finally:
            with self._lock:
                self._waiting.pop(msg_id, None)

    def _await(self, call: str, slot: _Slot, timeout: float | None) -> Reply:
        limit = self.timeout if timeout is None else timeout  # for the reply
        deadline = time.monotonic() + limit
        while True:
            reply = slot.get(timeout=min(0.5, max(0.0, deadline - time.monotonic())))
            if reply is not None:
                if call in _ANNOUNCING and reply.ok:
                    self._learn(reply)
                return reply
            if self._closed.is_set():
                raise ChannelClosed("channel closed while waiting for a reply")
            if time.monotonic() >= deadline:
                raise CallTimeout(call, limit)

    # ---- retries on a lift (module docstring)
    def on_lift(self, call: Call, pe: int, **args: Any) -> LiftRetry:
        """Register `call` on `pe` (with `args`) to be written when the platform pushes
        `lockout-lifted` for `pe`. The caller then takes its reply with `retry_reply`
        (or drops it with `drop_retry`). ChannelClosed once the channel is closed."""
        full = {"pe": pe, **args}
        retry = LiftRetry(call, pe, full, request_tail(call, full), threading.get_ident())
        with self._lock:
            if self._closed.is_set():
                raise ChannelClosed("channel closed")
            self._lift_retries.add(retry)
        return retry

    def retry_reply(self, retry: LiftRetry, timeout: float | None = None) -> Reply:
        """The reply to a registered call: the one the reader wrote on the lift, waited
        for; if no lift came (the caller's fallback timeout), the call is taken back and
        made now. ChannelClosed if the channel closed (before or while waiting)."""
        with self._lock:
            slot: _Slot | None = retry.slot if retry.written else None
            unwritten = not retry.written and self._lift_retries.remove(retry)
            if unwritten:
                retry.id = -1
        if unwritten:
            return self.call(Call(retry.call), timeout, **retry.args)
        if slot is None:  # dropped: the channel closed, or the caller dropped it
            raise ChannelClosed("channel closed: the retry was dropped")
        try:
            return self._await(retry.call, slot, timeout)
        finally:
            with self._lock:
                self._waiting.pop(retry.id, None)

    def drop_retry(self, retry: LiftRetry) -> None:
        """Cancel a registered call: not written any more; if it was written already, its
        reply is not waited for (it is read and dropped)."""
        with self._lock:
            if retry.written:
                self._waiting.pop(retry.id, None)
            else:
                self._lift_retries.remove(retry)
            retry.id = -1

    def _write_lifted(self, pes: list[int]) -> None:
        """The reader thread, on a `lockout-lifted` line: write the calls registered for
        its PEs, in one write, filed as calls are (ids in order, each its slot). The
        registering thread's held reports and runs are queued ahead of its call."""
        with self._lock:
            retries = self._lift_retries.take(pes)
            if not retries:
                return
            for retry in retries:
                if self._runs:
                    self._queue_runs(self._runs.close(retry.thread, retry.pe))
                retry.id = self._next_id
                self._next_id += 1
                self._waiting[retry.id] = retry.slot = _Slot()
                self._out.append(request_line(retry.id, retry.tail))
            self._quiet_run = 0
            self.lift_retries_written += len(retries)
            writer = self._wlock.acquire(blocking=False)
        if writer:
            try:
                self._drain()
            except (HcallError, OSError):  # closed: the waiting callers see it
                self._closed.set()

    def _learn(self, reply: Reply) -> None:
        """What the platform announced (`query-functions`): how many steps a report
        line may carry; absent (an older platform) or not a count above 1: one a line."""
        n = reply.get(REPORT_STEPS)
        self.report_steps = min(n, MAX_REPORT_STEPS) if type(n) is int and n > 1 else 0

    def _request(self, call: Call, args: Mapping[str, Any], *, slot: _Slot | None = None,
                 on_reply: Callable[[Reply], None] | None = None, quiet: bool = False,
                 hold: bool = False) -> int:
        """Queue one request's line, filed first (a call's `slot`, else a post's
        `on_reply`), and write the queue unless `hold`; return its id. Ids are given and
        lines queued under `_lock`, so they go out in increasing order: a reply's id is
        later than every request written before it, which is what settles the quiet
        posts (`_settle_quiet`). Nothing is filed if it cannot be encoded."""
        tail = request_tail(call, args)  # (the costly part, outside the lock)
        with self._lock:
            if self._runs:  # (this line must not overtake a run of reports: queued first)
                self._queue_runs(self._runs.close(threading.get_ident(), args.get("pe")))
            msg_id = self._next_id
            quiet = quiet and slot is None and self._quiet_run < MAX_QUIET_RUN
            line = request_line(msg_id, tail, quiet)
            self._next_id += 1
            if slot is not None:
                self._waiting[msg_id] = slot
            else:
                self._posted[msg_id] = on_reply
            if quiet:
                self._quiet.append(msg_id)
                self._quiet_run += 1
            else:
                self._quiet_run = 0
            self._out.append(line)
            writer = not hold and self._wlock.acquire(blocking=False)
        if writer:
            self._drain()
        return msg_id

    def _hold_report(self, args: Mapping[str, Any],
                     on_reply: Callable[[Reply], None] | None) -> None:
        """A held quiet report on a PE: it joins its thread's open run on that PE, or
        opens one (`eeh_abi.report_runs`); not queued while open."""
        step = step_json(args)
        pe, thread = args["pe"], threading.get_ident()
        with self._lock:
            run = self._runs.joinable(thread, pe, len(step), self.report_steps)
            if run is None:
                run = ReportRun(pe, thread, time.monotonic())
                self._queue_runs(self._runs.open(run))
            run.add(step, on_reply)

    def _close_run_with(self, args: Mapping[str, Any], slot: _Slot) -> ReportRun | None:
        """A waited report on the PE of its thread's open run, as the run's last step:
        the run is queued as a request that asks for its reply (into `slot`) and written.
        None (nothing done) if the report cannot join the run."""
        pe = args.get("pe")
        if type(pe) is not int or "steps" in args:
            return None
        step = step_json(args)
        thread = threading.get_ident()
        with self._lock:
            run = self._runs.joinable(thread, pe, len(step), self.report_steps)
            if run is None:
                return None
            run.add(step, None)  # (the caller gets the reply)
            self._runs.close(thread, pe)  # (only this run: a PE has one open run)
            self._queue_runs([run], slot)
            writer = self._wlock.acquire(blocking=False)
        if writer:
            self._drain()
        return run

    def _queue_runs(self, runs: list[ReportRun], slot: _Slot | None = None) -> None:
        """Queue closed runs, each with the next id, filed as a post (or as a call whose
        reply goes to `slot`). Under `_lock`."""
        for run in runs:
            run.id = self._next_id
            self._next_id += 1
            if slot is not None:
                self._waiting[run.id] = slot
                run.quiet = False
            else:
                run.quiet = self._quiet_run < MAX_QUIET_RUN  # else it asks for its reply
                self._posted[run.id] = run.on_reply
            if run.quiet:
                self._quiet.append(run.id)
                self._quiet_run += 1
            else:
                self._quiet_run = 0
            self._out.append(run)

    def _drain(self) -> None:
        """The writer (it holds `_wlock`): write the queued lines, in runs, until the
        queue is empty. A thread that queued a line while a writer was at work left it to
        that writer: the writer lets `_wlock` go only under `_lock`, once it found the
        queue empty, and a line is queued (and `_wlock` tried) under `_lock`, so no line
        is left behind. Several threads' lines go out in one write."""
        try:
            while True:
                with self._lock:
                    out = self._out
                    if not out:
                        self._wlock.release()
                        return
                    self._out = []  # (its runs are closed: their lines are built below)
                self._write_locked(b"".join(
                    x if isinstance(x, bytes) else request_line(x.id, x.tail(), x.quiet)
                    for x in out))
        except BaseException:
            self._wlock.release()
            raise

    def _write_locked(self, data: bytes) -> None:
        """Whole lines, under `_wlock` (not interleaved with another thread's);
        ChannelClosed once the channel is closed or the platform takes nothing for
        `timeout` seconds."""
        view = memoryview(data)
        deadline = time.monotonic() + self.timeout
        while view:
            if self._closed.is_set():
                raise ChannelClosed("channel closed")
            try:
                n = os.write(self._fd, view)
            except BlockingIOError:
                n = 0
            if n:
                view = view[n:]
                deadline = time.monotonic() + self.timeout
                continue
            if time.monotonic() >= deadline:
                self._closed.set()
                raise ChannelClosed(f"the platform took nothing written for "
                                    f"{self.timeout:g} s: channel closed")
            select.select([], [self._fd], [], 0.1)

    def flush(self, *, every: bool = False) -> None:
        """Write the held posts' lines now: the queue and this thread's open run of
        reports (`every`: every thread's); module docstring. ChannelClosed if they cannot
        be written (the channel is then closed)."""
        with self._lock:
            if self._runs:
                self._queue_runs(self._runs.close_all() if every
                                 else self._runs.close(threading.get_ident(), None))
            # a writer at work writes them (it empties the queue before it stops)
            writer = bool(self._out) and self._wlock.acquire(blocking=False)
        if writer:
            try:
                self._drain()
            except OSError as e:
                self._closed.set()
                raise ChannelClosed(f"channel write failed: {e}") from None

    def post(self, call: Call, on_reply: Callable[[Reply], None] | None = None, *,
             quiet: bool = False, hold: bool = False, **args: Any) -> None:
        """A platform call whose reply is not waited for (a driver's step reports): the
        request is written now, in order with this channel's other requests; the platform
        answers a channel's requests in order, so the reply of any later `call` also
        means this one was handled. `on_reply` gets the reply on the reader thread (not
        at all if the channel closes first). ChannelClosed if it cannot be written.

        `quiet`: the platform answers only if the call is refused or fails, so `on_reply`
        runs only then; the reply to any later request means it was ok (no reply line,
        no wake-up of the reader for it). After MAX_QUIET_RUN quiet posts in a row, the
        next one asks for its reply (which settles them all).

        `hold`: the line goes out with the next request written, or at `flush()` (module
        docstring); the caller flushes before it blocks."""
        if self._closed.is_set():
            raise ChannelClosed("channel closed")
        try:
            if hold and quiet and self.report_steps and call == Call.REPORT \
                    and type(args.get("pe")) is int and "steps" not in args:
                self._hold_report(args, on_reply)
                return
            self._request(call, args, on_reply=on_reply, quiet=quiet, hold=hold)
        except OSError as e:
            self._closed.set()
            raise ChannelClosed(f"channel write failed: {e}") from None

    @property
    def posted_pending(self) -> int:
        """Posted requests whose reply has not come yet (quiet ones: no later reply yet)."""
        with self._lock:
            return len(self._posted)

    def _read_loop(self) -> None:
        lines = LineBuffer()
        try:
            while not self._closed.is_set():
                r, _, _ = select.select([self._fd], [], [], 0.5)
                if not r or (self._runs and self._stale()):
                    try:  # a poster that did not flush: held HOLD_MAX_S (0.5 s) at most
                        self.flush(every=True)
                    except HcallError:  # closed: the loop ends
                        pass
                    if not r:
                        continue
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    continue
                if not data:  # a socket: the peer closed; a virtio port: no host end now
                    if self._eof_closes or self._answered:
                        break  # (a port's host end, once there, never comes back)
                    time.sleep(0.05)
                    continue
                self._answered = True
                for item in lines.feed(data):
                    if isinstance(item, DecodeError):
                        self.bad_lines += 1
                        continue
                    self._dispatch(item)
        except OSError:
            pass
        finally:
            self._closed.set()
            with self._lock:  # no reply comes any more: no on_reply will run
                self._posted.clear()
                self._quiet.clear()
                for retry in self._lift_retries.clear():  # none will be written
                    retry.id = -1

    def _stale(self) -> bool:
        """A run has been open HOLD_MAX_S or more."""
        with self._lock:
            return bool(self._runs) and time.monotonic() - self._runs.oldest() >= HOLD_MAX_S

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except DecodeError:
            self.bad_lines += 1
            return
        if isinstance(msg, Reply):
            on_reply = None
            with self._lock:
                # taken out: a second reply with the same id finds no slot
                slot = self._waiting.pop(msg.id, None) if msg.id is not None else None
                posted = slot is None and msg.id is not None and msg.id in self._posted
                if posted:
                    on_reply = self._posted.pop(msg.id)  # type: ignore[arg-type]
                if msg.id is not None:
                    self._settle_quiet(msg.id)
            if slot is not None:
                slot.put(msg)
            elif on_reply is not None:
                try:
                    on_reply(msg)
                except Exception:  # a caller's bug must not stop the channel
                    self.handler_errors += 1
        elif isinstance(msg, Event):
            self.event_lines += 1
            events = unbatch(msg)
            if msg.name == Kind.LOCKOUT_LIFTED and self._lift_retries:
                self._write_lifted([ev.pe for ev in events if type(ev.pe) is int])
            with self._lock:
                handlers = list(self._handlers)
            for ev in events:
                self.events_seen += 1
                for h in handlers:
                    try:
                        h(ev)
                    except Exception:  # a subscriber's bug must not stop the channel
                        self.handler_errors += 1
        # a Request from the other side is not part of this protocol: ignored

    def _settle_quiet(self, reply_id: int) -> None:
        """The quiet posts before `reply_id` were ok (answered in order, and not refused:
        a refusal would have been a reply of its own); `reply_id`'s own entry, when it is
        one, was taken with its reply. Under `_lock`."""
        quiet = self._quiet
        while quiet and quiet[0] <= reply_id:
            msg_id = quiet.popleft()
            if msg_id != reply_id:
                self._posted.pop(msg_id, None)

    def close(self) -> None:
        if self._closed.is_set() and self._close_fn is None:
            return
        if not self._closed.is_set():
            try:
                self.flush(every=True)  # what is held goes out before the end
            except HcallError:
                pass
        self._closed.set()
        self._reader.join(timeout=2)
        fn, self._close_fn = self._close_fn, None
        if fn is not None:
            try:
                fn()
            except OSError:
                pass

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
