"""One client of a server socket: greeting, negotiation, commands in order, events.

A session reads, executes and answers one command after the other, as QEMU does for
in-band commands; while a command runs it reads nothing more (the client's further input
waits in the socket). Events are written as they come, between replies, and only once
the client has negotiated capabilities. A client that goes away, even while its command
runs, costs nothing else: the command completes, its reply is dropped, the session ends.
A client that does not read is never cut off for its events: once `EVENT_BUFFER` bytes
wait for it in the socket, further events wait in a queue of at most
`MAX_QUEUED_EVENTS`; when the queue is full, the oldest queued event of the same type is
dropped (else the oldest queued event), so a flood of one event type never pushes out the
last event of another type (QEMU's rule for throttled events, `monitor_qapi_event_throttle`:
per type, the latest event wins). When the client reads again it gets one
`EVENTS_DROPPED` event, {"dropped": N, "since": <timestamp of the first event it missed>},
then the queued events, then new ones. Only a client whose *replies* pile up beyond
`MAX_OUTPUT` bytes is disconnected (logged with its numbers), so a client holds at most
`EVENT_BUFFER` + `MAX_QUEUED_EVENTS` events' worth of memory and delays nobody else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

from qmp_server.errors import COMMAND_NOT_FOUND, QmpError
from qmp_server.framing import JsonSplitter, Malformed, Text, parse


class Endpoint(Protocol):
    """What a session needs from the socket it was accepted on (server.Endpoint)."""

    name: str

    def record(self, client: int, direction: str, message: object,
               size: int | None = None) -> None: ...
    def greeting(self) -> dict[str, Any]: ...
    async def execute(self, name: str, args: dict[str, Any]) -> object: ...

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_OUTPUT = 16 << 20  # bytes waiting for a client beyond which a reply disconnects it
EVENT_BUFFER = 1 << 20  # bytes waiting in the socket beyond which events are queued
MAX_QUEUED_EVENTS = 256  # events queued for a client that does not read, at most
EVENTS_DROPPED = "EVENTS_DROPPED"  # the marker event: how many events a client missed


@dataclass(frozen=True)
class Exchange:
    """One message in the server's history."""

    time: float  # time.monotonic()
    socket: str  # the server's own socket's name ("platform") or the guest's
    client: int  # the connection's number on that socket, from 1
    direction: str  # "in" from the client, "out" to it (replies, greeting, events)
    message: object  # the JSON value; {"malformed": desc} for input that is not JSON


def encode(msg: dict[str, Any]) -> bytes:
    """A server message on the wire: ASCII JSON ending in CRLF (qmp-spec)."""
    return json.dumps(msg, ensure_ascii=True, allow_nan=False).encode() + b"\r\n"


