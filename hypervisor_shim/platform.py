"""The platform for one adapter: the device model, its PE policy and the guests' channels.

    with Platform(topo.platform_config(), run_dir) as plat:   # eeh_sriov.topology
        plat.hcall_path("g1")          # the unix socket of g1's platform channel
        plat.inject_adapter_error()    # what the console's eeh-inject does
        plat.timeline.entries          # everything, in order

Everything that touches the model or the policy runs on the device model's loop thread
(`AdapterHost`): the vfio-user server, the policy's reaction to model events, the
platform calls. `call(fn)` runs `fn` there from any thread.

If that thread dies (something run on it raised what asyncio does not catch), the
platform fails cleanly rather than bring the model back (QEMU never reconnects a
vfio-user device, and the model's state is suspect): every function's socket is closed at
once (guests read all-ones without waiting), every PE becomes permanently failed
(`permanent-failure` pushed to each owner, state 5 with hint 0, PE calls -1), the
timeline and the console say `device-model-died`, and the loop goes on serving the
platform channels and the console (which refuse injections and resets from then on).
`model_failure` says why; `stop()` works as usual. (README: "When the device model dies".)
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from device_model import Event, ResetKind, ResetTiming
from device_model.adapter_config import DEFAULT_TOTAL_VFS
from eeh_abi.vf_settings import VfSettings
from hypervisor_shim.adapter_host import DEFAULT_TAP_NAME, AdapterHost, AdapterHostConfig
from hypervisor_shim.errors import ShimError
from hypervisor_shim.hcall.calls import PlatformCalls, Registration
from hypervisor_shim.hcall.server import HcallServer
from hypervisor_shim.pe import HOST, Notice, PeFlag, PePolicy, PeRecord, PolicyConfig
from hypervisor_shim.pe.removal import NoHandlerRecovery, Stage
from hypervisor_shim.timeline import Timeline
from qemu_launcher.sockdir import SocketDir

T = TypeVar("T")
log = logging.getLogger(__name__)


class PlatformError(ShimError):
    """A platform request that cannot be carried out (unknown PE or owner, bad kind)."""


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

    @property
    def owner_names(self) -> list[str]:
        return sorted(set(self.owners.values()))


class Platform:
    def __init__(self, cfg: PlatformConfig, run_dir: Path | None = None) -> None:
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
        self.slots: dict[str, int] = {}  # function -> the guest's PCIe slot (VM mode)
        self.notice_listeners: list[Callable[[Notice], None]] = []
        self.policy = PePolicy(self.adapter, cfg.owners, config=cfg.policy,
                               clock=self.adapter.clock.now, notify=self._notice,
                               enabled_vfs=cfg.enabled_vfs)
        self.calls = PlatformCalls(self.policy, self.timeline, self.directory)
        self.removal = NoHandlerRecovery(
            self.policy, handlers_of=self._handlers_of,
            function_name=lambda rec: self.adapter.function_of(rec.pe).name)
        self.notice_listeners.append(self.removal)
        self.server = HcallServer(self.calls, self.timeline)
        self.adapter.events.add_listener(self._model_event)
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
        try:
            for owner in self.cfg.owner_names:
                self.add_channel(owner)
        except BaseException:
            self.stop()
            raise
        self.timeline.record("shim", "platform-started",
                             data={"owners": dict(self.cfg.owners),
                                   "enabled_vfs": self.cfg.enabled_vfs,
                                   "timing": dataclasses.asdict(self.cfg.timing),
                                   "uplink": self.uplink_name})

    def stop(self) -> None:
        if self.host.server.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.server.close(), self.host.server.loop)
            try:
                fut.result(timeout=10)
            except Exception:
                pass
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
        """Run `fn` on the device model's loop thread and return its result."""
        return self.host.call(fn)

    def _handlers_of(self, pe_address: int) -> bool | None:
        reg = self.calls.registrations.get(pe_address)
        return None if reg is None else reg.handlers

    # ------------------------------------------------------------------ directory
    def directory(self, owner: str) -> list[dict[str, Any]]:
        """What `query-functions` tells `owner`: the functions it holds and where."""
        out = []
        for fn in self.adapter.functions():
            if self.cfg.owners.get(fn.name) != owner:
                continue
            vf = getattr(fn, "index", None)
            entry: dict[str, Any] = {
                "name": fn.name, "kind": "vf" if vf is not None else "pf", "vf": vf,
                "addr": fn.pe.address, "pe": fn.pe.address,
                "slot": self.slots.get(fn.name),
                "socket": str(self.host.server.paths[fn.name]) if owner == HOST
                or self.slots.get(fn.name) is None else None,
                "handlers": self.cfg.handlers.get(owner, True),
            }
            if vf is not None and vf in self.cfg.vf_settings:
                entry["config"] = dataclasses.asdict(self.cfg.vf_settings[vf])
            if vf is None:
                entry["adapter"] = {
                    "num_vfs": self.cfg.enabled_vfs,
                    "vf_pes": [pe.address for pe in self.adapter.pes.vfs[:self.cfg.enabled_vfs]],
                    "vfs": [dict(vf=n, **dataclasses.asdict(s))
                            for n, s in sorted(self.cfg.vf_settings.items())]}
            out.append(entry)
        return out

    # ------------------------------------------------------------------ events
    def _model_event(self, ev: Event) -> None:
        rec = self.policy.record(ev.pe) if ev.pe is not None else None
        self.timeline.record("model", ev.kind.value, pe=rec.name if rec else None,
                             data={k: v for k, v in ev.data.items()}
                             | ({"function": ev.function} if ev.function else {}), t=ev.time)

    def _notice(self, n: Notice) -> None:
        self.timeline.record("policy", n.kind, pe=n.pe,
                             data=dict(n.data) | ({"to": list(n.owners)} if n.event else {}))
        self.server.push(n)
        for listener in list(self.notice_listeners):
            try:
                listener(n)
            except Exception:
                pass

    # ------------------------------------------------------------------ the model dies
    def _model_died(self, exc: BaseException) -> bool:
        """On the model's thread, its loop stopped, every function's socket already
        closed: fail cleanly and keep the loop for the channels and the console."""
        self.model_failure = f"{type(exc).__name__}: {exc}"
        try:
            self.policy.emit("device-model-died", self.policy.adapter_record,
                             {"error": self.model_failure,
                              "functions_closed": sorted(self.host.server.paths)})
            self.policy.fail_all("device-model-died")
        except Exception:  # the policy's own state may be what broke: still go on
            log.exception("marking the PEs failed after the device model died")
        return True

    # ------------------------------------------------------------------ a guest is gone
    def guest_gone(self, owner: str) -> list[str]:
        """`owner`'s QEMU died: take back the VFs it held. Each is reset now (an FLR: no
        ring or DMA state of the dead guest survives) if its PE can be, and from then on
        is recovered by the platform like a function whose driver has no error handlers
        (docs/platform-calls.md). The PF is left alone: resetting the adapter would hit
        every other guest. Returns the VFs taken back."""
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
                self.policy.emit("owner-gone", rec, {"owner": owner, "function": fn.name,
                                                     "action": state})
                taken.append(fn.name)
            return taken
        return self.call(act)

    def _alive(self) -> None:
        if self.model_failure is not None:
            raise PlatformError(f"the device model is down ({self.model_failure})")

    # ------------------------------------------------------------------ operator actions
    def inject_adapter_error(self, detail: str = "operator: adapter fatal error") -> int:
        self._alive()
        return self.call(lambda: self.adapter.inject_adapter_fatal(detail).seq)

    def inject_vf_error(self, index: int, detail: str = "operator: VF error") -> int:
        self._alive()
        if not 0 <= index < self.cfg.total_vfs:
            raise PlatformError(f"no vf{index}")
        return self.call(lambda: self.adapter.inject_vf_error(index, detail).seq)

    def fail_resets(self, pe: str, times: int) -> None:
        """Fault hook (tests): the next `times` resets of PE `pe` ("adapter", "vf0", ...)
        complete without bringing it back (`device_model.pe.Pe.fail_resets`)."""
        rec = self.policy.by_name(pe)
        if rec is None or times < 0:
            raise PlatformError(f"cannot fail resets of {pe!r} {times} times")

        def arm() -> None:
            rec.pe.fail_resets = times
        self.call(arm)

    def present_records(self) -> list[PeRecord]:
        """The adapter PE and the PEs of the VFs that exist (enabled) or have an owner."""
        out = []
        for rec in self.policy.records.values():
            vf = getattr(self.adapter.function_of(rec.pe), "index", None)
            if vf is None or vf < self.cfg.enabled_vfs or rec.owner is not None:
                out.append(rec)
        return out

    def pe_states(self) -> dict[str, dict[str, Any]]:
        def read() -> dict[str, dict[str, Any]]:
            out = {}
            for rec in self.present_records():
                st = self.policy.state(rec)
                out[rec.name] = {"state": int(st.state), "retry_ms": st.retry_ms,
                                 "flags": st.flags.names(), "owner": rec.owner,
                                 "freeze_count": rec.freezes.total}
            return out
        return self.call(read)
