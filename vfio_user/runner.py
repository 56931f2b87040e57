"""Run a `Server` on its own asyncio loop in a background thread (harness and tests).

    with ServerThread({"vf0": vf0}, sock_dir) as st:
        client = Client.open(st.paths["vf0"])
        st.call(lambda: vf0.raise_interrupt())   # runs on the server's loop thread

Device code must run on the server's loop thread: use `call` to reach it from elsewhere.

If something run on the loop kills it (an exception that asyncio does not catch:
SystemExit, KeyboardInterrupt), the server closes every function's socket at once (a
client then sees the device gone, instead of waiting on a server that no longer answers),
records the exception in `died`, and calls `on_death(exc)`; if that returns True the loop
runs on for whatever else it serves (the functions stay unserved), else the thread ends
and `call` raises `ServerThreadDied`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from vfio_user.contract import PciFunction
from vfio_user.errors import VfioUserError
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
        self._loop = loop if loop is not None else asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="vfio-user-server",
                                        daemon=True)
        self._started: Future[None] = Future()
        self.died: BaseException | None = None
        self.on_death: Callable[[BaseException], bool] | None = None

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
        while True:
            try:
                self._loop.run_forever()
                break
            except BaseException as e:  # the loop died: fail cleanly
                if self.died is None:
                    self.died = e
                log.critical("vfio-user server loop died: %r; closing every socket", e)
                with contextlib.suppress(BaseException):
                    self._loop.run_until_complete(self.server.stop())
                keep = False
                if self.on_death is not None:
                    try:
                        keep = bool(self.on_death(e))
                    except Exception:
                        log.exception("on_death failed")
                if not keep:
                    break
        with contextlib.suppress(BaseException):
            self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the server's loop thread and return its result."""
        if self.died is not None and not self._thread.is_alive():
            raise ServerThreadDied(f"the server's loop thread died: {self.died!r}")
        result: Future[T] = Future()

        def run() -> None:
            try:
                result.set_result(fn())
            except BaseException as e:
                result.set_exception(e)

        self._loop.call_soon_threadsafe(run)
        return result.result(timeout=timeout)

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
