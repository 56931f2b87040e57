"""The platform for one or several adapters: their device models, their PE trees (each
its own policy: hypervisor_shim.adapters) and the guests' channels.
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

Several adapters (`PlatformConfig.adapters`, each an `AdapterPlan`): every operation
takes the platform-wide names ("nic1" for adapter nic1's PE, "nic1.vf3"; functions
"nic1.pf", "nic1.vf3"); `plat.trees` holds each adapter's tree by name, and `plat.adapter`,
`plat.policy`, `plat.driver_watch`... are the first adapter's (the only one's before).

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
from hypervisor_shim.adapter_host import DEFAULT_TAP_NAME, AdapterHost
from hypervisor_shim.adapters import AdapterPlan, AdapterTree, TreeHooks, build_tree
from hypervisor_shim.directory import function_directory
from hypervisor_shim.hcall.calls import PlatformCalls, Registration
from hypervisor_shim.hcall.server import HcallServer
from hypervisor_shim.injection import INJECT_KINDS, InjectKind, InjectRequest, inject
from hypervisor_shim.listeners import Listeners
from hypervisor_shim.pe import Notice, PeFlag, PePolicy, PeRecord, PolicyConfig, PolicyError
from hypervisor_shim.pe.names import pe_name, qualify
from hypervisor_shim.pe.removal import RemovalHooks, Stage
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

__all__ = ["AdapterPlan", "Platform", "PlatformConfig", "PlatformError", "VfSettings"]


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
    # Several adapters, each named, on its own bus, with its own owners (by its own
    # function names), policy, VF settings and uplink: then the fields above from
    # total_vfs to tap_name but `owners` are not used (`owners` is informational: every
    # adapter's owners by platform-wide name). Empty: one unnamed adapter from the fields.
    adapters: tuple[AdapterPlan, ...] = ()
    # vfio-user clients each served from a thread of their own (AdapterHostConfig.
    # client_threads); None: so in VM mode (a Platform given `slots`: QEMU guests, whose
    # MMIO reads that shortens), on the model's loop in harness mode (drivers of this
    # host: less CPU per message)
    vfio_user_threads: bool | None = None

    @property
    def owner_names(self) -> list[str]:
        return sorted({o for p in self.plans() for o in p.owners.values()})

    def plans(self) -> tuple[AdapterPlan, ...]:
        """Every adapter of the platform, in order."""
        if self.adapters:
            return self.adapters
        return (AdapterPlan("", total_vfs=self.total_vfs, enabled_vfs=self.enabled_vfs,
                            timing=self.timing, owners=self.owners, policy=self.policy,
                            vf_settings=self.vf_settings, uplink=self.uplink,
                            tap_name=self.tap_name),)


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
        plans = cfg.plans()
        threads = cfg.vfio_user_threads if cfg.vfio_user_threads is not None \
            else slots is not None
        self.host = AdapterHost(*(dataclasses.replace(p.host_config(cfg.host_cpus),
                                                      client_threads=threads)
                                  for p in plans))
        self.adapter = self.host.adapter  # the first adapter (the only one, before)
        # The channels' sockets' directory: named now, created by start() (a platform never
        # started leaves nothing), removed by stop().
        self._chan_dir = SocketDir("eeh-hcall-")
        self.chan_dir = self._chan_dir.path
        self.slots: Mapping[str, int] = MappingProxyType(dict(slots or {}))
        # Each adapter's PE tree: its policy, the removal of drivers without handlers
        # (pe.removal), the platform's own recovery of the adapter (pe.adapter_recovery)
        # and the watch of its adapter driver (pe.driver_watch).
        hooks = TreeHooks(notify=self._notice, handlers_of=self._handlers_of,
                          connected=lambda owner: bool(self.server.connections.get(owner)),
                          registered=self._adapter_driver_of,
                          removal=removal_hooks or RemovalHooks(), restart=restart_guest)
        self.trees: dict[str, AdapterTree] = {
            p.name: build_tree(p, self.host.adapters[p.name], hooks) for p in plans}
        first = next(iter(self.trees.values()))
        self.policy = first.policy
        self.removal = first.removal
        self.platform_recovery = first.recovery
        self.driver_watch = first.watch
        self._by_address: dict[int, PeRecord] = {
            a: r for t in self.trees.values() for a, r in t.policy.records.items()}
        self.calls = PlatformCalls(self.policy, self.timeline, self.directory,
                                   trees=tuple(t.policy for t in self.trees.values()))
        self.server = HcallServer(self.calls, self.timeline)
        self._notice_listeners: Listeners[Notice] = Listeners("notice listener", log)
        for t in self.trees.values():
            self._notice_listeners.add(t.removal)
            self._notice_listeners.add(t.recovery)
            self._notice_listeners.add(t.watch.on_notice)
        self._listeners: Listeners[PlatformEvent] = Listeners("platform event listener", log)
        for t in self.trees.values():
            t.adapter.events.add_listener(self._model_event)
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
        data: dict[str, Any] = {"owners": dict(self.cfg.owners),
                                "enabled_vfs": self.cfg.enabled_vfs,
                                "timing": dataclasses.asdict(self.cfg.timing),
                                "uplink": self.uplink_name}
        if self.cfg.adapters:
            data["adapters"] = {t.name: {
                "pe": t.adapter_pe, "bus": t.plan.bus, "owners": dict(t.plan.owners),
                "enabled_vfs": t.plan.enabled_vfs, "timing": dataclasses.asdict(t.plan.timing),
                "uplink": self.uplink_names[t.name]} for t in self.trees.values()}
        self.timeline.record(Source.SHIM, Kind.PLATFORM_STARTED, data=data)

    def stopping(self) -> None:
        """The platform's owner is taking everything down (guests first): from now on a
        channel that closes or a guest that goes loses no adapter driver (no restart, no
        platform recovery). `stop` does this too."""
        for t in self.trees.values():
            t.watch.stopping = True

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
        """The TAP interface carrying the (first) adapter's uplink (tcpdump -i it), or
        "queue"."""
        return self.uplink_names[self.host.cfg.name]

    @property
    def uplink_names(self) -> dict[str, str]:
        """Each adapter's uplink: its TAP interface, or "queue"."""
        return {name: tap.name if (tap := self.host.taps.get(name)) is not None else "queue"
                for name in self.trees}

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

    def _adapter_driver_of(self, policy: PePolicy, owner: str) -> bool:
        """Whether `owner` registered a driver on `policy`'s adapter PE (the driver
        watch)."""
        reg = self.calls.registrations.get(policy.adapter_record.address)
        return reg is not None and reg.owner == owner

    def _handlers_of(self, pe_address: int) -> bool | None:
        reg = self.calls.registrations.get(pe_address)
        return None if reg is None else reg.handlers

    def directory(self, owner: str) -> list[dict[str, Any]]:
        """What `query-functions` tells `owner`: the functions it holds and where, adapter
        by adapter."""
        return [entry for t in self.trees.values()
                for entry in function_directory(t.adapter, t.plan, owner, self.slots,
                                                self.host.server.paths, self.cfg.handlers)]

    def record(self, address: int) -> PeRecord | None:
        """The PE at `address`, of whichever adapter (on the loop thread)."""
        return self._by_address.get(address)

    def tree_of(self, rec: PeRecord) -> AdapterTree:
        return self.trees[rec.adapter]

    # ------------------------------------------------------------------ events
    def add_listener(self, callback: PlatformListener) -> None:
        """Call `callback(event)` for every platform event from now on, on the model's loop
        thread (it must not block). A callback that raises is logged, never fatal."""
        self._listeners.add(callback)

    def remove_listener(self, callback: PlatformListener) -> None:
        self._listeners.remove(callback)

    def _model_event(self, ev: Event) -> None:
        rec = self.record(ev.pe) if ev.pe is not None else None
        self.timeline.record(Source.MODEL, ev.kind._value_, pe=rec.name if rec else None,
                             data={**ev.data, "function": ev.function} if ev.function
                             else ev.data, t=ev.time)  # (copied by the timeline)

    def _notice(self, n: Notice) -> None:  # on the model's loop thread
        self.timeline.record(Source.POLICY, n.kind, pe=n.pe,
                             data={**n.data, "to": list(n.owners)} if n.event else n.data)
        self.server.push(n)
        self._notice_listeners.call(n)
        if not len(self._listeners):
            return  # no console nor other listener: no platform events to build
        rec = self.record(n.address) if n.address is not None else None
        st = self.tree_of(rec).policy.state(rec) if rec is not None else None
        for ev in events_of(n, rec, st):
            self._listeners.call(ev)

    def _on_entry(self, e: Entry) -> None:
        if e.source == Source.MODEL or e.source == Source.POLICY:
            return  # (most entries) no adapter driver's step nor channel, no report
        for t in self.trees.values():
            t.watch.on_entry(e)
        if e.source == Source.DRIVER and len(self._listeners):  # (none: no step to build)
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
        for t in self.trees.values():  # one loop serves every adapter: all fail
            try:
                t.policy.emit(kind, t.policy.adapter_record,
                              {"error": self.model_failure,
                               "functions_closed": sorted(self.host.server.paths)})
                t.policy.fail_all(kind)
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
            for t in self.trees.values():
                taken += self._take_back(t, owner)
            for t in self.trees.values():
                t.watch.guest_gone(owner)
            return taken
        return self.call(act)

    def _take_back(self, tree: AdapterTree, owner: str) -> list[str]:
        taken = []
        for fn in tree.adapter.vfs:
            if tree.plan.owners.get(fn.name) != owner:
                continue
            rec = tree.policy.record(fn.pe.address)
            assert rec is not None
            self.calls.registrations[rec.address] = Registration(
                owner, rec.address, "(guest gone)", handlers=False)
            state = "left"
            if PeFlag.LOCKED_OUT in rec.flags:
                tree.removal.stages[rec.address] = Stage.REMOVED  # reset after the lift
                state = "reset after the lockout"
            elif PeFlag.PERMANENT not in rec.flags and \
                    int(rec.pe.status().code) in (0, 2, 4):
                status = int(rec.pe.reset(ResetKind.HOT))
                state = "reset" if status == 0 else f"reset refused ({status})"
            name = qualify(tree.name, fn.name)
            tree.policy.emit(Kind.OWNER_GONE, rec, {"owner": owner, "function": name,
                                                    "action": state})
            taken.append(name)
        return taken

    def guest_restarted(self, owner: str, ok: bool, **detail: Any) -> None:
        """The restart of `owner`'s guest asked by `restart_guest` is over: it is up again
        (`ok`; its adapter driver now has the deadline to recover the adapter), or it
        could not be restarted (the platform recovers the adapter). Blocking."""
        def act() -> None:
            for t in self.trees.values():
                t.watch.guest_restarted(owner, ok, detail)
        self.call(act)

    def _alive(self) -> None:
        if self.model_failure is not None:
            raise PlatformError(f"the device model is down ({self.model_failure})")

    # ------------------------------------------------------------------ the operator API
    def _by_name(self, pe: str) -> PeRecord | None:
        for t in self.trees.values():
            rec = t.policy.by_name(pe)
            if rec is not None:
                return rec
        return None

    def _rec(self, pe: str) -> PeRecord:
        rec = self._by_name(pe)
        if rec is None:
            names = ", ".join(r.name for r in self._by_address.values())
            raise PlatformError(f"no PE named {pe!r} (PEs: {names})")
        return rec

    def _present_rec(self, pe: str) -> PeRecord:
        """PE `pe`, if query-pes lists it; operator actions on any other are refused."""
        rec = self._rec(pe)
        if not self.tree_of(rec).policy.present(rec):
            names = ", ".join(p.pe for p in self._present())
            raise PlatformError(f"PE {pe!r} is not present (its VF is not enabled; "
                                f"PEs: {names})")
        return rec

    def _present(self) -> list[PeInfo]:
        """The adapter PE and the PEs of the VFs that exist (enabled) or have an owner,
        adapter by adapter."""
        out = []
        for t in self.trees.values():
            for rec in t.policy.records.values():
                if t.policy.present(rec):
                    st = t.policy.state(rec)
                    out.append(PeInfo(rec.name, rec.address, int(st.state), st.retry_ms,
                                      rec.owner, rec.freezes.total, tuple(st.flags.names())))
        return out

    async def query_pes(self) -> list[PeInfo]:
        """Every present PE, adapter by adapter, each adapter PE first."""
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
            return inject(k, InjectRequest(rec, self.tree_of(rec).adapter, function, address,
                                           mask, why))
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
                why = " (a fundamental reset is for an adapter PE; a VF PE takes a hot " \
                      "reset, an FLR)" if kind == "fundamental" and rec.pe.parent is not None \
                    and int(status) == -8 else ""
                raise PlatformError(f"reset of {pe} refused: status {int(status)} "
                                    f"({status.name}){why}")
            self.tree_of(rec).policy.clear_permanent(rec)
            return ResetDone(pe, kind, 0)
        return act

    async def reset_pe(self, pe: str, kind: str = "hot", *,
                       by: str = Source.SHIM) -> ResetDone:
        """Reset PE `pe` (`kind`: "hot" or "fundamental"); clears a permanent failure."""
        return await self.host.call_async(self._reset(pe, kind, by))

    async def error_log(self, pe: str) -> list[ErrorLogEntry]:
        """The PE's error log, oldest first."""
        return await self.host.call_async(lambda: list(self._rec(pe).pe.error_log()))

    def _trees(self, adapter: str | None) -> list[AdapterTree]:
        """Every adapter's tree (None), or the one of adapter `adapter` (its name, or its
        adapter PE's: "adapter" for the unnamed one)."""
        if adapter is None:
            return list(self.trees.values())
        for t in self.trees.values():
            if adapter in (t.name, t.adapter_pe):
                return [t]
        raise PlatformError(f"no adapter named {adapter!r} "
                            f"({', '.join(t.adapter_pe for t in self.trees.values())})")

    async def set_policy(self, max_freezes: int | None = None,
                         window_s: float | None = None, *,
                         adapter: str | None = None) -> PolicyView:
        """Change the freeze policy (None: keep that value) of `adapter`, or of every
        adapter (None); the policy now in force (the first adapter's of several)."""
        def act() -> PolicyView:
            changes: dict[str, Any] = {}
            if max_freezes is not None:
                changes["max_freezes"] = max_freezes
            if window_s is not None:
                changes["window_s"] = window_s
            trees = self._trees(adapter)
            try:  # checked before any is changed: all or none
                dataclasses.replace(trees[0].policy.config, **changes)
            except PolicyError as e:
                raise PlatformError(str(e)) from None
            views = [PolicyView.of(t.policy.set_config(**changes)) for t in trees]
            return views[0]
        return await self.host.call_async(act)

    async def query_policy(self, adapter: str | None = None) -> PolicyView:
        """The policy of `adapter` (None: the first adapter's)."""
        return await self.host.call_async(
            lambda: PolicyView.of(self._trees(adapter)[0].policy.config))

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

    def inject_adapter_error(self, detail: str | None = None, *, adapter: str = "") -> int:
        """`inject("adapter", ADAPTER_FATAL)` (of adapter `adapter`: "nic1"), blocking;
        the error log's seq."""
        return self._logged(pe_name(adapter, None), InjectKind.ADAPTER_FATAL, detail)

    def inject_vf_error(self, index: int, detail: str | None = None, *,
                        adapter: str = "") -> int:
        """`inject(f"vf{index}", VF_ERROR)` (of adapter `adapter`: "nic1.vf3"), blocking;
        the error log's seq."""
        if self._by_name(pe_name(adapter, index)) is None:
            raise PlatformError(f"no {qualify(adapter, f'vf{index}')}")
        return self._logged(pe_name(adapter, index), InjectKind.VF_ERROR, detail)

    def fail_resets(self, pe: str, times: int) -> None:
        """Fault hook (tests): the next `times` resets of PE `pe` ("adapter", "vf0",
        "nic1.vf3", ...) complete without bringing it back (`device_model.pe.Pe.
        fail_resets`)."""
        rec = self._by_name(pe)
        if rec is None or times < 0:
            raise PlatformError(f"cannot fail resets of {pe!r} {times} times")

        def arm() -> None:
            rec.pe.fail_resets = times
        self.call(arm)
