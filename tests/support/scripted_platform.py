"""A scripted platform for driver tests that step the recovery framework through exact
sequences: PE states kept by hand, every call answered at once on the caller's thread,
events pushed when the test says (no device model, no sockets).

It stays beside the real platform (tests/support/platform_rig.py) because it is fast and
scripts what the real one cannot produce on demand: a reset that never brings the PE
back, a reply answered while a hook changes state, an exact interleaving of events and
calls. Its answers and events are held to the real platform's by the contract tests
(tests/unit/drivers/test_platform_contract.py: the same checks against this fake and
`hypervisor_shim.platform.Platform`).

- `ScriptedPlatform` + `LocalChannel`: the platform and its channel;
- `Recorder`: error handlers that log their calls and answer from a script;
- `FakeConfig`: a config space with Command and MSI-X Message Control.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from eeh_abi.hcall import Event as HEvent
from eeh_abi.hcall import EventHandler, Reply
from eeh_abi.papr import ChannelState, EehOption, ErsResult, PeState, SlotReset, Status

ADAPTER_PE = 0x10000  # the origin of a side-effect freeze


# ---------------------------------------------------------------------------- channels
class LocalChannel:
    """A platform channel without a transport: calls go to `handler(call, args)`;
    `push` hands an event to the subscribers on the caller's thread."""

    def __init__(self, handler: Callable[[str, dict[str, Any]], Reply]) -> None:
        self._handler = handler
        self._subs: list[EventHandler] = []
        self._lock = threading.Lock()
        self.calls: list[tuple[float, str, dict[str, Any]]] = []
        self.closed = False

    def call(self, call: str, timeout: float | None = None, **args: Any) -> Reply:
        with self._lock:
            self.calls.append((time.monotonic(), call, dict(args)))
        return self._handler(call, dict(args))

    def subscribe(self, handler: EventHandler) -> None:
        with self._lock:
            self._subs.append(handler)

    def unsubscribe(self, handler: EventHandler) -> None:
        with self._lock:
            if handler in self._subs:
                self._subs.remove(handler)

    def push(self, event: str, pe: int | None, **data: Any) -> None:
        ev = HEvent(event, pe, data, time.monotonic())
        with self._lock:
            subs = list(self._subs)
        for h in subs:
            h(ev)

    def close(self) -> None:
        self.closed = True

    def names(self, skip: tuple[str, ...] = ("report",)) -> list[str]:
        return [c for _, c, _ in self.calls if c not in skip]

    def steps(self) -> list[str]:
        return [a["step"] for _, c, a in self.calls if c == "report"]

    def reports(self, step: str) -> list[dict[str, Any]]:
        return [dict(a.get("detail", {})) for _, c, a in self.calls
                if c == "report" and a["step"] == step]


def ok(**ret: Any) -> Reply:
    return Reply(0, 0, ret)


def status(code: int, **ret: Any) -> Reply:
    return Reply(0, code, ret, f"status {code}")


# ---------------------------------------------------------------------------- scripted
@dataclass
class FakePe:
    state: int = 0
    locked: bool = False
    permanent: bool = False
    retry_ms: int = 1000
    vf: bool = False
    hot_reset_works: bool = True  # False: a hot reset leaves the PE frozen
    resets_fail: int = 0  # this many resets leave the PE frozen, whatever the kind
    log: list[dict[str, Any]] = field(default_factory=list)


