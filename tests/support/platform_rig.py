"""The real platform for driver tests, in harness mode: `hypervisor_shim.platform.Platform`
(device model on its loop thread, vfio-user server, PE policy with the lockout, the
platform-call server, the timeline), with the drivers on the host reaching their
functions over vfio-user and the platform over their owner's channel.

    with running(host_config(nvfs=3)) as rig:
        pf = rig.pf_driver()                     # or rig.agent().start()
        rig.plat.inject_vf_error(0)
        rig.steps("vf0")                         # the driver's reports, from the timeline
        rig.model(lambda: rig.plat.adapter.vf(0).bar0.stored("MTU"))

What the tests read (the drivers' reports, the policy's decisions, the calls and their
statuses) is the platform's own timeline: nothing here keeps books of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from device_model import ResetTiming
from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from eeh_abi.vf_settings import VfSettings
from guest_drivers.agent import Agent
from guest_drivers.pf import AdapterSettings, PfDriver
from guest_drivers.platform.base import FunctionInfo
from guest_drivers.platform.harness import HarnessBackend, HarnessFunction
from guest_drivers.poll import PollConfig
from guest_drivers.recovery_types import RecoveryPolicy
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.pe.names import split
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry
from tests.support.channels import Before, TapChannel
from tests.support.waiting import wait_for

T = TypeVar("T")
POLL = PollConfig(max_sleep_s=0.005, health_s=0.05)
UPLINK_MAC = bytes.fromhex("02aa00000001")
ETYPE = b"\x88\xb5"
VF_SETTINGS = {1: VfSettings("02:ee:00:00:01:01", 100, 1500, True),
               2: VfSettings("02:ee:00:00:01:02", None, 9000, False)}


def frame(src: bytes, dst: bytes = UPLINK_MAC, tag: str = "x") -> bytes:
    """A test frame (ether type 0x88b5) carrying `tag` (tests.support.frames.payload)."""
    return dst + src + ETYPE + tag.encode().ljust(46, b".")


def host_config(nvfs: int = 4, enabled: int | None = None, *,
                owners: Mapping[str, str] | None = None,
                vf_settings: Mapping[int, VfSettings] | None = None,
                policy: PolicyConfig | None = None, timing: ResetTiming | None = None,
                **kw: Any) -> PlatformConfig:
    """A platform config for harness mode: by default every function held by HOST, VF
    settings for vf1 (VLAN 100, anti-spoof) and vf2 (MTU 9000) where they exist."""
    enabled = nvfs if enabled is None else enabled
    if owners is None:  # the directory lists what a partition owns, enabled or not
        owners = {"pf": HOST, **{f"vf{n}": HOST for n in range(enabled)}}
    if vf_settings is None:
        vf_settings = {k: v for k, v in VF_SETTINGS.items() if k < enabled}
    extra: dict[str, Any] = dict(kw)
    if policy is not None:
        extra["policy"] = policy
    if timing is not None:
        extra["timing"] = timing
    return PlatformConfig(total_vfs=nvfs, enabled_vfs=enabled, owners=dict(owners),
                          vf_settings=dict(vf_settings), **extra)


def hold_allow_unfreeze(plat: Platform, vfs: Iterable[str], timeout: float = 20.0) -> Before:
    """A `before` hook for the adapter driver's channel (TapChannel): its
    open-sriov-allow-unfreeze goes out only once every VF PE in `vfs` has been refused an
    unfreeze (the policy's unfreeze-refused) since the adapter PE last froze. With the
    drivers on the host the adapter driver may otherwise recover before a VF driver has
    even tried, and the lockout has nothing to show. After `timeout` it lets the call go
    (the test's own checks then say which VF never met the lockout)."""
    names = set(vfs)

    def met(adapter: str, adapter_pe: str) -> bool:
        """(of several adapters, the VFs in `vfs` of the adapter that calls)"""
        tl = plat.timeline.snapshot()
        frozen = [e.t for e in tl if (e.source, e.kind, e.pe) == ("policy", "pe-frozen",
                                                                   adapter_pe)]
        since = frozen[-1] if frozen else 0.0
        return {n for n in names if split(n)[0] == adapter} <= {
            e.pe for e in tl if e.source == "policy" and e.kind == "unfreeze-refused"
            and e.t >= since}

    def before(call: str, args: dict[str, Any]) -> None:
        if call == Call.OPEN_SRIOV_ALLOW_UNFREEZE:
            rec = plat.call(partial(plat.record, args.get("pe", -1)))
            adapter, pe = (rec.adapter, rec.name) if rec is not None else ("", "adapter")
            wait_for(partial(met, adapter, pe), timeout)
    return before


def holding_backend(plat: Platform, vfs: Iterable[str], owner: str = HOST) -> HarnessBackend:
    """A harness backend for an agent whose adapter driver waits with allow-unfreeze
    until every VF PE in `vfs` met the lockout (hold_allow_unfreeze)."""
    backend = HarnessBackend(str(plat.hcall_path(owner)))
    tap = TapChannel(backend.channel)
    tap.before.append(hold_allow_unfreeze(plat, vfs))
    backend.channel = tap  # type: ignore[assignment]
    return backend


class PlatformRig:
    """A started Platform and what the tests built on it (stopped in reverse order)."""

    def __init__(self, plat: Platform) -> None:
        self.plat = plat
        self._cleanup: list[Callable[[], object]] = []
        # channels are closed after the platform stopped: their reader thread then sees
        # the end of the stream at once (a close before waits out its 0.5 s poll)
        self._after_stop: list[Callable[[], None]] = []

    def close(self) -> None:
        """Stop the drivers and agents (the platform is still up)."""
        while self._cleanup:
            fn = self._cleanup.pop()
            with contextlib.suppress(Exception):
                fn()

    def close_channels(self) -> None:
        """Close the channels (after the platform stopped)."""
        while self._after_stop:
            fn = self._after_stop.pop()
            with contextlib.suppress(Exception):
                fn()

    # ---- the platform's side
    def model(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the device model's loop thread (the only one that may touch it)."""
        return self.plat.call(fn)

    def uplink(self) -> list[bytes]:
        """The frames the adapter sent to its uplink since the last look."""
        return self.plat.call(self.plat.host.uplink.take)

    def push(self, owner: str, event: str, pe: int | None, **data: Any) -> None:
        """Push an event to `owner`'s channel, as the platform's benches do."""
        self.plat.call(lambda: self.plat.server.push_to(owner, event, pe, dict(data)))

    def address(self, pe: str) -> int:
        rec = self.plat.policy.by_name(pe)
        assert rec is not None, pe
        return rec.address

    # ---- the timeline
    def entries(self) -> list[Entry]:
        return self.plat.timeline.snapshot()

    def steps(self, pe: str | None = None) -> list[str]:
        """The drivers' reports (step names) in the order the platform took them."""
        return [e.kind for e in self.entries()
                if e.source == "driver" and (pe is None or e.pe == pe)]

    def details(self, step: str, pe: str | None = None) -> list[dict[str, Any]]:
        return [dict(e.data) for e in self.entries() if e.source == "driver"
                and e.kind == step and (pe is None or e.pe == pe)]

    def reports(self) -> list[tuple[str, str | None]]:
        return [(e.kind, e.pe) for e in self.entries() if e.source == "driver"]

    def policy(self, kind: str, pe: str | None = None) -> list[Entry]:
        return [e for e in self.entries() if e.source == "policy" and e.kind == kind
                and (pe is None or e.pe == pe)]

    def calls(self, name: str, pe: str | None = None) -> list[Entry]:
        """Platform calls named `name` (each with data `args` and `status`), in order."""
        return [e for e in self.entries() if e.source == "call" and e.kind == name
                and (pe is None or e.pe == pe)]

    # ---- the drivers' side
    def channel(self, owner: str = HOST) -> Channel:
        ch = Channel.unix(str(self.plat.hcall_path(owner)), timeout=30.0)
        self._after_stop.append(ch.close)
        # one round trip: the platform has taken the connection, pushed events reach it
        assert ch.call(Call.QUERY_FUNCTIONS).status == 0
        return ch

    def services(self, owner: str = HOST) -> Services:
        return Services(self.channel(owner))

    def infos(self, owner: str = HOST) -> dict[str, FunctionInfo]:
        entries = self.plat.call(lambda: self.plat.directory(owner))
        return {str(e["name"]): FunctionInfo.from_entry(e) for e in entries}

    def function(self, name: str, owner: str = HOST) -> HarnessFunction:
        fn = HarnessFunction(self.infos(owner)[name])
        self._cleanup.append(fn.close)
        return fn

    def pf_driver(self, services: Services, *, settings: AdapterSettings | None = None,
                  poll: PollConfig = POLL) -> PfDriver:
        kw: dict[str, Any] = {} if settings is None else {"settings": settings}
        d = PfDriver(self.function("pf"), services, poll=poll,
                     policy=RecoveryPolicy(state_timeout_s=10), **kw)
        self._cleanup.append(d.stop)
        d.start()
        return d

    def vf_driver(self, services: Services, n: int, *, poll: PollConfig = POLL,
                  start: bool = True, **kw: Any) -> VfDriver:
        d = VfDriver(self.function(f"vf{n}"), services, poll=poll, **kw)
        self._cleanup.append(d.stop)
        if start:
            d.start()
        return d

    def backend(self, owner: str = HOST) -> HarnessBackend:
        b = HarnessBackend(str(self.plat.hcall_path(owner)))
        self._after_stop.append(b.close)
        assert b.channel.call(Call.QUERY_FUNCTIONS).status == 0  # the connection is served
        return b

    def agent(self, owner: str = HOST, *, poll: PollConfig = POLL,
              tap: Callable[[TapChannel], None] | None = None, **kw: Any) -> Agent:
        """An agent on `owner`'s channel (stopped with the rig). `tap`: set up hooks on
        the agent's channel (tests.support.channels.TapChannel) before it starts."""
        backend = self.backend(owner)
        if tap is not None:
            t = TapChannel(backend.channel)
            tap(t)
            backend.channel = t  # type: ignore[assignment]
        agent = Agent(backend, poll=poll, **kw)
        self._cleanup.append(agent.stop)
        return agent


@contextlib.contextmanager
def running(cfg: PlatformConfig | None = None, run_dir: Path | None = None
            ) -> Iterator[PlatformRig]:
    """The real platform, started; everything the rig built is stopped before it."""
    rig: PlatformRig | None = None
    try:
        with Platform(cfg or host_config(), run_dir) as plat:
            rig = PlatformRig(plat)
            try:
                yield rig
            finally:
                rig.close()
    finally:
        if rig is not None:
            rig.close_channels()


@contextlib.contextmanager
def svc_and_one_guest(run_dir: Path, nvfs: int) -> Iterator[Platform]:
    """The real platform with `nvfs` VFs, all enabled: the PF svc's, every VF g1's (the
    raw-channel tests' set-up: one owner with every VF, another with the PF)."""
    owners = {"pf": "svc", **{f"vf{n}": "g1" for n in range(nvfs)}}
    with Platform(PlatformConfig(total_vfs=nvfs, enabled_vfs=nvfs, owners=owners),
                  run_dir) as plat:
        yield plat
