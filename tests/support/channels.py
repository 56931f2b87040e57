"""A driver's platform channel with test hooks on the client side.

The platform behind it is the real one; the hooks only choose *when* the driver sees
what the platform did: hold a call back before it is sent (`before`, posted calls too),
act after its reply came and before the caller gets it (`after`), or keep some pushed
events from the driver (`drop`, a lost event). Nothing here answers a call in the
platform's place.

    tap = TapChannel(backend.channel)
    tap.after.append(lambda call, args, reply: ...)     # e.g. lift a lockout right there
    backend.channel = tap                                # before Agent(backend)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eeh_abi.hcall import Event, EventHandler, Reply
from eeh_abi.schema import Call
from guest_drivers.services import ChannelLike

Before = Callable[[str, dict[str, Any]], None]
After = Callable[[str, dict[str, Any], Reply], None]
Drop = Callable[[Event], bool]


class TapChannel:
    def __init__(self, inner: ChannelLike) -> None:
        self.inner = inner
        self.before: list[Before] = []
        self.after: list[After] = []
        self.drop: list[Drop] = []
        self.dropped: list[Event] = []
        self._wrapped: dict[EventHandler, EventHandler] = {}

    def call(self, call: Call, timeout: float | None = None, **args: Any) -> Reply:
        for hook in list(self.before):
            hook(call, dict(args))
        reply = self.inner.call(call, timeout=timeout, **args)
        for after in list(self.after):
            after(call, dict(args), reply)
        return reply

    def subscribe(self, handler: EventHandler) -> None:
        def filtered(ev: Event) -> None:
            if any(d(ev) for d in list(self.drop)):
                self.dropped.append(ev)
                return
            handler(ev)
        self._wrapped[handler] = filtered
        self.inner.subscribe(filtered)

    def unsubscribe(self, handler: EventHandler) -> None:
        filtered = self._wrapped.pop(handler, None)
        if filtered is not None:
            self.inner.unsubscribe(filtered)

    def __getattr__(self, name: str) -> Any:  # post, close, closed, ... as the inner has them
        attr = getattr(self.inner, name)
        if name != "post":
            return attr

        def post(call: Call, on_reply: Any = None, **args: Any) -> None:
            """A posted call (a driver's step report): `before` hooks run first too."""
            for hook in list(self.before):
                hook(call, dict(args))
            attr(call, on_reply=on_reply, **args)
        return post