class ScriptedPlatform:
    """PE states by hand. `hooks` (`hook(call, args)`) run before a call is answered and
    may change things mid-sequence. Answers and pushed events use the real platform's
    vocabulary (docs/platform-calls.md); test_platform_contract.py holds them to it."""

    def __init__(self) -> None:
        self.pes: dict[int, FakePe] = {}
        self.channel = LocalChannel(self.handle)
        self.hooks: list[Callable[[str, dict[str, Any]], None]] = []

    def add(self, pe: int, **kw: Any) -> FakePe:
        self.pes[pe] = FakePe(**kw)
        return self.pes[pe]

    def freeze(self, pe: int, *, push: bool = True, **data: Any) -> None:
        """The PE freezes on its own (a VF-only error); `data` overrides the event's."""
        self.pes[pe].state = PeState.FROZEN
        if push:
            self.channel.push("pe-frozen", pe, **({
                "origin": pe, "side_effect": False, "reason": "scripted", "freeze_count": 1,
                "locked_out": False} | data))

    def lock_out(self, pe: int) -> None:
        """The PE frozen as a side-effect of the adapter PE, and locked out."""
        p = self.pes[pe]
        p.state = PeState.FROZEN
        p.locked = True
        self.channel.push("pe-frozen", pe, origin=ADAPTER_PE, side_effect=True,
                          reason="scripted", freeze_count=1, locked_out=True)

    def lift(self, pe: int) -> None:
        self.pes[pe].locked = False
        self.channel.push("lockout-lifted", pe)

    def fail(self, pe: int, freeze_count: int = 6) -> None:
        """A permanent failure, pushed."""
        p = self.pes[pe]
        p.permanent = True
        p.locked = False
        self.channel.push("permanent-failure", pe, freeze_count=freeze_count)

    def handle(self, call: str, args: dict[str, Any]) -> Reply:
        for hook in list(self.hooks):
            hook(call, args)
        if call in ("report", "register"):
            return ok()
        p = self.pes[args["pe"]]
        if call == "read-slot-reset-state2":
            if p.permanent:
                return ok(state=5, retry_ms=0, capabilities=1, flags=["permanent"])
            if p.locked:
                return ok(state=5, retry_ms=p.retry_ms, capabilities=1, flags=["locked-out"])
            return ok(state=p.state, retry_ms=0, capabilities=1, flags=[])
        if p.permanent:
            return status(Status.HW_ERROR)
        if p.locked and call in ("set-eeh-option", "set-slot-reset", "configure-pe"):
            return status(Status.BUSY, retry_ms=p.retry_ms)
        if call == "set-eeh-option":
            if args["option"] == EehOption.THAW_MMIO:
                if p.state in (PeState.FROZEN, PeState.DMA_STOPPED, PeState.NORMAL):
                    p.state = PeState.NORMAL if p.state == PeState.NORMAL else \
                        PeState.DMA_STOPPED
                    return ok()
                return status(Status.UNEXPECTED_STATE)
            if args["option"] == EehOption.THAW_DMA:
                if p.state == PeState.DMA_STOPPED:
                    p.state = PeState.NORMAL
                    return ok()
                if p.state == PeState.NORMAL:
                    return ok()
                return status(Status.UNEXPECTED_STATE)
        if call == "set-slot-reset":
            fn = args["function"]
            if fn == SlotReset.FUNDAMENTAL and p.vf:
                return status(Status.NOT_SUPPORTED)
            if fn in (SlotReset.HOT, SlotReset.FUNDAMENTAL):
                p.state = PeState.RESET
                p.log.append({"reset": fn})
                return ok()
            if fn == SlotReset.DEACTIVATE:
                if p.state != PeState.RESET:
                    return ok()  # nothing asserted: nothing to release
                last = p.log[-1]["reset"] if p.log else SlotReset.HOT
                if p.resets_fail > 0:
                    p.resets_fail -= 1
                    p.state = PeState.FROZEN
                elif last == SlotReset.HOT and not p.hot_reset_works:
                    p.state = PeState.FROZEN
                else:
                    p.state = PeState.NORMAL
                kind = SlotReset(last).name.lower()
                self.channel.push("pe-reset-done", args["pe"], reset=kind,
                                  **({"failed": True} if p.state == PeState.FROZEN else {}))
                return ok()
        if call == "configure-pe":
            return ok() if p.state != PeState.RESET else status(Status.UNEXPECTED_STATE)
        if call == "slot-error-detail":
            return ok(log=[{"seq": 1, "source": "injected", "detail": "scripted"}])
        if call == "open-sriov-allow-unfreeze":
            return ok(allowed=[])
        return status(Status.PARAM_ERROR)


class Recorder:
    """Error handlers that log their calls and answer from a script."""

    def __init__(self, name: str, log: list[str], *, detected: ErsResult = ErsResult.CAN_RECOVER,
                 mmio: ErsResult = ErsResult.RECOVERED, slot: ErsResult = ErsResult.RECOVERED,
                 on: Mapping[str, Callable[[], None]] | None = None) -> None:
        self.name = name
        self.log = log
        self.detected = detected
        self.mmio = mmio
        self.slot = slot
        self.on = dict(on or {})
        self.states: list[ChannelState] = []

    def _hook(self, what: str) -> None:
        self.log.append(f"{self.name}.{what}")
        fn = self.on.pop(what, None)
        if fn is not None:
            fn()

    def error_detected(self, state: ChannelState) -> ErsResult:
        self.states.append(state)
        self._hook("error_detected" if state is ChannelState.FROZEN else "perm_failure")
        return self.detected if state is ChannelState.FROZEN else ErsResult.DISCONNECT

    def mmio_enabled(self) -> ErsResult:
        self._hook("mmio_enabled")
        return self.mmio

    def slot_reset(self) -> ErsResult:
        self._hook("slot_reset")
        return self.slot

    def resume(self) -> None:
        self._hook("resume")


class FakeConfig:
    """A config space with Command and MSI-X Message Control, for the restore."""

    def __init__(self, command: int = 0x6, msix: int = 0x8003) -> None:
        self.regs = {0x04: command, 0x82: msix}
        self.writes: list[tuple[int, int]] = []

    def config_read(self, offset: int, size: int) -> int:
        return self.regs.get(offset, 0)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self.writes.append((offset, value))
        self.regs[offset] = value
