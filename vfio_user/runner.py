"""Run a `Server` on its own asyncio loop in a background thread (harness and tests).

    with ServerThread({"vf0": vf0}, sock_dir) as st:
        client = Client.open(st.paths["vf0"])
        st.call(lambda: vf0.raise_interrupt())   # runs on the server's loop thread

Device code must run on the server's loop thread: use `call` to reach it from elsewhere.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TypeVar

from vfio_user.contract import PciFunction
from vfio_user.server import Server
from vfio_user.session import ServerConfig

T = TypeVar("T")


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
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        self._loop.close()

    def start(self) -> ServerThread:
        self._thread.start()
        self._started.result(timeout=30)
        return self

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run `fn` on the server's loop thread and return its result."""
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
