"""Structured events with monotonic timestamps, delivered to registered listeners.

The model emits an `Event` for everything a platform or a test wants to see in order: PE
frozen and thawed, resets asserted and completed, errors logged, injections armed and
fired, mailbox traffic, VFs enabled. `EventHistory` is a listener that keeps them all so a
test can assert the exact order.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from device_model.clock import Clock

log = logging.getLogger(__name__)


class EventKind(enum.Enum):
    PE_FROZEN = "pe-frozen"
    PE_MMIO_THAWED = "pe-mmio-thawed"
    PE_DMA_THAWED = "pe-dma-thawed"
    PE_RESET_ASSERTED = "pe-reset-asserted"
    PE_RESET_DEASSERTED = "pe-reset-deasserted"
    PE_RESET_DONE = "pe-reset-done"
    PE_RESET_FAILED = "pe-reset-failed"  # the fault hook Pe.fail_resets: it stayed frozen
    FLR_STARTED = "flr-started"
    FLR_DONE = "flr-done"
    FUNCTION_RESET = "function-reset"
    VFS_ENABLED = "vfs-enabled"
    VFS_DISABLED = "vfs-disabled"
    ERROR_LOGGED = "error-logged"
    INJECTION_ARMED = "injection-armed"
    INJECTION_FIRED = "injection-fired"
    INJECTION_CANCELLED = "injection-cancelled"
    MAILBOX_TO_PF = "mailbox-to-pf"
    MAILBOX_TO_VF = "mailbox-to-vf"
    MAILBOX_ACK = "mailbox-ack"
    PF_RESET_IN_PROGRESS = "pf-reset-in-progress"
    PF_RESET_DONE = "pf-reset-done"


_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class Event:
    time: float  # the model clock's monotonic time
    kind: EventKind
    pe: int | None = None  # PE address, when the event concerns a PE
    function: str | None = None  # function name ("pf", "vf3"), when it concerns one
    data: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"time": self.time, "kind": self.kind.value}
        if self.pe is not None:
            out["pe"] = self.pe
        if self.function is not None:
            out["function"] = self.function
        if self.data:
            out["data"] = dict(self.data)
        return out


Listener = Callable[[Event], None]


class EventBus:
    """Fan-out of events to listeners, in registration order.

    A listener that raises does not stop the model or the other listeners: the exception
    is logged and kept in `listener_errors` (tests assert it stays empty).
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._listeners: list[Listener] = []
        self.listener_errors: list[tuple[Event, BaseException]] = []

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def emit(
        self,
        kind: EventKind,
        /,
        *,
        pe: int | None = None,
        function: str | None = None,
        **data: Any,
    ) -> Event:
        payload = MappingProxyType(data) if data else _EMPTY
        event = Event(self._clock.now(), kind, pe, function, payload)
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as e:  # a listener's bug must not stop the hardware
                log.exception("event listener failed on %s", event.kind.value)
                self.listener_errors.append((event, e))
        return event


class EventHistory:
    """A listener that keeps every event, for exact-order assertions."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)

    def kinds(self) -> list[EventKind]:
        return [e.kind for e in self.events]

    def of(self, *kinds: EventKind) -> list[Event]:
        return [e for e in self.events if e.kind in kinds]

    def clear(self) -> None:
        self.events.clear()
