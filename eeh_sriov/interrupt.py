"""Ctrl-C (and SIGTERM) for the long-running commands, so that nothing is left behind.

asyncio.run's own SIGINT handling cancels the main task once; a cancellation that lands
while a QEMU guest is being started can be absorbed on Python 3.11 (inside the QMP
library's waits), and the command then runs on as if nothing had happened. Here the
signal only sets an event; the work runs as a task that is cancelled, again and again,
until it has ended, except while it is already tearing down (`busy_stopping()`), so that
its clean-up is never cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Interrupted(Exception):
    """The command was stopped by SIGINT or SIGTERM (after its clean-up ran)."""


async def until_signal(work: Coroutine[Any, Any, T],
                       busy_stopping: Callable[[], bool] = lambda: False) -> T:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            while not task.done():
                if not busy_stopping():
                    task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            with contextlib.suppress(BaseException):
                task.result()
            raise Interrupted()
        return task.result()
    finally:
        stopper.cancel()
        for sig in signals:
            loop.remove_signal_handler(sig)
