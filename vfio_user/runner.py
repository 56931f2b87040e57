"""Run a `Server` on its own asyncio loop in a background thread (harness and tests).

    with ServerThread({"vf0": vf0}, sock_dir) as st:
        client = Client.open(st.paths["vf0"])
        st.call(lambda: vf0.raise_interrupt())   # runs on the server's loop thread

Device code must run on the server's loop thread, or under its model lock: use `call` to
reach it from elsewhere. The default loop is a `ModelLoop` (`model_loop.py`): each client
is then served from a thread of its own that takes the model lock for every access.

If something run on the loop kills it (an exception that asyncio does not catch:
SystemExit, KeyboardInterrupt), the server closes every function's socket at once (a
client then sees the device gone, instead of waiting on a server that no longer answers),
records the exception in `died`, and calls `on_death(exc)`; if that returns True the loop
runs on for whatever else it serves (the functions stay unserved), else the thread ends
and `call` raises `ServerThreadDied`.

If the loop thread stalls instead (a callback that never returns: an endless loop, a
deadlock), nothing run on that loop can help. A watchdog outside it calls `abandon(exc)`
(from any other thread): every function's client is cut off at once (its socket shut
down, the listening sockets' paths removed, so a client sees the device gone), `died`
records `exc`, and a fresh loop on a new thread ("vfio-user-rescue") takes the stalled
one's place: `loop` and `call` use it from then on, for whatever else the owner serves.
The stalled thread cannot be killed in Python: if its callback ever returns, its loop
stops after the callbacks already due in that iteration and the thread ends without
serving anything again; until then it keeps its sockets' descriptors (shut down), and
its clients' threads wait for its model lock (their sockets shut down too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from vfio_user.contract import PciFunction
from vfio_user.errors import VfioUserError
from vfio_user.model_loop import new_event_loop
from vfio_user.server import Server
from vfio_user.session import ServerConfig

T = TypeVar("T")

log = logging.getLogger("vfio_user")


class ServerThreadDied(VfioUserError):
    """The server's loop thread was killed and did not go on (see `ServerThread.died`)."""


class ServerThread:
    def __init__(self, functions: Mapping[str, PciFunction], socket_dir: str | Path,
                 config: ServerConfig | None = None,
                 loop: asyncio.AbstractEventLoop | None = None,
                 cpus: frozenset[int] = frozenset()) -> None:
        """`loop`: a fresh loop to run on (so a device's clock can be bound to it first).
        `cpus`: host CPUs the server thread may run on (empty: any)."""
        self.server = Server(functions, socket_dir, config)
        self.cpus = cpus
        self._loop = loop if loop is not None else new_event_loop()
        self._thread = threading.Thread(target=self._run, name="vfio-user-server",
                                        daemon=True)
        self._started: Future[None] = Future()
        self.died: BaseException | None = None
        self.on_death: Callable[[BaseException], bool] | None = None
        self._stalled_loop: asyncio.AbstractEventLoop | None = None  # set by abandon()
        self._rescue: threading.Thread | None = None

    @property
    def paths(self) -> dict[str, Path]:
        return self.server.paths

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            if self.cpus:
                os.sched_setaffinity(0, self.cpus)  # this thread only
            self._loop.run_until_complete(self.server.start())
        except BaseException as e:
            self._started.set_exception(e)
            self._loop.close()
            return
        self._started.set_result(None)
        loop = self._loop
        while True:
            try:
                loop.run_forever()
                break
            except BaseException as e:  # the loop died: fail cleanly
                if self._stalled_loop is loop:
                    break  # abandoned before: the platform failed it already
                if self.died is None:
                    self.died = e
                log.critical("vfio-user server loop died: %r; closing every socket", e)
                with contextlib.suppress(BaseException):
                    loop.run_until_complete(self.server.stop())
                keep = False
                if self.on_death is not None:
                    try:
                        keep = bool(self.on_death(e))
                    except Exception:
                        log.exception("on_death failed")
                if not keep:
                    break
        if self._stalled_loop is loop:
            return  # abandoned: its clients are cut off, nothing more is run on it
        with contextlib.suppress(BaseException):
            loop.run_until_complete(self.server.stop())
        loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the server's loop thread and return its result."""
        if self.died is not None and self._rescue is None and not self._thread.is_alive():
            raise ServerThreadDied(f"the server's loop thread died: {self.died!r}")
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as e:
                result.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=timeout)

    @property
    def stalled(self) -> bool:
        return self._stalled_loop is not None

    def abandon(self, exc: BaseException) -> asyncio.AbstractEventLoop:
        """The loop thread stalled (see the module's docstring): from another thread, cut
        every function's client off, record `exc` in `died` and serve on a fresh loop,
        which is returned (the same one if already abandoned)."""
        if self._stalled_loop is not None:
            return self._loop
        stalled = self._stalled_loop = self._loop
        if self.died is None:
            self.died = exc
        log.critical("vfio-user server loop stalled: %r; cutting every client off", exc)
        for ep in self.server.endpoints.values():
            # only system calls on sockets the stalled thread does not touch now: it is
            # stuck in a callback; it finds them shut down if it ever comes back
            with contextlib.suppress(OSError, FileNotFoundError):
                os.unlink(ep.path)
            conn = ep.connection
            if conn is not None:
                with contextlib.suppress(OSError):
                    conn.sock.shutdown(socket.SHUT_RDWR)
        fresh = asyncio.new_event_loop()
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(fresh)
            with contextlib.suppress(OSError):
                if self.cpus:
                    os.sched_setaffinity(0, self.cpus)
            fresh.call_soon(started.set)
            try:
                fresh.run_forever()
            finally:
                fresh.close()

        self._rescue = threading.Thread(target=run, name="vfio-user-rescue", daemon=True)
        self._rescue.start()
        started.wait(10)
        self._loop = fresh
        with contextlib.suppress(RuntimeError):  # runs once the stalled callback returns
            stalled.call_soon_threadsafe(stalled.stop)
        return fresh

    def stop(self) -> None:
        if self._rescue is not None:
            if self._rescue.is_alive():
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._rescue.join(timeout=30)
            self._thread.join(timeout=0.1)  # the stalled thread: only if it came back
            return
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
