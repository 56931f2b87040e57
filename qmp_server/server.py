"""A QMP server: one socket of its own, and one in front of each guest's QEMU.

    server = Server(directory, commands, events, local="platform", version=VERSION)
    await server.start()                          # <directory>/platform.qmp
    path = await server.add_guest("g1", machine)  # <directory>/g1.qmp
    ...                                           # qmp-shell <path>
    await server.remove_guest("g1")
    await server.stop()                           # clients closed, sockets removed

The caller gives the server its commands (`CommandTable`) and, optionally, a source of
events (`EventSource`). A guest's socket passes every command it does not know itself
to that guest's QEMU (`QemuTarget`) and QEMU's reply back unchanged (so
`human-monitor-command`, hence `qmp-shell -H`, works), and passes QEMU's events on. The
server's own socket (`local`) has no QEMU behind it and announces `version`. Every
socket adds the table's commands and the source's events, and answers
`qmp_capabilities` and `query-commands` itself; the local socket answers `query-version`
too.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import os
import re
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from qemu.qmp import EventListener, ExecuteError
from qemu.qmp.message import Message

from qmp_server.commands import CommandTable
from qmp_server.errors import COMMAND_NOT_FOUND, QmpError, ServerError
from qmp_server.framing import MAX_MESSAGE
from qmp_server.session import Exchange, Session, encode
from qmp_server.target import QemuTarget

log = logging.getLogger(__name__)

SUFFIX = ".qmp"
GUEST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
SUN_PATH_MAX = 107  # bytes of an AF_UNIX path, without the terminating NUL
# The local socket's greeting and query-version, unless the caller gives its own: the
# shape QEMU uses (clients such as qmp-shell read version.qemu).
DEFAULT_VERSION = {"qemu": {"major": 0, "minor": 0, "micro": 0}, "package": "qmp_server"}
NO_QEMU_VERSION = {"qemu": {"major": 0, "minor": 0, "micro": 0},
                   "package": "QMP server (QEMU not connected)"}
BUILTIN = ("qmp_capabilities", "query-commands", "query-version")
HISTORY = 10_000  # messages the history keeps, at most
HISTORY_BYTES = 4 << 20  # and their bytes (as JSON), at most: the oldest go first

EventCallback = Callable[[str, dict[str, Any]], None]
"""Receives an event: (QMP event name, data object). May be called from any thread."""


class EventSource(Protocol):
    def add_listener(self, callback: EventCallback) -> None:
        """Call `callback(name, data)` for every event from now on (from any thread)."""
        ...


def _no_arguments(args: dict[str, Any]) -> None:
    for key in args:
        raise QmpError(f"Parameter '{key}' is unexpected")


def _claim(path: Path) -> None:
    """Make room for a socket at `path`: remove a stale one, refuse a live one."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ServerError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # nobody listens: left over from a dead process
        return
    except OSError as e:
        raise ServerError(f"{path}: cannot tell whether it is in use: {e}") from None
    finally:
        probe.close()
    raise ServerError(f"{path} is in use by another server")


class _QemuEvents(EventListener):
    """Hands each QEMU event straight to the guest's socket (no queue, no history)."""

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__()
        self._endpoint = endpoint

    async def put(self, event: Message) -> None:
        if self.accept(event):
            self._endpoint.forward(dict(event))


