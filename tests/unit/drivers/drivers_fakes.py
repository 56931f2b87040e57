"""Fakes for the driver tests: platforms that speak the platform calls, in-process and
over a unix socket, and a FunctionAccess on the real device model without a transport.

- `ScriptedPlatform` + `LocalChannel`: PE states kept by hand, for stepping the recovery
  framework through exact sequences (no device model).
- `ModelPlatform`: the platform calls on a real `device_model.Adapter` (thaw, reset,
  configure, lockout until open-sriov-allow-unfreeze, pushed events), run through an
  executor (`run`): a lock for the in-process adapter, `AdapterHost.call` for the real
  server. `HcallSocketServer` serves it over unix sockets with eeh_abi.hcall, one per
  owner, as the real platform will.
- `InProcessFunction`, `InProcessBackend`: in `drivers_inprocess`.

Import as `tests.unit.drivers.drivers_fakes`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from device_model import Adapter, Event, EventKind, PeKind
from device_model.pe import Pe
from eeh_abi.hcall import (
    DecodeError,
    EventHandler,
    LineBuffer,
    Reply,
    Request,
    decode,
    encode,
)
from eeh_abi.hcall import (
    Event as HEvent,
)
from eeh_abi.papr import ChannelState, EehOption, ErsResult, PeState, SlotReset, Status

T = TypeVar("T")
HOST = "host"


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
    """PE states by hand. `on_call(call, args)` hooks may change things mid-sequence."""

    def __init__(self) -> None:
        self.pes: dict[int, FakePe] = {}
        self.channel = LocalChannel(self.handle)
        self.hooks: list[Callable[[str, dict[str, Any]], None]] = []
        self.config_writes: list[tuple[int, int, int]] = []

    def add(self, pe: int, **kw: Any) -> FakePe:
        self.pes[pe] = FakePe(**kw)
        return self.pes[pe]

    def freeze(self, pe: int, *, push: bool = True, **data: Any) -> None:
        self.pes[pe].state = PeState.FROZEN
        if push:
            self.channel.push("pe-frozen", pe, **data)

    def lift(self, pe: int) -> None:
        self.pes[pe].locked = False
        self.channel.push("lockout-lifted", pe)

    def handle(self, call: str, args: dict[str, Any]) -> Reply:
        for hook in list(self.hooks):
            hook(call, args)
        if call in ("report", "register"):
            return ok()
        p = self.pes[args["pe"]]
        if call == "read-slot-reset-state2":
            if p.permanent:
                return ok(state=5, retry_ms=0, flags=["permanent"])
            if p.locked:
                return ok(state=5, retry_ms=p.retry_ms, flags=["locked-out"])
            return ok(state=p.state, retry_ms=0, flags=[])
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
                last = p.log[-1]["reset"] if p.log else SlotReset.HOT
                if p.resets_fail > 0:
                    p.resets_fail -= 1
                    p.state = PeState.FROZEN
                elif last == SlotReset.HOT and not p.hot_reset_works:
                    p.state = PeState.FROZEN
                else:
                    p.state = PeState.NORMAL
                return ok()
        if call == "configure-pe":
            return ok() if p.state != PeState.RESET else status(Status.UNEXPECTED_STATE)
        if call == "slot-error-detail":
            return ok(log=[{"seq": 1, "source": "injected"}])
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


# ---------------------------------------------------------------------------- model
class ModelPlatform:
    """The platform calls on a real Adapter. Every model access goes through `run`."""

    def __init__(self, adapter: Adapter, run: Callable[[Callable[[], Any]], Any], *,
                 owners: Mapping[str, str] | None = None, retry_ms: int = 1000,
                 lockout: bool = True, sockets: Mapping[str, Path] | None = None,
                 vf_settings: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        self.adapter = adapter
        self.run = run
        self.owners = dict(owners) if owners is not None else {
            f.name: HOST for f in adapter.functions()}
        self.retry_ms = retry_ms
        self.lockout = lockout
        self.sockets = dict(sockets or {})
        self.vf_settings = dict(vf_settings or {})
        self.enabled_vfs = run(adapter.enabled_vfs)
        self.locked: set[int] = set()
        self.permanent: set[int] = set()
        self.registrations: dict[int, tuple[str, str, bool]] = {}
        self.reports: list[tuple[float, str, dict[str, Any]]] = []
        self.calls: list[tuple[float, str, str, dict[str, Any], int]] = []
        # (owner, call, args, status) in the order the model handled them
        self.handled: list[tuple[str, str, dict[str, Any], int]] = []
        self.pushed: list[tuple[float, str, str, int | None, dict[str, Any]]] = []
        self.subscribers: dict[str, list[Callable[[HEvent], None]]] = {}
        # called before a call is handled, outside the model (a test may hold a call back)
        self.before_call: Callable[[str, str, dict[str, Any]], None] | None = None
        self._lock = threading.Lock()
        run(lambda: adapter.events.add_listener(self._model_event))

    # ---- plumbing
    def owner_of_pe(self, pe: int) -> str | None:
        fn = self.adapter.function_of(self.adapter.pes.get(pe))
        return self.owners.get(fn.name)

    def subscribe(self, owner: str, fn: Callable[[HEvent], None]) -> None:
        with self._lock:
            self.subscribers.setdefault(owner, []).append(fn)

    def unsubscribe(self, owner: str, fn: Callable[[HEvent], None]) -> None:
        with self._lock:
            lst = self.subscribers.get(owner, [])
            if fn in lst:
                lst.remove(fn)

    def push(self, owner: str | None, event: str, pe: int | None, **data: Any) -> None:
        if owner is None:
            return
        ev = HEvent(event, pe, data, time.monotonic())
        with self._lock:
            self.pushed.append((ev.t, owner, event, pe, dict(data)))
            subs = list(self.subscribers.get(owner, []))
        for fn in subs:
            fn(ev)

    def steps(self, pe: int | None = None) -> list[str]:
        return [a["step"] for _, _, a in self.reports if pe is None or a.get("pe") == pe]

    def report_details(self, step: str, pe: int | None = None) -> list[dict[str, Any]]:
        return [dict(a.get("detail", {})) for _, _, a in self.reports
                if a["step"] == step and (pe is None or a.get("pe") == pe)]

    # ---- model events (on the model's thread)
    def _model_event(self, ev: Event) -> None:
        if ev.kind is EventKind.PE_FROZEN and ev.pe is not None:
            side = bool(ev.data.get("side_effect"))
            origin = ev.data.get("origin", ev.pe)
            locked = side and self.lockout and origin == self.adapter.pes.adapter.address
            if locked:
                self.locked.add(ev.pe)
            self.push(self.owner_of_pe(ev.pe), "pe-frozen", ev.pe, origin=origin,
                      side_effect=side, reason=ev.data.get("reason", ""), locked_out=locked)
            reg = self.registrations.get(ev.pe)
            if reg is not None and not reg[2] and not locked:
                self._platform_recovers(ev.pe)
        elif ev.kind is EventKind.PE_RESET_DONE and ev.pe is not None:
            pe = self.adapter.pes.get(ev.pe)
            for p in (pe, *pe.descendants()):
                self.push(self.owner_of_pe(p.address), "pe-reset-done", p.address,
                          reset=ev.data.get("reset"))

    def _platform_recovers(self, address: int) -> None:
        """A driver without handlers: remove its function, reset the PE, add it back."""
        owner = self.owner_of_pe(address)
        name = self.adapter.function_of(self.adapter.pes.get(address)).name
        self.push(owner, "function-removed", address, name=name)
        pe = self.adapter.pes.get(address)
        pe.reset(SlotReset.HOT)  # an FLR for a VF PE (timing FAST: done at once)
        self.push(owner, "function-added", address, name=name)

    # ---- calls
    def directory(self, owner: str) -> list[dict[str, Any]]:
        out = []
        for fn in self.adapter.functions():
            if self.owners.get(fn.name) != owner:
                continue
            vf = getattr(fn, "index", None)
            if vf is not None and vf >= self.enabled_vfs:
                continue
            entry: dict[str, Any] = {
                "name": fn.name, "kind": "pf" if vf is None else "vf", "vf": vf,
                "addr": fn.pe.address, "pe": fn.pe.address, "slot": None,
                "socket": str(self.sockets[fn.name]) if fn.name in self.sockets else None,
                "handlers": True}
            if vf is not None and vf in self.vf_settings:
                entry["config"] = dict(self.vf_settings[vf])
            if vf is None:
                entry["adapter"] = {
                    "num_vfs": self.enabled_vfs,
                    "vf_pes": [p.address for p in self.adapter.pes.vfs[:self.enabled_vfs]],
                    "vfs": [dict(vf=n, **s) for n, s in sorted(self.vf_settings.items())]}
            out.append(entry)
        return out

    def handle(self, owner: str, call: str, args: dict[str, Any]) -> Reply:
        if self.before_call is not None:
            self.before_call(owner, call, args)
        def handled() -> Reply:
            r = self._handle(owner, call, args)
            self.handled.append((owner, call, dict(args), r.status))  # model thread: in order
            return r
        reply: Reply = self.run(handled)
        self.calls.append((time.monotonic(), owner, call, dict(args), reply.status))
        return reply

    def _gate(self, address: int) -> Reply | None:
        if address in self.permanent:
            return status(Status.HW_ERROR)
        if address in self.locked:
            return status(Status.BUSY, retry_ms=self.retry_ms)
        return None

    def _handle(self, owner: str, call: str, args: dict[str, Any]) -> Reply:
        if call == "query-functions":
            return ok(functions=self.directory(owner))
        if call == "report":
            self.reports.append((time.monotonic(), owner, dict(args)))
            return ok()
        if call == "register":
            self.registrations[args["addr"]] = (owner, args["driver"],
                                                bool(args.get("handlers", True)))
            return ok()
        try:
            pe: Pe = self.adapter.pes.get(args["pe"])
        except Exception:
            return status(Status.PARAM_ERROR)
        a = pe.address
        if call == "read-slot-reset-state2":
            if a in self.permanent:
                return ok(state=5, retry_ms=0, capabilities=1, flags=["permanent"])
            if a in self.locked:
                return ok(state=5, retry_ms=self.retry_ms, capabilities=1,
                          flags=["locked-out"])
            st = pe.status()
            return ok(state=int(st.code), retry_ms=st.unavailable_ms, capabilities=1,
                      flags=[])
        if call == "slot-error-detail":
            return ok(log=[e.to_json() for e in pe.error_log()])
        if call == "open-sriov-allow-unfreeze":
            if pe.kind is not PeKind.ADAPTER:
                return status(Status.PARAM_ERROR)
            if pe.status().code != PeState.NORMAL:
                return status(Status.UNEXPECTED_STATE)
            allowed = []
            for vf in args["vf_pes"]:
                if vf in self.locked:
                    self.locked.discard(vf)
                    allowed.append(vf)
                    reg = self.registrations.get(vf)
                    if reg is not None and not reg[2]:
                        self._platform_recovers(vf)
                    else:
                        self.push(self.owner_of_pe(vf), "lockout-lifted", vf)
            return ok(allowed=allowed)
        gated = self._gate(a)
        if gated is not None:
            return gated
        if call == "set-eeh-option":
            opt = args["option"]
            if opt in (0, 1):
                return ok()
            r = pe.thaw_mmio() if opt == EehOption.THAW_MMIO else pe.thaw_dma()
            return ok() if int(r) == 0 else status(int(r))
        if call == "set-slot-reset":
            fn = args["function"]
            r = pe.deactivate_reset() if fn == SlotReset.DEACTIVATE else pe.activate_reset(fn)
            return ok() if int(r) == 0 else status(int(r))
        if call == "configure-pe":
            code = pe.status().code
            if code in (PeState.RESET, PeState.UNAVAILABLE):
                return status(Status.UNEXPECTED_STATE)
            if pe.kind is PeKind.ADAPTER and self.enabled_vfs:
                pf = self.adapter.pf
                if not (pf.sriov_enabled and pf.num_vfs == self.enabled_vfs):
                    pf.enable_vfs(self.enabled_vfs)
            return ok()
        return status(Status.PARAM_ERROR)

    def channel(self, owner: str = HOST) -> ModelChannel:
        return ModelChannel(self, owner)


class ModelChannel:
    """An in-process channel of one owner onto a ModelPlatform."""

    def __init__(self, platform: ModelPlatform, owner: str) -> None:
        self.platform = platform
        self.owner = owner
        self._subs: list[EventHandler] = []
        platform.subscribe(owner, self._event)

    def _event(self, ev: HEvent) -> None:
        for h in list(self._subs):
            h(ev)

    def call(self, call: str, timeout: float | None = None, **args: Any) -> Reply:
        return self.platform.handle(self.owner, call, args)

    def subscribe(self, handler: EventHandler) -> None:
        self._subs.append(handler)

    def unsubscribe(self, handler: EventHandler) -> None:
        if handler in self._subs:
            self._subs.remove(handler)

    def close(self) -> None:
        self.platform.unsubscribe(self.owner, self._event)


class HcallSocketServer:
    """Serves a ModelPlatform over unix sockets, `<dir>/<owner>.hcall`, eeh_abi.hcall."""

    def __init__(self, platform: ModelPlatform, sock_dir: Path,
                 owners: tuple[str, ...] = (HOST,)) -> None:
        self.platform = platform
        self.paths: dict[str, Path] = {}
        self._listeners: list[socket.socket] = []
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        for owner in owners:
            path = sock_dir / f"{owner}.hcall"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(str(path))
            s.listen(8)
            s.settimeout(0.2)
            self.paths[owner] = path
            self._listeners.append(s)
            t = threading.Thread(target=self._accept, args=(s, owner), daemon=True,
                                 name=f"hcall-accept-{owner}")
            t.start()
            self._threads.append(t)

    def _accept(self, s: socket.socket, owner: str) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = s.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(None)
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, owner), daemon=True,
                                 name=f"hcall-{owner}")
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket, owner: str) -> None:
        wlock = threading.Lock()

        def send(data: bytes) -> None:
            with wlock:
                try:
                    conn.sendall(data)
                except OSError:
                    pass

        def event(ev: HEvent) -> None:
            send(encode(ev))

        self.platform.subscribe(owner, event)
        lines = LineBuffer()
        try:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                for item in lines.feed(data):
                    if isinstance(item, DecodeError):
                        send(encode(Reply(None, -3, {}, item.reason)))
                        continue
                    try:
                        msg = decode(item)
                    except DecodeError as e:
                        send(encode(Reply(None, -3, {}, e.reason)))
                        continue
                    if isinstance(msg, Request):
                        r = self.platform.handle(owner, msg.call, dict(msg.args))
                        send(encode(Reply(msg.id, r.status, r.ret, r.error)))
        finally:
            self.platform.unsubscribe(owner, event)
            conn.close()

    def close(self) -> None:
        self._stop.set()
        for s in self._listeners + self._conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(2)


def locked_runner(lock: threading.RLock) -> Callable[[Callable[[], T]], T]:
    def run(fn: Callable[[], T]) -> T:
        with lock:
            return fn()
    return run


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def short_tmp(prefix: str = "drv") -> Path:
    """A new directory /tmp/eeh-<prefix>-*: short (AF_UNIX paths are), and named so the
    test session's leak check (tests/conftest.py) sees it if it is left behind."""
    import tempfile
    return Path(tempfile.mkdtemp(prefix=f"eeh-{prefix}-", dir="/tmp"))


__all__ = ["HOST", "FakeConfig", "FakePe", "HcallSocketServer", "LocalChannel",
           "ModelChannel", "ModelPlatform", "Recorder", "ScriptedPlatform",
           "locked_runner", "ok", "short_tmp", "status", "wait_for"]
