"""The model's loop: lets `Server` serve each client from a thread of its own.

A guest's MMIO read is a round trip through QEMU's vCPU thread, QEMU's vfio-user thread
and this server; on one host CPU the server's share of it is CPU time, and the asyncio
loop's own part of that (epoll, event dispatch, a handle per wake-up) was 2-3 us of a
~20 us read. A `ThreadedConnection` (server.py) instead waits in a blocking
`recvmsg_into` on its own thread and answers from there.

The invariant that makes this safe: **model code runs with the loop's model lock held,
and never on two threads at once.** A `ModelLoop` (from `new_event_loop()`) holds its
`model_lock` from the moment its selector returns until it next waits in it, so every
callback, timer and task on the loop runs under the lock; the loop releases it only while
it waits for events. A connection thread takes the same lock for everything it does
besides waiting for bytes and sending replies: framing, the session (the function's
accesses), closing. While it holds the lock the loop is parked in its selector, so the
thread may use the loop as if it ran on it (`asyncio.get_running_loop()` returns it;
`call_soon`, `call_later` and futures work; a callback scheduled from the thread wakes
the loop).

Replies are sent after the lock is released, only by the connection's thread, so a client
that does not read its replies blocks its own thread, never the model. The loop closes a
threaded connection (`close`, under the lock) by shutting its socket down; the thread
wakes, sees it closed and closes the descriptor itself.

A loop that is not a `ModelLoop` (or runs in asyncio's debug mode, which checks that
only its own thread schedules callbacks) serves every client on the loop, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import selectors
import threading
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVarTuple

_Ts = TypeVarTuple("_Ts")


class _ModelSelector(selectors.DefaultSelector):
    """The loop's selector: releases the model lock while waiting, takes it back after."""

    def __init__(self, lock: threading.Lock) -> None:
        super().__init__()
        self.lock = lock
        self.held = False  # by the loop's thread (only that thread touches this)

    def select(self, timeout: float | None = None) -> list[Any]:
        if self.held:
            self.held = False
            self.lock.release()
        try:
            return super().select(timeout)
        finally:
            self.lock.acquire()
            self.held = True

    def release_if_held(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def _noop() -> None:
    pass


class ModelLoop(asyncio.SelectorEventLoop):
    """An asyncio loop that holds `model_lock` whenever it runs anything (see the module's
    docstring); a connection thread holding the lock may schedule on it."""

    def __init__(self) -> None:
        self.model_lock = threading.Lock()
        self._model_selector = _ModelSelector(self.model_lock)
        self._runner: int | None = None  # the thread running the loop, while it runs
        super().__init__(self._model_selector)

    def run_forever(self) -> None:
        self._runner = threading.get_ident()
        try:
            super().run_forever()
        finally:
            self._runner = None
            self._model_selector.release_if_held()  # a stopped loop holds nothing

    def _foreign(self) -> bool:
        """Called from a connection thread (which holds the model lock)."""
        return self._runner is not None and threading.get_ident() != self._runner

    def call_soon(self, callback: Callable[[*_Ts], object], *args: *_Ts,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        if self._foreign():
            return self.call_soon_threadsafe(callback, *args, context=context)
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[[*_Ts], object],
                *args: *_Ts, context: contextvars.Context | None = None
                ) -> asyncio.TimerHandle:
        handle = super().call_at(when, callback, *args, context=context)
        if self._foreign():  # the loop computed its wait without this timer: wake it
            self.call_soon_threadsafe(_noop)
        return handle


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A loop on which `Server` serves each client from a thread of its own."""
    return ModelLoop()


def serves_threaded(loop: asyncio.AbstractEventLoop) -> TypeGuard[ModelLoop]:
    """Whether `Server` serves each client of this loop from a thread of its own."""
    return isinstance(loop, ModelLoop) and not loop.get_debug()