def check_request(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The command name and arguments of a request object (QEMU's checks and descs)."""
    name: str | None = None
    for key, value in obj.items():
        if key == "execute":
            if not isinstance(value, str):
                raise QmpError("QMP input member 'execute' must be a string")
            name = value
        elif key == "arguments":
            if not isinstance(value, dict):
                raise QmpError("QMP input member 'arguments' must be an object")
        elif key != "id":  # exec-oob too: capability 'oob' is never offered
            raise QmpError(f"QMP input member '{key}' is unexpected")
    if name is None:
        raise QmpError("QMP input lacks member 'execute'")
    args: dict[str, Any] = obj.get("arguments", {})
    return name, args


def check_capabilities(args: dict[str, Any]) -> None:
    for key in args:
        if key != "enable":
            raise QmpError(f"Parameter '{key}' is unexpected")
    enable = args.get("enable", [])
    if not isinstance(enable, list):
        raise QmpError("Invalid parameter type for 'enable', expected: array")
    for i, cap in enumerate(enable):
        if cap != "oob":
            raise QmpError(f"Parameter 'enable[{i}]' does not accept value '{cap}'")
        raise QmpError("Capability 'oob' not available")


def _when_ts(ts: object) -> tuple[int, int]:
    if isinstance(ts, dict):
        sec, micro = ts.get("seconds"), ts.get("microseconds")
        if isinstance(sec, int) and isinstance(micro, int):
            return sec, micro
    return (1 << 62, 0)  # no usable timestamp: never the earliest


def _when(msg: dict[str, Any]) -> tuple[int, int]:
    return _when_ts(msg.get("timestamp"))


class Session:
    def __init__(self, endpoint: Endpoint, number: int, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, limit: int) -> None:
        self.endpoint = endpoint
        self.number = number
        self.reader = reader
        self.writer = writer
        self.splitter = JsonSplitter(limit=limit)
        self.negotiated = False
        self.closed = False
        self.queue: deque[tuple[dict[str, Any], bytes]] = deque()  # events not yet written
        self.dropped = 0  # events dropped since the last EVENTS_DROPPED marker
        self.dropped_total = 0
        self.since: object = None  # the timestamp of the first of them
        self._flusher: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Session {self.endpoint.name}#{self.number}>"

    # ---- output -----------------------------------------------------------------------
    def buffered(self) -> int:
        """Bytes written for the client that it has not read yet."""
        return self.writer.transport.get_write_buffer_size()

    def _write(self, msg: dict[str, Any], data: bytes) -> bool:
        self.endpoint.record(self.number, "out", msg, len(data))
        try:
            self.writer.write(data)
        except (ConnectionError, OSError):
            self.close()
            return False
        return True

    def send(self, msg: dict[str, Any], data: bytes | None = None) -> None:
        """Queue one reply or greeting (non-blocking); `data` is its encoding if already
        made. A client with more than `MAX_OUTPUT` bytes waiting is disconnected."""
        if self.closed or self.writer.is_closing():
            return
        if data is None:
            data = encode(msg)
        if not self._write(msg, data):
            return
        if self.buffered() > MAX_OUTPUT:
            log.warning("%r: client does not read its replies: %d bytes wait for it "
                        "(limit %d), %d events queued, %d dropped; disconnected", self,
                        self.buffered(), MAX_OUTPUT, len(self.queue), self.dropped_total)
            self.close(abort=True)

    def event(self, msg: dict[str, Any], data: bytes) -> None:
        """Send one event (non-blocking): written at once while the client reads, else
        queued (bounded, see the module docstring); never disconnects the client."""
        if self.closed or self.writer.is_closing():
            return
        if not self.queue and not self.dropped and self.buffered() < EVENT_BUFFER:
            self._write(msg, data)
            return
        if len(self.queue) >= MAX_QUEUED_EVENTS:
            name = msg.get("event")
            victim = next((i for i, (m, _) in enumerate(self.queue)
                           if m.get("event") == name), 0)
            old, _ = self.queue[victim]
            del self.queue[victim]
            if self.since is None or _when(old) < _when_ts(self.since):
                self.since = old.get("timestamp")
            if not self.dropped:
                log.info("%r: client does not read; dropping events (queue of %d full)",
                         self, MAX_QUEUED_EVENTS)
            self.dropped += 1
            self.dropped_total += 1
        self.queue.append((msg, data))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        """Write the queued events as the client reads: the marker first if any were
        dropped, then the queue, never more than `EVENT_BUFFER` bytes waiting."""
        try:
            while (self.queue or self.dropped) and not self.closed:
                await self.writer.drain()  # until the client has read most of its buffer
                if self.closed or self.writer.is_closing():
                    return
                if self.dropped:
                    now_us = time.time_ns() // 1000
                    seconds, micro = divmod(now_us, 1_000_000)
                    marker: dict[str, Any] = {
                        "event": EVENTS_DROPPED,
                        "data": {"dropped": self.dropped, "since": self.since},
                        "timestamp": {"seconds": seconds, "microseconds": micro}}
                    log.info("%r: client reads again; it missed %d events", self,
                             self.dropped)
                    self.dropped, self.since = 0, None
                    if not self._write(marker, encode(marker)):
                        return
                while self.queue and self.buffered() < EVENT_BUFFER:
                    msg, data = self.queue.popleft()
                    if not self._write(msg, data):
                        return
        except (ConnectionError, OSError):
            self.close()
        except Exception:
            log.exception("%r: event queue failed", self)
            self.close()
        finally:
            self._flusher = None

    async def reply(self, msg: dict[str, Any]) -> None:
        try:
            data = encode(msg)
        except (TypeError, ValueError) as e:  # a backend or QEMU value JSON cannot carry
            log.error("%r: reply not serializable: %s", self, e)
            err: dict[str, Any] = QmpError(f"internal error: reply not serializable: {e}").reply()
            if "id" in msg:
                err["id"] = msg["id"]
            msg, data = err, encode(err)
        self.send(msg, data)
        if not self.closed:
            try:
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.close()

    def close(self, abort: bool = False) -> None:
        """Close the connection: after what is queued for the client, or at once."""
        if not self.closed:
            self.closed = True
            self.queue.clear()
            self.writer.close()
            if self._flusher is not None and self._flusher is not asyncio.current_task():
                self._flusher.cancel()
        if abort:
            self.writer.transport.abort()

    # ---- input ------------------------------------------------------------------------
    async def serve(self) -> None:
        try:
            self.send(self.endpoint.greeting())
            while not self.closed:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                for piece in self.splitter.feed(data):
                    await self._handle(piece)
                    if self.closed:
                        break
        except (ConnectionError, OSError):
            pass
        except Exception:
            log.exception("%r: session failed", self)
        finally:
            self.close()

    async def _handle(self, piece: Text | Malformed) -> None:
        value = parse(piece) if isinstance(piece, Text) else piece
        if isinstance(value, Malformed):
            self.endpoint.record(self.number, "in", {"malformed": value.desc})
            await self.reply(QmpError(value.desc).reply())
            return
        self.endpoint.record(self.number, "in", value)
        reply: dict[str, Any]
        try:
            if not isinstance(value, dict):
                raise QmpError("QMP input must be a JSON object")
            name, args = check_request(value)
            result = await self._execute(name, args)
            reply = {"return": result}
        except QmpError as e:
            reply = e.reply()
        if isinstance(value, dict) and "id" in value:
            reply["id"] = value["id"]
        await self.reply(reply)

    async def _execute(self, name: str, args: dict[str, Any]) -> object:
        if name == "qmp_capabilities":
            if self.negotiated:
                raise QmpError("Capabilities negotiation is already complete, command ignored",
                               COMMAND_NOT_FOUND)
            check_capabilities(args)
            self.negotiated = True
            return {}
        if not self.negotiated:
            raise QmpError("Expecting capabilities negotiation with 'qmp_capabilities'",
                           COMMAND_NOT_FOUND)
        return await self.endpoint.execute(name, args)
