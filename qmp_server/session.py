"""One client of a server socket: greeting, negotiation, commands in order, events.

A session reads, executes and answers one command after the other, as QEMU does for
in-band commands; while a command runs it reads nothing more (the client's further input
waits in the socket). Events are written as they come, between replies, and only once
the client has negotiated capabilities. A client that goes away, even while its command
runs, costs nothing else: the command completes, its reply is dropped, the session ends.
A client that does not read what it is sent is cut off once `MAX_OUTPUT` bytes are
waiting for it, so it never holds memory or delays anyone else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from qmp_server.errors import COMMAND_NOT_FOUND, QmpError
from qmp_server.framing import JsonSplitter, Malformed, Text, parse


class Endpoint(Protocol):
    """What a session needs from the socket it was accepted on (server.Endpoint)."""

    name: str

    def record(self, client: int, direction: str, message: object) -> None: ...
    def greeting(self) -> dict[str, Any]: ...
    async def execute(self, name: str, args: dict[str, Any]) -> object: ...

log = logging.getLogger(__name__)

READ_CHUNK = 64 * 1024
MAX_OUTPUT = 16 << 20


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

    def __repr__(self) -> str:
        return f"<Session {self.endpoint.name}#{self.number}>"

    # ---- output -----------------------------------------------------------------------
    def send(self, msg: dict[str, Any], data: bytes | None = None) -> None:
        """Queue one message (non-blocking); `data` is its encoding if already made."""
        if self.closed or self.writer.is_closing():
            return
        if data is None:
            data = encode(msg)
        self.endpoint.record(self.number, "out", msg)
        try:
            self.writer.write(data)
        except (ConnectionError, OSError):
            self.close()
            return
        if self.writer.transport.get_write_buffer_size() > MAX_OUTPUT:
            log.warning("%r: client does not read its replies and events; disconnected", self)
            self.close(abort=True)

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
            self.writer.close()
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
