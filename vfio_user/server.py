"""The vfio-user server: any number of functions, one unix socket each, one asyncio loop.

    server = await serve({"pf": pf, "vf0": vf0}, "/run/eeh/sock")   # pf.sock, vf0.sock
    ...
    await server.stop()

Each `Endpoint` listens on its socket and serves one client at a time (a second client
is refused while one is connected, so a QEMU device never waits on a busy socket). A
connection reads with `recvmsg` (messages carry fds), frames messages, and hands each
to its `Session` (the protocol core, `session.py`); a stream that cannot be framed is
closed. On a `ModelLoop` (`model_loop.py`, the default of `ServerThread`) each client is
a `ThreadedConnection`, served from a thread of its own under the loop's model lock (no
loop wake-up per message); on any other loop, a `Connection` served by the loop. When a
client goes away, the session detaches the function, unmaps all DMA and closes
eventfds; the function keeps its state and the next client is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from vfio_user.contract import PciFunction
from vfio_user.errors import FramingError
from vfio_user.framing import (
    FrameReader,
    ancillary_fds,
    ancillary_space,
    close_fds,
)
from vfio_user.model_loop import ModelLoop, serves_threaded
from vfio_user.session import ServerConfig, Session

log = logging.getLogger("vfio_user")

_RECV_SIZE = 1 << 16
_MAX_PENDING_OUTPUT = 16 << 20  # stop reading from a client that does not read replies
_SUN_PATH_MAX = 107
_CTRUNC = int(socket.MSG_CTRUNC)  # plain int: IntFlag operations cost a microsecond
_NOSIGNAL = int(socket.MSG_NOSIGNAL)  # a gone client is EPIPE, never SIGPIPE


@dataclass(frozen=True)
class EndpointEvent:
    """One line of an endpoint's history (kept so tests can assert exact order)."""

    kind: str  # listening, connected, refused-busy, disconnected, stopped
    detail: str
    time: float


class EndpointState(Enum):
    IDLE = "idle"  # not started, or stopped
    LISTENING = "listening"  # no client
    CONNECTED = "connected"


class Endpoint:
    """One function's socket."""

    def __init__(self, name: str, function: PciFunction, path: Path,
                 config: ServerConfig) -> None:
        self.name = name
        self.function = function
        self.path = path
        self.config = config
        self.state = EndpointState.IDLE
        self.history: deque[EndpointEvent] = deque(maxlen=1000)
        self.connection: Connection | ThreadedConnection | None = None
        self.last_session: Session | None = None
        self.connections = 0
        self.messages = 0  # over all connections
        self.busy_ns = 0  # receiving (threaded: from its return), processing, replying
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _event(self, kind: str, detail: str = "") -> None:
        self.history.append(EndpointEvent(kind, detail, time.monotonic()))

    async def start(self) -> None:
        if self.state is not EndpointState.IDLE:
            raise RuntimeError(f"endpoint {self.name} already started")
        if len(os.fsencode(self.path)) > _SUN_PATH_MAX:
            raise ValueError(f"socket path too long for AF_UNIX: {self.path}")
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise FileExistsError(errno.EEXIST, "exists and is not a socket", str(self.path))
            os.unlink(self.path)  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(str(self.path))
            sock.listen(4)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_accept)
        self.state = EndpointState.LISTENING
        self._event("listening", str(self.path))

    def _on_accept(self) -> None:
        assert self._sock is not None and self._loop is not None
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("%s: accept failed: %s", self.name, e)
            return
        if self.connection is not None:
            conn.close()
            self._event("refused-busy")
            log.warning("%s: refused a second client while one is connected", self.name)
            return
        try:
            session = Session(self.function, self.config)
        except Exception:
            log.exception("%s: cannot start a session", self.name)
            conn.close()
            return
        self.connections += 1
        loop = self._loop
        self.connection = (ThreadedConnection(self, conn, session, loop)
                           if serves_threaded(loop) else
                           Connection(self, conn, session, loop))
        self.state = EndpointState.CONNECTED
        self._event("connected")

    def _closed(self, connection: Connection | ThreadedConnection, reason: str) -> None:
        if self.connection is connection:
            self.connection = None
            self.last_session = connection.session
            if self.state is EndpointState.CONNECTED:
                self.state = EndpointState.LISTENING
        self._event("disconnected", reason)

    async def stop(self) -> None:
        if self.connection is not None:
            self.connection.close("server stopping")
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self.state is not EndpointState.IDLE:
            self.state = EndpointState.IDLE
            self._event("stopped")


