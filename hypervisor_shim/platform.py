"""The platform for one adapter: the device model, its PE policy and the guests' channels.
`Platform` is the one facade: the console, the CLI, the pytest plugin and the benches
use it, and nothing outside writes its insides.

    plat = Platform(topo.platform_config(), run_dir,          # eeh_sriov.topology
                    slots={"vf0": 2}, removal_hooks=RemovalHooks(on_remove, on_add))
    with plat:
        plat.hcall_path("g1")                        # the unix socket of g1's channel
        pes = await plat.query_pes()                 # from any event loop: typed results
        await plat.inject("adapter", InjectKind.ADAPTER_FATAL)
        plat.add_listener(on_event)                  # PeStateChanged, RecoveryStep, ...
        plat.timeline.entries                        # everything, in order

The operator API (`query_pes`, `inject`, `reset_pe`, `error_log`, `set_policy`,
`query_policy`, `timeline_tail`, `add_listener`; types in `platform_api`) is awaitable.
Synchronous code (harness tests, benches) has blocking shorthands that run the same
operations: `pe_states`, `inject_adapter_error`, `inject_vf_error`, `fail_resets`.

THE THREADING RULE. Everything that touches the device model, the PE policy, the
platform-call server or the platform's tables (registrations, removal stages) runs on the
device model's loop thread (`AdapterHost`), and only there. From anywhere else it is
reached through this facade: awaited from another event loop (the awaitable methods hop
to the loop thread with `AdapterHost.call_async`, no worker thread), or blocking from a
thread that is not the loop's (`call(fn)` and the shorthands; never from an event loop,
which it would stall). What others give the platform, they give at construction
(`slots`, `removal_hooks`) or through `add_listener`; they never assign its attributes.
Callbacks the platform makes (listeners, removal hooks) run on the loop thread, must not
block, and hand their work to their own loop (`loop.call_soon_threadsafe`). The timeline
is the one structure written from any thread (it locks per entry).

If that thread dies (something run on it raised what asyncio does not catch), the
platform fails cleanly (docs/reliability.md, "When the device model dies"): every
function's socket is closed at once, every PE is permanently failed, the timeline and
the console say `device-model-died`, and the loop goes on serving the channels and the
console, which refuse injections and resets from then on; `model_failure` says why.
If that thread stalls instead (a callback that never returns), the watchdog
(hypervisor_shim.watchdog, `PlatformConfig.watchdog_ms`) fails it the same way, with
`device-model-stalled`, and a fresh loop thread takes its place for the channels and the
console (`_model_stalled`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

from device_model import ErrorLogEntry, Event, ResetKind, ResetTiming
from device_model.adapter_config import DEFAULT_TOTAL_VFS
from eeh_abi.vf_settings import VfSettings
from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.adapter_host import DEFAULT_TAP_NAME, AdapterHost, AdapterHostConfig
from hypervisor_shim.directory import function_directory
from hypervisor_shim.hcall.calls import PlatformCalls, Registration
from hypervisor_shim.hcall.server import HcallServer
from hypervisor_shim.injection import INJECT_KINDS, InjectKind, InjectRequest, inject
from hypervisor_shim.listeners import Listeners
from hypervisor_shim.pe import Notice, PeFlag, PePolicy, PeRecord, PolicyConfig, PolicyError
from hypervisor_shim.pe.adapter_recovery import PlatformRecovery
from hypervisor_shim.pe.driver_watch import DriverWatch
from hypervisor_shim.pe.removal import NoHandlerRecovery, RemovalHooks, Stage
from hypervisor_shim.platform_api import (
    RESET_KINDS,
    Injection,
    PeInfo,
    PlatformError,
    PlatformEvent,
    PlatformListener,
    PolicyView,
    RecoveryStep,
    ResetDone,
    events_of,
)
from hypervisor_shim.timeline import Entry, Timeline
from hypervisor_shim.watchdog import DEFAULT_WATCHDOG_MS, ModelStalled, Watchdog
from qemu_launcher.sockdir import SocketDir

T = TypeVar("T")
log = logging.getLogger(__name__)

__all__ = ["Platform", "PlatformConfig", "PlatformError", "VfSettings"]


@dataclass(frozen=True)
class PlatformConfig:
    total_vfs: int = DEFAULT_TOTAL_VFS  # the defaults are the adapter's (AdapterHostConfig)
    enabled_vfs: int = DEFAULT_TOTAL_VFS
    timing: ResetTiming = ResetTiming.FAST
    owners: Mapping[str, str] = field(default_factory=dict)  # function -> owner
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    vf_settings: Mapping[int, VfSettings] = field(default_factory=dict)
    handlers: Mapping[str, bool] = field(default_factory=dict)  # owner -> has handlers
    host_cpus: tuple[int, ...] | None = ()
    uplink: str = "queue"  # or "tap" (a TAP interface on the host; root only)
    tap_name: str = DEFAULT_TAP_NAME
    # the model's loop not answering for this long is a stall (0: no watchdog)
    watchdog_ms: int = DEFAULT_WATCHDOG_MS

    @property
    def owner_names(self) -> list[str]:
        return sorted(set(self.owners.values()))


class Platform:
    def __init__(self, cfg: PlatformConfig, run_dir: Path | None = None, *,
                 slots: Mapping[str, int] | None = None,
                 removal_hooks: RemovalHooks | None = None,
                 restart_guest: Callable[[str], None] | None = None) -> None:
        """`slots`: function -> the PCIe slot its guest sees it in (VM mode; what
        query-functions tells the guest). `removal_hooks`: what to do when a function of
        a driver without error handlers is removed and added back (pe.removal).
        `restart_guest(owner)`: restart the guest of the lost adapter driver (VM mode;
        called on the model's thread, must not block; report the outcome with
        `guest_restarted`); without it "restart-guest" falls back to "platform-recover"
        (pe.driver_watch)."""
        self.watchdog = Watchdog(lambda: self.host.server.loop, cfg.watchdog_ms,
                                 self._model_stalled)  # first: its limit is checked
        self.cfg = cfg
        self.run_dir = run_dir
        self.timeline = Timeline(run_dir / "events.jsonl" if run_dir is not None else None)
        self.host = AdapterHost(AdapterHostConfig(
            total_vfs=cfg.total_vfs, enabled_vfs=cfg.enabled_vfs, timing=cfg.timing,
            host_cpus=cfg.host_cpus, uplink=cfg.uplink, tap_name=cfg.tap_name))
        self.adapter = self.host.adapter
        # The channels' sockets' directory: named now, created by start() (a platform never
        # started leaves nothing), removed by stop().
        self._chan_dir = SocketDir("eeh-hcall-")
        self.chan_dir = self._chan_dir.path
        self.slots: Mapping[str, int] = MappingProxyType(dict(slots or {}))
        self.policy = PePolicy(self.adapter, cfg.owners, config=cfg.policy,
                               clock=self.adapter.clock.now, notify=self._notice,
                               enabled_vfs=cfg.enabled_vfs)
        self.calls = PlatformCalls(self.policy, self.timeline, self.directory)
        self.removal = NoHandlerRecovery(
            self.policy, handlers_of=self._handlers_of,
            function_name=lambda rec: self.adapter.function_of(rec.pe).name,
            hooks=removal_hooks or RemovalHooks())
        self.server = HcallServer(self.calls, self.timeline)
        self._notice_listeners: Listeners[Notice] = Listeners("notice listener", log)
        self._notice_listeners.add(self.removal)
        # a dead or stuck adapter driver (pe.driver_watch) and the platform's own
        # recovery of the adapter (pe.adapter_recovery)
        self.platform_recovery = PlatformRecovery(self.policy, cfg.vf_settings,
                                                  clock=self.adapter.clock.now)
        self.driver_watch = DriverWatch(
            self.policy, self.platform_recovery, clock=self.adapter.clock.now,
            connected=lambda owner: bool(self.server.connections.get(owner)),
            registered=self._adapter_driver_of, restart=restart_guest)
        self._notice_listeners.add(self.platform_recovery)
        self._notice_listeners.add(self.driver_watch.on_notice)
        self._listeners: Listeners[PlatformEvent] = Listeners("platform event listener", log)
        self.adapter.events.add_listener(self._model_event)
        self.timeline.add_listener(self._on_entry)
        self._paths: dict[str, Path] = {}
        self.model_failure: str | None = None  # why the device model's thread died
        self.host.server.on_death = self._model_died

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> Platform:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._chan_dir.create()
        try:
            self.host.__enter__()
        except BaseException:
            self._chan_dir.remove()
            raise
        self.watchdog.start()
        try:
            for owner in self.cfg.owner_names:
                self.add_channel(owner)
        except BaseException:
            self.stop()
            raise
        self.timeline.record(Source.SHIM, Kind.PLATFORM_STARTED,
                             data={"owners": dict(self.cfg.owners),
                                   "enabled_vfs": self.cfg.enabled_vfs,
                                   "timing": dataclasses.asdict(self.cfg.timing),
                                   "uplink": self.uplink_name})

    def stopping(self) -> None:
        """The platform's owner is taking everything down (guests first): from now on a
        channel that closes or a guest that goes loses no adapter driver (no restart, no
        platform recovery). `stop` does this too."""
        self.driver_watch.stopping = True

    def stop(self) -> None:
        self.stopping()  # the channels closing now lose no driver
        self.watchdog.stop()
        if self.host.server.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.server.close(), self.host.server.loop)
            try:
                fut.result(timeout=10)
            except Exception:  # the channels are closed with the loop below anyway
                log.exception("closing the platform channels")
        self.host.__exit__(None, None, None)
        self._chan_dir.remove()
        self.timeline.close()

    @property
    def uplink_name(self) -> str:
        """The TAP interface carrying the uplink (tcpdump -i it), or "queue"."""
        return self.host.tap.name if self.host.tap is not None else "queue"

    def add_channel(self, owner: str) -> Path:
        """Serve a platform channel for `owner` (a guest, HOST, or any test identity)."""
        path = self.chan_dir / f"{owner}.hcall"
        fut = asyncio.run_coroutine_threadsafe(self.server.listen(owner, path),
                                               self.host.server.loop)
        self._paths[owner] = fut.result(timeout=10)
        return path

    def hcall_path(self, owner: str) -> Path:
        try:
            return self._paths[owner]
        except KeyError:
            raise PlatformError(f"no platform channel for {owner!r}") from None

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the device model's loop thread and return its result (blocking:
        from a thread that runs no event loop)."""
        return self.host.call(fn)

    def _adapter_driver_of(self, owner: str) -> bool:
        """Whether `owner` registered a driver on the adapter PE (the driver watch)."""
        reg = self.calls.registrations.get(self.policy.adapter_record.address)
        return reg is not None and reg.owner == owner

    def _handlers_of(self, pe_address: int) -> bool | None:
        reg = self.calls.registrations.get(pe_address)
        return None if reg is None else reg.handlers

    def directory(self, owner: str) -> list[dict[str, Any]]:
        """What `query-functions` tells `owner`: the functions it holds and where."""
        return function_directory(self.adapter, self.cfg, owner, self.slots,
                                  self.host.server.paths)

    # ------------------------------------------------------------------ events
    def add_listener(self, callback: PlatformListener) -> None:
        """Call `callback(event)` for every platform event from now on, on the model's loop
        thread (it must not block). A callback that raises is logged, never fatal."""
        self._listeners.add(callback)

    def remove_listener(self, callback: PlatformListener) -> None:
        self._listeners.remove(callback)

    def _model_event(self, ev: Event) -> None:
        rec = self.policy.record(ev.pe) if ev.pe is not None else None
        self.timeline.record(Source.MODEL, ev.kind.value, pe=rec.name if rec else None,
                             data={k: v for k, v in ev.data.items()}
                             | ({"function": ev.function} if ev.function else {}), t=ev.time)

    def _notice(self, n: Notice) -> None:  # on the model's loop thread
        self.timeline.record(Source.POLICY, n.kind, pe=n.pe,
                             data=dict(n.data) | ({"to": list(n.owners)} if n.event else {}))
        self.server.push(n)
        self._notice_listeners.call(n)
        rec = self.policy.record(n.address) if n.address is not None else None
        for ev in events_of(n, rec, self.policy.state(rec) if rec is not None else None):
            self._listeners.call(ev)

    def _on_entry(self, e: Entry) -> None:
        self.driver_watch.on_entry(e)
        if e.source == Source.DRIVER:
            self._listeners.call(RecoveryStep(e.owner, e.kind, e.pe, e.data))

    # ------------------------------------------------------------------ the model dies
    def _model_died(self, exc: BaseException) -> bool:
        """On the model's thread, its loop stopped, every function's socket already
        closed: fail cleanly and keep the loop for the channels and the console."""
        self._model_failed(Kind.DEVICE_MODEL_DIED, exc)
        return True

    def _model_stalled(self, exc: ModelStalled) -> None:
        """On the watchdog's thread, the model's loop stuck in a callback: every
        function's client cut off, a fresh loop serving the channels, then as for a
        death, on that loop (which is the platform's loop thread from now on)."""
        loop = self.host.server.abandon(exc)

        async def take_over() -> None:
            await self.server.adopt()
            self._model_failed(Kind.DEVICE_MODEL_STALLED, exc)
        asyncio.run_coroutine_threadsafe(take_over(), loop).result(timeout=10)

    def _model_failed(self, kind: Kind, exc: BaseException) -> None:
        self.model_failure = f"{type(exc).__name__}: {exc}"
        try:
            self.policy.emit(kind, self.policy.adapter_record,
                             {"error": self.model_failure,
                              "functions_closed": sorted(self.host.server.paths)})
            self.policy.fail_all(kind)
        except Exception:  # the policy's own state may be what broke: still go on
            log.exception("marking the PEs failed after the device model failed")

    # ------------------------------------------------------------------ a guest is gone
    def guest_gone(self, owner: str) -> list[str]:
        """`owner`'s QEMU died: take back the VFs it held. Each is reset now (an FLR: no
        ring or DMA state of the dead guest survives) if its PE can be, and from then on
        is recovered by the platform like a function whose driver has no error handlers
        (docs/platform-calls.md). The PF is left alone: resetting the adapter would hit
        every other guest; if `owner` ran the adapter driver, the driver watch acts on
        its loss (pe.driver_watch). Returns the VFs taken back. Blocking (see `call`)."""
        self._alive()

        def act() -> list[str]:
            taken = []
            for fn in self.adapter.vfs:
                if self.cfg.owners.get(fn.name) != owner:
                    continue
                rec = self.policy.record(fn.pe.address)
                assert rec is not None
                self.calls.registrations[rec.address] = Registration(
                    owner, rec.address, "(guest gone)", handlers=False)
                state = "left"
                if PeFlag.LOCKED_OUT in rec.flags:
                    self.removal.stages[rec.address] = Stage.REMOVED  # reset after the lift
                    state = "reset after the lockout"
                elif PeFlag.PERMANENT not in rec.flags and \
                        int(rec.pe.status().code) in (0, 2, 4):
                    status = int(rec.pe.reset(ResetKind.HOT))
                    state = "reset" if status == 0 else f"reset refused ({status})"
                self.policy.emit(Kind.OWNER_GONE, rec, {"owner": owner, "function": fn.name,
                                                        "action": state})
                taken.append(fn.name)
            self.driver_watch.guest_gone(owner)
            return taken
        return self.call(act)

    def guest_restarted(self, owner: str, ok: bool, **detail: Any) -> None:
        """The restart of `owner`'s guest asked by `restart_guest` is over: it is up again
        (`ok`; its adapter driver now has the deadline to recover the adapter), or it
        could not be restarted (the platform recovers the adapter). Blocking."""
        self.call(lambda: self.driver_watch.guest_restarted(owner, ok, detail))

    def _alive(self) -> None:
        if self.model_failure is not None:
            raise PlatformError(f"the device model is down ({self.model_failure})")

    # ------------------------------------------------------------------ the operator API
    def _rec(self, pe: str) -> PeRecord:
        rec = self.policy.by_name(pe)
        if rec is None:
            names = ", ".join(r.name for r in self.policy.records.values())
            raise PlatformError(f"no PE named {pe!r} (PEs: {names})")
        return rec

    def _present_rec(self, pe: str) -> PeRecord:
        """PE `pe`, if query-pes lists it; operator actions on any other are refused."""
        rec = self._rec(pe)
        if not self.policy.present(rec):
            names = ", ".join(p.pe for p in self._present())
            raise PlatformError(f"PE {pe!r} is not present (its VF is not enabled; "
                                f"PEs: {names})")
        return rec

    def _present(self) -> list[PeInfo]:
        """The adapter PE and the PEs of the VFs that exist (enabled) or have an owner."""
        out = []
        for rec in self.policy.records.values():
            if self.policy.present(rec):
                st = self.policy.state(rec)
                out.append(PeInfo(rec.name, rec.address, int(st.state), st.retry_ms,
                                  rec.owner, rec.freezes.total, tuple(st.flags.names())))
        return out

    async def query_pes(self) -> list[PeInfo]:
        """Every present PE, adapter first."""
        return await self.host.call_async(self._present)

    def _inject(self, pe: str, kind: str, function: int | None, address: int,
                mask: int, by: str, detail: str | None) -> Callable[[], Injection]:
        self._alive()
        if kind not in INJECT_KINDS:
            raise PlatformError(f"no error kind {kind!r} ({', '.join(INJECT_KINDS)})")
        k = InjectKind(kind)
        why = detail if detail is not None else f"{by}: {INJECT_KINDS[k].detail or k}"

        def act() -> Injection:
            rec = self._present_rec(pe)  # refused before anything is recorded
            self.timeline.record(by, Kind.INJECT, pe=pe, data={"kind": str(k),
                                                               "function": function})
            return inject(k, InjectRequest(rec, self.adapter, function, address, mask, why))
        return act

    async def inject(self, pe: str, kind: InjectKind | str = InjectKind.ERRINJCT, *,
                     function: int | None = None, address: int = 0, mask: int = 0,
                     by: str = Source.SHIM, detail: str | None = None) -> Injection:
        """Inject an error of `kind` (hypervisor_shim.injection) on PE `pe`: `function` is
        the ibm,errinjct code (errinjct only), `address`/`mask` 64-bit unsigned. `by`
        (a timeline source) and `detail` say who asked, in the timeline and error log."""
        return await self.host.call_async(
            self._inject(pe, kind, function, address, mask, by, detail))

    def _reset(self, pe: str, kind: str, by: str) -> Callable[[], ResetDone]:
        self._alive()
        if kind not in RESET_KINDS:
            raise PlatformError(f"no reset kind {kind!r} ({', '.join(RESET_KINDS)})")

        def act() -> ResetDone:
            rec = self._present_rec(pe)  # refused before anything is recorded
            self.timeline.record(by, Kind.RESET_PE, pe=pe, data={"kind": kind})
            status = rec.pe.reset(RESET_KINDS[kind])
            if int(status) != 0:
                raise PlatformError(f"reset of {pe} refused: status {int(status)} "
                                    f"({status.name})")
            self.policy.clear_permanent(rec)
            return ResetDone(pe, kind, 0)
        return act

    async def reset_pe(self, pe: str, kind: str = "hot", *,
                       by: str = Source.SHIM) -> ResetDone:
        """Reset PE `pe` (`kind`: "hot" or "fundamental"); clears a permanent failure."""
        return await self.host.call_async(self._reset(pe, kind, by))

    async def error_log(self, pe: str) -> list[ErrorLogEntry]:
        """The PE's error log, oldest first."""
        return await self.host.call_async(lambda: list(self._rec(pe).pe.error_log()))

    async def set_policy(self, max_freezes: int | None = None,
                         window_s: float | None = None) -> PolicyView:
        """Change the freeze policy (None: keep that value); the policy now in force."""
        def act() -> PolicyView:
            changes: dict[str, Any] = {}
            if max_freezes is not None:
                changes["max_freezes"] = max_freezes
            if window_s is not None:
                changes["window_s"] = window_s
            try:
                return PolicyView.of(self.policy.set_config(**changes))
            except PolicyError as e:
                raise PlatformError(str(e)) from None
        return await self.host.call_async(act)

    async def query_policy(self) -> PolicyView:
        return await self.host.call_async(lambda: PolicyView.of(self.policy.config))

    async def timeline_tail(self, last: int) -> list[Entry]:
        """The timeline's last `last` entries, in the order recorded (the timeline locks
        itself: no hop to the model's loop)."""
        return self.timeline.snapshot()[-last:] if last > 0 else []

    # ------------------------------------------------------------------ blocking shorthands
    def pe_states(self) -> dict[str, dict[str, Any]]:
        """`query_pes` as {pe: {state, retry_ms, flags, owner, freeze_count}}, blocking."""
        return {p.pe: {"state": p.state, "retry_ms": p.retry_ms, "flags": list(p.flags),
                       "owner": p.owner, "freeze_count": p.freeze_count}
                for p in self.call(self._present)}

    def _logged(self, pe: str, kind: InjectKind, detail: str | None) -> int:
        seq = self.call(self._inject(pe, kind, None, 0, 0, Source.SHIM, detail)).log_seq
        assert seq is not None  # these kinds log an error
        return seq

    def inject_adapter_error(self, detail: str | None = None) -> int:
        """`inject("adapter", ADAPTER_FATAL)`, blocking; the error log's seq."""
        return self._logged("adapter", InjectKind.ADAPTER_FATAL, detail)

    def inject_vf_error(self, index: int, detail: str | None = None) -> int:
        """`inject(f"vf{index}", VF_ERROR)`, blocking; the error log's seq."""
        if not 0 <= index < self.cfg.total_vfs:
            raise PlatformError(f"no vf{index}")
        return self._logged(f"vf{index}", InjectKind.VF_ERROR, detail)

    def fail_resets(self, pe: str, times: int) -> None:
        """Fault hook (tests): the next `times` resets of PE `pe` ("adapter", "vf0", ...)
        complete without bringing it back (`device_model.pe.Pe.fail_resets`)."""
        rec = self.policy.by_name(pe)
        if rec is None or times < 0:
            raise PlatformError(f"cannot fail resets of {pe!r} {times} times")

        def arm() -> None:
            rec.pe.fail_resets = times
        self.call(arm)
