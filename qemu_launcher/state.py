"""One pattern for state checks: a state enum on the object, `@require(...)` on its methods.

    class Machine:
        state: MachineState
        @require(MachineState.RUNNING)
        async def hotplug(self, dev): ...

A method called in another state raises `StateError` (a ShimError) naming the object, the
method, the state it needs and the state it found, instead of each method raising its own
RuntimeError. Works on plain and async methods; an async method checks when it is
awaited (as qemu.qmp's `@require(Runstate.X)` does).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from enum import Enum
from typing import Any, TypeVar, cast

from qemu_launcher.errors import StateError

F = TypeVar("F", bound=Callable[..., Any])


def check_state(obj: Any, operation: str, *states: Enum) -> None:
    """Raise StateError unless `obj.state` is one of `states`."""
    if obj.state not in states:
        raise StateError(type(obj).__name__, operation, obj.state, states)


def require(*states: Enum) -> Callable[[F], F]:
    """Decorator: the method runs only while `self.state` is one of `states`."""
    if not states:
        raise ValueError("require() needs at least one state")

    def decorate(fn: F) -> F:
        name = fn.__name__
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def checked_async(self: Any, *args: Any, **kwargs: Any) -> Any:
                check_state(self, name, *states)
                return await fn(self, *args, **kwargs)

            return cast(F, checked_async)

        @functools.wraps(fn)
        def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
            check_state(self, name, *states)
            return fn(self, *args, **kwargs)

        return cast(F, checked)

    return decorate
