"""The platform's QMP console (the real Console over the real platform) on its own loop
thread, as `eeh_sriov.system.System` runs it: for harness tests and the fault campaigns'
console faults (tests/harness/console_rig.py imports it from here).

    con = ConsoleThread(platform)
    con.console.platform_path      # the console's socket
    con.sessions()                 # clients connected now
    con.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from hypervisor_shim.console import Console
from hypervisor_shim.platform import Platform

T = TypeVar("T")


class ConsoleThread:
    """The platform's QMP console (the real Console over the real platform) on its own
    loop thread, as `System` runs it."""

    def __init__(self, plat: Platform, directory: Path | None = None) -> None:
        self._tmp = directory is None
        directory = Path(tempfile.mkdtemp(prefix="eeh-con-")) if directory is None \
            else directory
        self.directory = directory
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        try:
            self.console = Console(directory, plat)
            self.run(self.console.start())
        except BaseException:
            with contextlib.suppress(Exception):  # the loop is stopped, the directory
                self.close()                      # removed, whatever stop() says
            raise

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sessions(self) -> int:
        return self.run(_count(self.console))

    def close(self) -> None:
        try:
            self.run(self.console.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            if self._tmp:
                shutil.rmtree(self.directory, ignore_errors=True)


async def _count(console: Console) -> int:
    return console.session_count()