class Connection:
    """One client socket: receive, frame, process, reply (in order)."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket, session: Session,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.session = session
        self.closed = False
        self._loop = loop
        sock.setblocking(False)
        self._fd = sock.fileno()
        self._reader = FrameReader(session.config.max_request_size)
        self._ancsize = ancillary_space(session.config.max_msg_fds + 1)
        self._out = bytearray()
        self._reading = True
        loop.add_reader(self._fd, self._on_readable)

    def _on_readable(self) -> None:
        t0 = time.perf_counter_ns()
        try:
            data, anc, flags, _ = self.sock.recvmsg(_RECV_SIZE, self._ancsize)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"receive failed: {e}")
            return
        fds = ancillary_fds(anc) if anc else []
        if not data:
            close_fds(fds)
            self.close("client closed the socket")
            return
        self._reader.feed(data, fds, bool(flags & _CTRUNC))
        messages = 0
        while not self.closed:
            try:
                frame = self._reader.next_frame()
            except FramingError as e:
                log.warning("%s: %s; closing the connection", self.endpoint.name, e)
                self.close(str(e))
                return
            if frame is None:
                break
            messages += 1
            reply = self.session.process(frame)
            if reply is not None:
                self._send(reply)
        self.endpoint.messages += messages
        self.endpoint.busy_ns += time.perf_counter_ns() - t0

    def _send(self, data: bytes) -> None:
        if self.closed:
            return
        if not self._out:
            try:
                n = self.sock.send(data, _NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self.close(f"send failed: {e}")
                return
            if n == len(data):
                return
            data = data[n:]
            self._loop.add_writer(self._fd, self._on_writable)
        self._out += data
        if len(self._out) > _MAX_PENDING_OUTPUT and self._reading:
            self._loop.remove_reader(self._fd)  # resumes when the client reads its replies
            self._reading = False

    def _on_writable(self) -> None:
        try:
            n = self.sock.send(self._out, _NOSIGNAL)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self.close(f"send failed: {e}")
            return
        del self._out[:n]
        if not self._out:
            self._loop.remove_writer(self._fd)
            if not self._reading and not self.closed:
                self._reading = True
                self._loop.add_reader(self._fd, self._on_readable)

    def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        self._reader.close()
        self.session.close()
        self.sock.close()
        log.info("%s: client disconnected: %s", self.endpoint.name, reason)
        self.endpoint._closed(self, reason)


class ThreadedConnection:
    """One client socket served from its own thread: receive, frame, process, reply.

    Everything but waiting for bytes and sending replies runs under the loop's model
    lock (see model_loop.py), so no two threads ever run model code at once. Replies are
    sent only by this thread, after the lock is released: a client that does not read
    them blocks its own thread, never the model. The loop closes the connection (under
    the lock) by shutting the socket down; this thread then closes the descriptor."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket, session: Session,
                 loop: ModelLoop) -> None:
        self.endpoint = endpoint
        self.sock = sock
        self.session = session
        self.closed = False  # set under the model lock
        self._loop = loop
        self._lock = loop.model_lock
        self._reader = FrameReader(session.config.max_request_size)
        self._ancsize = ancillary_space(session.config.max_msg_fds + 1)
        self._buf = memoryview(bytearray(_RECV_SIZE))
        sock.setblocking(True)
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"vfio-user-{endpoint.name}")
        self._thread.start()

    def _serve(self) -> None:
        sock, buf, lock = self.sock, self._buf, self._lock
        reason = "client closed the socket"
        # This thread runs model code only under the model lock, while the loop is parked:
        # the loop is its running loop (model code may call asyncio.get_running_loop()).
        asyncio._set_running_loop(self._loop)
        try:
            while True:
                try:
                    n, anc, flags, _ = sock.recvmsg_into([buf], self._ancsize)
                except InterruptedError:
                    continue
                except OSError as e:
                    reason = f"receive failed: {e}"
                    break
                t0 = time.perf_counter_ns()
                with lock:
                    replies, end = self._received(buf[:n].tobytes(), anc, flags)
                if replies:
                    try:
                        sock.sendall(replies, _NOSIGNAL)
                    except OSError as e:
                        reason = f"send failed: {e}"
                        break
                # only this thread writes it while this connection is the endpoint's
                self.endpoint.busy_ns += time.perf_counter_ns() - t0
                if end is not None:
                    reason = end
                    break
        finally:
            with lock:
                self.close(reason)
                sock.close()
            asyncio._set_running_loop(None)

    def _received(self, data: bytes, anc: list[tuple[int, int, bytes]], flags: int
                  ) -> tuple[bytes, str | None]:
        """The replies due for these bytes, and why the connection ends (None: it goes
        on). Runs under the model lock."""
        if not anc and not self.closed and not self._reader.buffered:
            reply = self.session.plain_read(data)  # a guest's MMIO read: no frame needed
            if reply is not None:
                self.endpoint.messages += 1
                return reply, None
        fds = ancillary_fds(anc) if anc else []
        if self.closed or not data:
            close_fds(fds)
            return b"", "client closed the socket"
        self._reader.feed(data, fds, bool(flags & _CTRUNC))
        replies: list[bytes] = []
        while True:
            try:
                frame = self._reader.next_frame()
            except FramingError as e:  # the replies before it are still sent
                log.warning("%s: %s; closing the connection", self.endpoint.name, e)
                return b"".join(replies), str(e)
            if frame is None:
                return b"".join(replies), None
            self.endpoint.messages += 1
            reply = self.session.process(frame)
            if reply is not None:
                replies.append(reply)

    def close(self, reason: str) -> None:
        """Under the model lock (on the loop, or on the connection's thread)."""
        if self.closed:
            return
        self.closed = True
        self._reader.close()
        self.session.close()
        with contextlib.suppress(OSError):  # wakes the thread; it closes the descriptor
            self.sock.shutdown(socket.SHUT_RDWR)
        log.info("%s: client disconnected: %s", self.endpoint.name, reason)
        self.endpoint._closed(self, reason)


class Server:
    """All endpoints of one device model, served on the running asyncio loop."""

    def __init__(self, functions: Mapping[str, PciFunction], socket_dir: str | Path,
                 config: ServerConfig | None = None) -> None:
        self.socket_dir = Path(socket_dir)
        self.config = config if config is not None else ServerConfig()
        self.endpoints: dict[str, Endpoint] = {}
        for name, function in functions.items():
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"bad function name for a socket: {name!r}")
            self.endpoints[name] = Endpoint(name, function, self.socket_dir / f"{name}.sock",
                                            self.config)

    @property
    def paths(self) -> dict[str, Path]:
        return {name: ep.path for name, ep in self.endpoints.items()}

    async def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        try:
            for ep in self.endpoints.values():
                await ep.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for ep in self.endpoints.values():
            await ep.stop()

    async def __aenter__(self) -> Server:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def serve(functions: Mapping[str, PciFunction], socket_dir: str | Path,
                config: ServerConfig | None = None) -> Server:
    """Serve each function on `socket_dir/<name>.sock`; returns the started server."""
    server = Server(functions, socket_dir, config)
    await server.start()
    return server
