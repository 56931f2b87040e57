"""Serve the platform calls on unix sockets, one per caller identity, on the model's loop.

In VM mode QEMU connects a guest's virtio-serial port (`eeh.hcall`) to the socket of that
guest's owner; in harness mode host drivers connect to theirs. Each connection reads
lines, answers each request in order, and receives the events pushed to its owner.
A malformed line gets an error reply and the stream goes on; a connection that does not
read its replies and events (more than `ChannelBudget.max_unread_bytes` waiting, see
budget.py) is aborted, logged and recorded with the numbers, so one caller never holds
up the others nor grows the host; the loop is yielded after every `LINES_PER_TURN` lines
(the replies to the lines answered in a row, and the events their calls pushed to the
caller, go out in one write). Every line gets
exactly one reply, whatever it holds, but for an ok quiet request (`"quiet": true`: a
driver's posted step report), which gets none (the next reply says it was ok): a bug met
while answering is a -3 "internal error" reply (logged), a reply too long for a line is
replaced by a -3 saying so; the connection is never lost to a caller's input. A caller
that leaves mid-call: the call being answered completes, its reply and the lines after it
are dropped.

Pushed events are batched (`push`): the events of one name and the same data pushed to
one owner one after the other, within one turn of the loop (the lift of every VF PE's
lockout, the side-effect freezes of a PE tree), go as one line naming their PEs,
`{"event": "lockout-lifted", "pe": <the first>, "data": {"pes": [<each>, ...]}}`
(docs/platform-calls.md, "Batched events"); `eeh_abi.hcall.Channel` hands its subscribers
one event per PE. An owner's events keep their order, and the events pushed while a call
is answered are written before its reply, as when each was a line of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from eeh_abi.hcall import (
    DecodeError,
    Event,
    HcallError,
    LineBuffer,
    Reply,
    Request,
    decode,
    encode,
)
from eeh_abi.papr import Status
from eeh_abi.schema import BATCHED_PES, MAX_BATCH
from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.errors import ShimError
from hypervisor_shim.hcall.budget import CHANNEL_BUDGET, ChannelBudget, RecordBudgets
from hypervisor_shim.hcall.calls import PlatformCalls
from hypervisor_shim.pe import Notice
from hypervisor_shim.timeline import Timeline

log = logging.getLogger(__name__)

# Lines of one connection answered in a row before the loop is yielded to the others (their
# replies go out in one write): a flood on one channel holds the others up for at most
# this many lines' work (~3-6 ms), and a burst of calls costs one system call, not one
# each. 64: the first unfreezes a 64-VF adapter's lift lets through, written by the
# drivers' channel in one write (eeh_abi.hcall.Channel.on_lift), are answered in one turn
# (at 32 the yield between the two halves cost 0.2-0.8 ms at the p90, on every VF after it).
LINES_PER_TURN = 64


class HcallServerError(ShimError):
    """A channel socket that cannot be served."""

    def __init__(self, owner: str, reason: str) -> None:
        super().__init__(f"platform channel of {owner}: {reason}")
        self.owner = owner
        self.reason = reason


@dataclass(eq=False)
class Connection:
    owner: str
    writer: asyncio.StreamWriter
    lines_in: int = 0
    bad_lines: int = 0
    events_out: int = 0
    internal_errors: int = 0
    closed: bool = False
    # its lines are being answered in a row: what is sent to it waits for the write at the
    # end of the run (`_serve_conn`), in order, instead of a write(2) of its own each
    answering: bool = False
    budget: ChannelBudget = CHANNEL_BUDGET
    over_budget: dict[str, object] | None = None  # the numbers, once the budget acted

    _out: list[bytes] = field(default_factory=list)  # written by `flush`
    _out_bytes: int = 0

    def send(self, data: bytes) -> bool:
        """Queue a line to the caller (written by `flush`); False once the connection is
        closed, or closed now because the caller does not read (the budget)."""
        if self.closed or self.writer.is_closing():
            return False
        waiting = self.writer.transport.get_write_buffer_size() + self._out_bytes
        if waiting > self.budget.max_unread_bytes:
            self.closed = True
            self._out.clear()
            self.over_budget = {"over_budget": True, "unread_bytes": waiting,
                                "max_unread_bytes": self.budget.max_unread_bytes,
                                "events_out": self.events_out}
            log.warning("platform channel of %s: %d bytes of replies and events wait unread "
                        "(at most %d); the channel is closed (its unread output dropped)",
                        self.owner, waiting, self.budget.max_unread_bytes)
            # abort, not close: close() would wait for a reader that never reads
            self.writer.transport.abort()
            return False
        self._out.append(data)
        self._out_bytes += len(data)
        return True

    def flush(self) -> None:
        """Write what `send` queued, in one write (one system call for a run of lines)."""
        if not self._out:
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        self._out.clear()
        self._out_bytes = 0
        if not self.closed and not self.writer.is_closing():
            self.writer.write(data)


@dataclass
class _Batch:
    """Events waiting to go to one owner as one line: one name, one data, their PEs."""

    name: str
    data: dict[str, object]
    pes: list[int | None]
    t: float

    def joins(self, name: str, pe: int | None, data: object) -> bool:
        return (name == self.name and pe is not None and self.pes[0] is not None
                and len(self.pes) < MAX_BATCH and data == self.data)

    def line(self) -> bytes:
        if len(self.pes) == 1:
            return encode(Event(self.name, self.pes[0], self.data, self.t))
        return encode(Event(self.name, self.pes[0], {**self.data, BATCHED_PES: self.pes},
                            self.t))


@dataclass
class HcallServer:
    calls: PlatformCalls
    timeline: Timeline
    clock_t0: float = 0.0
    channel_budget: ChannelBudget = CHANNEL_BUDGET
    records: RecordBudgets = field(default_factory=RecordBudgets)
    connections: dict[str, list[Connection]] = field(default_factory=dict)
    _servers: dict[str, asyncio.AbstractServer] = field(default_factory=dict)
    _paths: dict[str, Path] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _batches: dict[str, _Batch] = field(default_factory=dict)  # owner -> its waiting events
    _flush_armed: bool = False

    async def listen(self, owner: str, path: Path) -> Path:
        """Serve `owner`'s channel on a unix socket at `path` (created here)."""
        if owner in self._servers:
            raise HcallServerError(owner, "already served")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        try:
            server = await asyncio.start_unix_server(
                lambda r, w: self._serve(owner, r, w), path=str(path))
        except OSError as e:
            raise HcallServerError(owner, f"cannot listen on {path}: {e}") from e
        self._servers[owner] = server
        self._paths[owner] = path
        self.connections.setdefault(owner, [])
        return path

    async def adopt(self) -> None:
        """Serve every channel on the running loop from now on: the loop that served them
        stalled (hypervisor_shim.watchdog; it is stuck in a callback and touches none of
        this). Each owner's socket listens again at its path; each connection goes on
        over a duplicate of its socket. What the stalled loop had read of a connection and
        not answered, or not yet written to it, is lost (those calls time out)."""
        paths = dict(self._paths)
        self._servers.clear()
        for owner, path in paths.items():
            await self.listen(owner, path)
        for conns in self.connections.values():
            for conn in list(conns):
                old = conn.writer.get_extra_info("socket")
                if conn.closed or old is None:
                    conns.remove(conn)
                    continue
                sock = socket.socket(fileno=os.dup(old.fileno()))
                reader, conn.writer = await asyncio.open_unix_connection(sock=sock)
                task = asyncio.get_running_loop().create_task(self._serve_conn(conn, reader))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _serve(self, owner: str, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        conn = Connection(owner, writer, budget=self.channel_budget)
        self.connections.setdefault(owner, []).append(conn)
        self.timeline.record(Source.SHIM, Kind.CHANNEL_CONNECTED, owner=owner)
        await self._serve_conn(conn, reader)

    async def _serve_conn(self, conn: Connection, reader: asyncio.StreamReader) -> None:
        owner = conn.owner
        lines = LineBuffer()
        try:
            while not conn.closed:
                data = await reader.read(65536)
                if not data:
                    break
                conn.answering = True
                for n, item in enumerate(lines.feed(data), 1):
                    reply = self._answer_safely(owner, conn, item)
                    if self._batches:
                        self.flush_events()  # the events of the call go before its reply
                    if reply is not None and not conn.send(_encode_reply(reply)):
                        break
                    if n % LINES_PER_TURN == 0:
                        conn.answering = False
                        conn.flush()
                        await asyncio.sleep(0)  # other channels go on
                        conn.answering = True
                conn.answering = False
                conn.flush()  # the replies (and events) of what was read, in one write
                await asyncio.sleep(0)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.closed = True
            with contextlib.suppress(ValueError):
                self.connections[owner].remove(conn)
            conn.writer.close()
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()
            # one entry, with the budget's numbers when it was the budget that closed it
            self.timeline.record(Source.SHIM, Kind.CHANNEL_CLOSED, owner=owner,
                                 data={"lines": conn.lines_in, "bad_lines": conn.bad_lines,
                                       **(conn.over_budget or {})})

    def _answer_safely(self, owner: str, conn: Connection, item: bytes | DecodeError
                       ) -> Reply | None:
        """The line's reply; None for an ok quiet request (no reply line)."""
        try:
            return self._answer(owner, conn, item)
        except Exception:  # a bug, not the caller's fault: one reply, the channel goes on
            conn.internal_errors += 1
            if conn.internal_errors <= 3:
                log.exception("platform channel of %s: internal error", owner)
            return Reply(None, int(Status.PARAM_ERROR), error="internal error")

    def _answer(self, owner: str, conn: Connection, item: bytes | DecodeError
                ) -> Reply | None:
        conn.lines_in += 1
        if isinstance(item, DecodeError):
            conn.bad_lines += 1
            return Reply(None, int(Status.PARAM_ERROR), error=item.reason)
        try:
            msg = decode(item)
        except DecodeError as e:
            conn.bad_lines += 1
            mid = e.msg_id if isinstance(e.msg_id, int) and not isinstance(e.msg_id, bool) \
                else None
            return Reply(mid, int(Status.PARAM_ERROR), error=e.reason)
        if not isinstance(msg, Request):
            conn.bad_lines += 1
            return Reply(None, int(Status.PARAM_ERROR), error="only requests are accepted")
        if self.records.refusing:  # (most calls: no window of refusals open)
            self.close_windows()
        retry_ms = self.records.admit(owner, msg.call)
        if retry_ms is not None:
            self._window_later()
            b = self.records.budget
            return Reply(msg.id, int(Status.BUSY), {"retry_ms": retry_ms},
                         error=f"over budget: at most {b.burst_bytes} bytes of records at "
                               f"once, {b.bytes_per_s} a second")
        before = self.timeline.bytes_written
        try:
            reply = self.calls.handle(owner, msg)
            return None if msg.quiet and reply.ok else reply
        finally:  # what answering it wrote, notices included
            self.records.charge(owner, self.timeline.bytes_written - before)

    def _window_later(self) -> None:
        with contextlib.suppress(RuntimeError):  # no loop: the next call closes it
            asyncio.get_running_loop().call_later(self.records.budget.window_s + 0.01,
                                                  self.close_windows)

    def close_windows(self, force: bool = False) -> None:
        """One timeline entry per owner for its window of refused calls that is over."""
        for owner, call, data in self.records.due(force):
            self.timeline.record(Source.CALL, call, owner=owner, data=data)
            log.warning("platform channel of %s: %d calls over the record budget refused "
                        "in %.1f s", owner, data["refused"], data["window_s"])

    def push(self, notice: Notice) -> None:
        """Send a policy notice's event to its owners' connections (on the loop thread):
        queued as part of a batch (module docstring), written at the end of this turn of
        the loop or before the reply of the call being answered, whichever comes first."""
        if notice.event is None:
            return
        data = dict(notice.data)
        batchable = BATCHED_PES not in data
        t = _loop_time()
        for owner in notice.owners:
            batch = self._batches.get(owner)
            if batch is not None and batchable and batch.joins(notice.event, notice.address,
                                                               data):
                batch.pes.append(notice.address)
                continue
            if batch is not None:
                self._flush_owner(owner)
            self._batches[owner] = _Batch(notice.event, data, [notice.address], t)
            if not batchable:
                self._flush_owner(owner)
        self._arm_flush()

    def _arm_flush(self) -> None:
        if not self._batches or self._flush_armed:
            return
        try:
            asyncio.get_running_loop().call_soon(self._flush_at_end_of_turn)
        except RuntimeError:  # no loop (a caller outside it): now
            self.flush_events()
            return
        self._flush_armed = True

    def _flush_at_end_of_turn(self) -> None:
        # armed until it runs: the events pushed meanwhile and flushed before a reply
        # (`_serve_conn`) do not schedule another (one callback a turn, not one a line)
        self._flush_armed = False
        self.flush_events()

    def flush_events(self) -> None:
        """Write every owner's waiting events now."""
        for owner in list(self._batches):
            self._flush_owner(owner)

    def _flush_owner(self, owner: str) -> None:
        batch = self._batches.pop(owner, None)
        if batch is None:
            return
        data = batch.line()
        for conn in list(self.connections.get(owner, ())):
            if conn.send(data):
                conn.events_out += 1
            if not conn.answering:  # else written with the run's replies, in order
                conn.flush()  # with the replies queued before it, in order

    def push_to(self, owner: str, name: str, pe: int | None, data: dict[str, object]) -> None:
        self._flush_owner(owner)  # after what was pushed to it before
        raw = encode(Event(name, pe, data, _loop_time()))
        for conn in list(self.connections.get(owner, ())):
            conn.send(raw)
            if not conn.answering:
                conn.flush()

    async def close(self) -> None:
        for server in self._servers.values():
            server.close()
        for conns in self.connections.values():
            for conn in conns:
                conn.closed = True
                conn.writer.close()
        for server in self._servers.values():
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()


def _encode_reply(reply: Reply) -> bytes:
    """The reply's line; one that would not fit a line becomes a -3 that says so."""
    try:
        return encode(reply)
    except HcallError as e:
        return encode(Reply(reply.id, int(Status.PARAM_ERROR),
                            error=f"reply too long: {str(e)[:100]}"))


def _loop_time() -> float:
    """The running loop's time; 0.0 outside a loop."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return 0.0