class Endpoint:
    """One socket and its sessions: the server's own, or one guest's."""

    def __init__(self, server: Server, name: str, path: Path,
                 target: QemuTarget | None) -> None:
        self.server = server
        self.name = name
        self.path = path
        self.target = target
        self.sessions: set[Session] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._listener = _QemuEvents(self) if target is not None else None
        self._inode: int | None = None
        self._count = 0
        self._closing = False

    def __repr__(self) -> str:
        return f"<Endpoint {self.name} {self.path}>"

    async def open(self) -> None:
        _claim(self.path)
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))
        os.chmod(self.path, 0o600)  # its commands may be powerful: owner only
        self._inode = self.path.stat().st_ino
        if self.target is not None and self._listener is not None:
            self.target.qmp_client.register_listener(self._listener)

    async def close(self) -> None:
        self._closing = True
        if self.target is not None and self._listener is not None:
            with contextlib.suppress(Exception):
                self.target.qmp_client.remove_listener(self._listener)
        if self._server is not None:
            self._server.close()
        sessions = list(self.sessions)
        for s in sessions:
            s.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for s in sessions:
            s.close(abort=True)  # one that reads nothing would keep its transport forever
        if self._server is not None:
            await self._server.wait_closed()
        with contextlib.suppress(OSError):
            if self.path.lstat().st_ino == self._inode:
                self.path.unlink()

    async def _accept(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        if self._closing:
            writer.close()
            return
        self._count += 1
        session = Session(self, self._count, reader, writer, self.server.limit)
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(session)
        self._tasks.add(task)
        try:
            await session.serve()
        except asyncio.CancelledError:
            # close() cancelled it: the connection's task ends here, quietly (Python 3.11's
            # StreamReaderProtocol logs a cancelled connection task as an error)
            pass
        finally:
            self.sessions.discard(session)
            self._tasks.discard(task)

    # ---- what sessions ask of their socket ----------------------------------------------
    def record(self, client: int, direction: str, message: object,
               size: int | None = None) -> None:
        """`size`: the message's bytes on the wire, if known."""
        if size is None:
            try:
                size = len(json.dumps(message, default=str))
            except (TypeError, ValueError, RecursionError):
                size = 0
        self.server.remember(Exchange(time.monotonic(), self.name, client, direction,
                                      message), size)

    def greeting(self) -> dict[str, Any]:
        version: object = self.server.version
        if self.target is not None:
            version = NO_QEMU_VERSION
            with contextlib.suppress(Exception):
                greeting = self.target.qmp_client.greeting
                if greeting is not None:
                    version = dict(greeting.QMP.version)
        return {"QMP": {"version": copy.deepcopy(version), "capabilities": []}}

    def builtin_commands(self) -> list[str]:
        local = self.server.local_commands.names() if self.target is None else []
        return [*BUILTIN, *self.server.commands.names(), *local]

    async def execute(self, name: str, args: dict[str, Any]) -> object:
        if name in self.server.commands:
            return await self._command(self.server.commands, name, args)
        if self.target is None and name in self.server.local_commands:
            return await self._command(self.server.local_commands, name, args)
        if name == "query-commands":
            _no_arguments(args)
            return await self._query_commands()
        if self.target is None:
            if name == "query-version":
                _no_arguments(args)
                return copy.deepcopy(self.server.version)
            raise QmpError(f"The command {name} has not been found", COMMAND_NOT_FOUND)
        return await self._qemu(name, args or None)

    async def _command(self, table: CommandTable, name: str, args: dict[str, Any]) -> object:
        try:
            return await table.run(name, args)
        except QmpError:
            raise
        except Exception as e:
            log.exception("%s: command %s failed", self.name, name)
            raise QmpError(f"internal error in {name}: {type(e).__name__}: {e}") from e

    async def _query_commands(self) -> list[object]:
        ours: list[object] = [{"name": n} for n in self.builtin_commands()]
        if self.target is None:
            return ours
        qemu = await self._qemu("query-commands", None)
        if not isinstance(qemu, list):
            raise QmpError("QEMU's query-commands did not return a list")
        known = {c.get("name") for c in qemu if isinstance(c, dict)}
        return [*qemu, *(c for c in ours if isinstance(c, dict) and c["name"] not in known)]

    async def _qemu(self, name: str, args: dict[str, Any] | None) -> object:
        assert self.target is not None
        try:
            return await self.target.execute(name, args)
        except ExecuteError as e:  # QEMU's own error: passed on unchanged
            raise QmpError(e.error.error.desc, e.error.error.class_) from e
        except Exception as e:
            raise QmpError(f"QEMU did not answer {name}: {e or type(e).__name__}") from e

    # ---- events -----------------------------------------------------------------------
    def forward(self, msg: dict[str, Any]) -> None:
        """A QEMU event, to this socket's negotiated clients."""
        try:
            data = encode(msg)
        except (TypeError, ValueError) as e:
            log.error("%s: QEMU event not serializable: %s", self.name, e)
            return
        self.broadcast(msg, data)

    def broadcast(self, msg: dict[str, Any], data: bytes) -> None:
        for s in list(self.sessions):
            if s.negotiated:
                s.event(msg, data)


class Server:
    """Owns the sockets in `directory`; see the module docstring."""

    def __init__(self, directory: str | os.PathLike[str], commands: CommandTable,
                 events: EventSource | None = None, *, local: str = "server",
                 version: dict[str, Any] | None = None, history_size: int = HISTORY,
                 limit: int = MAX_MESSAGE, local_commands: CommandTable | None = None) -> None:
        """`local`: the name of the server's own socket (`<directory>/<local>.qmp`), which
        no guest may take; `version`: what it announces (greeting, query-version);
        `local_commands`: commands of that socket only (a guest's socket passes the same
        names to its QEMU, e.g. `human-monitor-command`)."""
        self.directory = Path(directory)
        self.commands = commands
        self.local_commands = local_commands or CommandTable([])
        self.events = events
        self.local = local
        self.version = copy.deepcopy(version) if version is not None else DEFAULT_VERSION
        self.limit = limit
        # every message in and out, newest last: at most history_size of them and
        # HISTORY_BYTES of their JSON (a flood of big events must not grow the host)
        self.history: deque[Exchange] = deque(maxlen=history_size)
        self._sizes: deque[int] = deque()  # of the messages in history, in order
        self.history_bytes = 0
        self._endpoints: dict[str, Endpoint] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._running = False
        self._listening = False

    def remember(self, exchange: Exchange, size: int) -> None:
        """Add a message to the history (see `history`)."""
        if self.history.maxlen is not None and len(self.history) >= self.history.maxlen:
            self.history.popleft()
            self.history_bytes -= self._sizes.popleft()
        self.history.append(exchange)
        self._sizes.append(size)
        self.history_bytes += size
        while self.history_bytes > HISTORY_BYTES and len(self.history) > 1:
            self.history.popleft()
            self.history_bytes -= self._sizes.popleft()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()

    # ---- sockets ----------------------------------------------------------------------
    def path(self, name: str) -> Path:
        """The socket of guest `name` (or the server's own: `local`)."""
        p = self.directory / f"{name}{SUFFIX}"
        if len(os.fsencode(p)) > SUN_PATH_MAX:
            raise ServerError(f"socket path {p} is longer than {SUN_PATH_MAX} bytes")
        return p

    @property
    def local_path(self) -> Path:
        return self.path(self.local)

    @property
    def guests(self) -> list[str]:
        return [n for n in self._endpoints if n != self.local]

    def session_count(self, name: str | None = None) -> int:
        """Clients connected to socket `name`, or to all sockets."""
        eps = self._endpoints.values() if name is None else [self._endpoints[name]]
        return sum(len(ep.sessions) for ep in eps)

    def output(self) -> list[dict[str, Any]]:
        """Per client: what waits for it (bytes in the socket, events queued) and how many
        events it missed (see qmp_server.session)."""
        return [{"socket": ep.name, "client": s.number, "buffered": s.buffered(),
                 "queued_events": len(s.queue), "dropped_events": s.dropped_total}
                for ep in self._endpoints.values() for s in sorted(
                    ep.sessions, key=lambda s: s.number)]

    async def start(self) -> None:
        if self._running:
            raise ServerError("the server is already started")
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self.directory.mkdir(parents=True, exist_ok=True)
        ep = Endpoint(self, self.local, self.local_path, None)
        await ep.open()
        self._endpoints[self.local] = ep
        self._running = True
        if not self._listening and self.events is not None:
            self.events.add_listener(self._on_event)
            self._listening = True

    async def add_guest(self, name: str, target: QemuTarget) -> Path:
        """Open `<directory>/<name>.qmp` in front of `target`; returns its path."""
        if not self._running:
            raise ServerError("start the server before adding guests")
        if name == self.local or not GUEST_NAME.fullmatch(name):
            raise ServerError(f"bad guest name {name!r}: letters, digits, '_.+-', "
                              f"not {self.local!r}, at most 64")
        if name in self._endpoints:
            raise ServerError(f"guest {name} already has a socket")
        ep = Endpoint(self, name, self.path(name), target)
        self._endpoints[name] = ep
        try:
            await ep.open()
        except BaseException:
            del self._endpoints[name]
            await ep.close()
            raise
        return ep.path

    async def remove_guest(self, name: str) -> None:
        """Close the guest's socket and its clients (their commands are cancelled)."""
        if name == self.local or name not in self._endpoints:
            raise ServerError(f"no socket for guest {name!r}")
        await self._endpoints.pop(name).close()

    async def stop(self) -> None:
        """Close every client and socket; remove the sockets. Events stop."""
        self._running = False
        eps = list(self._endpoints.values())
        self._endpoints.clear()
        await asyncio.gather(*(ep.close() for ep in eps))

    # ---- events -----------------------------------------------------------------------
    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        """The event source's listener: any thread. Encoded here, so the caller may change
        `data` afterwards; sent from the server's loop."""
        now_us = time.time_ns() // 1000
        if not self._running or self._loop is None:
            return
        if not isinstance(name, str) or not isinstance(data, dict):
            log.error("event dropped: name %r, data %r", name, data)
            return
        seconds, micro = divmod(now_us, 1_000_000)
        msg: dict[str, Any] = {"event": name, "data": data,
                               "timestamp": {"seconds": seconds, "microseconds": micro}}
        try:
            encoded = encode(msg)
        except (TypeError, ValueError) as e:
            log.error("event %s dropped: not serializable: %s", name, e)
            return
        snapshot = json.loads(encoded)
        if threading.get_ident() == self._thread:
            self._broadcast(snapshot, encoded)  # in order with the reply of a command
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to tell
            self._loop.call_soon_threadsafe(self._broadcast, snapshot, encoded)

    def _broadcast(self, msg: dict[str, Any], data: bytes) -> None:
        if not self._running:
            return
        for ep in list(self._endpoints.values()):
            ep.broadcast(msg, data)
