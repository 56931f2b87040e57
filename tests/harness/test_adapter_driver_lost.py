"""A dead or stuck adapter driver does not strand the VFs (issue 20; pe.driver_watch).

The real platform in harness mode (tests.support.platform_rig): the PF held by "svc",
whose adapter driver runs on its own platform channel, vf0 and vf1 held by "g1", vf2 by
"g2", each VF driver on its guest's channel. The adapter driver is lost by closing its
channel (a crash: the platform sees the channel close) or by keeping it open and silent
(stuck: the deadline), before, during and after an adapter error. Under each value of
`policy.on_adapter_driver_lost` where it applies, every VF recovers (or is permanently
failed under "fail") within the deadline plus one recovery; the measured times are
printed (`-s`), never asserted beyond a generous hang timeout.

"restart-guest" in harness mode has no guest to restart: it falls back to
"platform-recover" (the decision says so). With a restart hook (as the System gives in
VM mode) the "restart" here starts a new adapter driver on a new channel: its probe finds
the adapter PE frozen or left recovering and recovers it (guest_drivers.pf).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from device_model import ResetTiming
from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind, Source
from guest_drivers.driver import Driver
from guest_drivers.pf import PfDriver
from guest_drivers.recovery_types import RecoveryPolicy
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import OnDriverLost, PolicyConfig
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry
from tests.support.channels import TapChannel
from tests.support.platform_rig import POLL, PlatformRig, host_config
from tests.support.waiting import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g1", "vf2": "g2"}
VFS = ("vf0", "vf1", "vf2")
HANG_S = 60.0  # a hang, not a time limit


class Scene:
    """The platform, the VF drivers of g1 and g2, and svc's adapter driver."""

    def __init__(self, rig: PlatformRig, hold: tuple[str, ...]) -> None:
        self.rig = rig
        self.plat = rig.plat
        self.pf: PfDriver | None = None
        self.pf_services: Services | None = None
        self.pf_tap: TapChannel | None = None
        self.pf_channel: Channel | None = None
        # the first adapter driver's calls that wait to be let go (set)
        self.hold: dict[str, threading.Event] = {c: threading.Event() for c in hold}
        self.reached: dict[str, threading.Event] = {}
        self.drivers: list[Driver] = []
        self.start_pf()  # first: a VF driver's probe waits for its "PF reset done"
        for owner, vfs in (("g1", (0, 1)), ("g2", (2,))):
            services = rig.services(owner)
            for n in vfs:
                d = VfDriver(rig.function(f"vf{n}", owner), services, poll=POLL)
                self.drivers.append(d)
                d.start()

    def start_pf(self) -> PfDriver:
        """An adapter driver on a new channel of svc (calls in `hold` wait to be let go)."""
        ch = self.rig.channel("svc")
        self.pf_channel = ch
        tap = TapChannel(ch)

        def before(call: str, args: dict[str, Any]) -> None:
            if call in self.hold:
                self.reached.setdefault(call, threading.Event()).set()
                self.hold[call].wait(HANG_S)
        tap.before.append(before)
        self.pf_tap = tap
        self.pf_services = Services(tap)
        self.pf = PfDriver(self.rig.function("pf", "svc"), self.pf_services, poll=POLL,
                           policy=RecoveryPolicy(state_timeout_s=10))
        self.drivers.append(self.pf)
        self.pf.start()
        return self.pf

    def stop(self) -> None:
        for ev in self.hold.values():
            ev.set()
        for d in reversed(self.drivers):
            d.stop(timeout=10)

    def crash_pf(self) -> None:
        """The adapter driver dies: its channel closes (the platform sees it), then the
        thread goes, and its vfio-user connection (as with its guest's QEMU)."""
        assert self.pf is not None and self.pf_channel is not None
        self.pf_channel.close()
        for ev in self.hold.values():
            ev.set()
        self.pf.stop(timeout=10)
        self.pf.fn.close()

    def entries(self, kind: str, since: float = 0.0, source: str = Source.POLICY
                ) -> list[Entry]:
        return [e for e in self.plat.timeline.snapshot()
                if e.source == source and e.kind == kind and e.t >= since]

    def inject(self) -> float:
        t = time.monotonic()
        self.plat.inject_adapter_error("test: adapter error")
        return t

    def vfs_recovered(self, since: float) -> float:
        """Every VF driver reported recovered after `since`: when the last one did."""
        def done() -> bool:
            return {e.pe for e in self.entries(Kind.RECOVERED, since, Source.DRIVER)} >= \
                set(VFS)
        assert wait_for(done, HANG_S), self.story(since)
        last: float = max(e.t for e in self.entries(Kind.RECOVERED, since, Source.DRIVER)
                          if e.pe in VFS)
        states = self.plat.pe_states()
        assert all(states[p]["state"] == 0 and "locked-out" not in states[p]["flags"]
                   for p in ("adapter", *VFS)), states
        # the VF settings the adapter driver owns were put back (by whoever recovered it)
        adapter = self.plat.adapter
        assert self.rig.model(lambda: adapter.vf(1).admin_vlan()) == 100
        assert self.rig.model(lambda: adapter.enabled_vfs()) == 3
        return last

    def story(self, since: float) -> str:
        return "\n".join(f"{e.t - since:8.3f} {e.source:7} {e.kind} {e.pe or ''} "
                         f"{e.owner or ''} {e.data}" for e in self.plat.timeline.snapshot()
                         if e.t >= since and e.kind not in ("mailbox",))[-6000:]


@contextmanager
def scene(tmp_path: Path, action: OnDriverLost, *, deadline_ms: int = 10_000,
          hold: tuple[str, ...] = (), restart: Callable[[Scene, str], None] | None = None,
          timing: ResetTiming = ResetTiming.FAST) -> Iterator[Scene]:
    cfg = host_config(nvfs=3, owners=OWNERS, timing=timing, policy=PolicyConfig(
        on_adapter_driver_lost=action, adapter_driver_deadline_ms=deadline_ms))
    holder: list[Scene] = []

    def restart_guest(owner: str) -> None:  # on the model's thread: never block it
        assert restart is not None
        threading.Thread(target=restart, args=(holder[0], owner), daemon=True).start()

    plat = Platform(cfg, tmp_path, restart_guest=restart_guest if restart else None)
    plat.start()
    rig = PlatformRig(plat)
    try:
        s = Scene(rig, hold)
        holder.append(s)
        yield s
    finally:
        if holder:
            holder[0].stop()
        rig.close()
        plat.stop()
        rig.close_channels()


def restart_pf(s: Scene, owner: str) -> None:
    """The "guest restart" of harness mode: the old driver gone for good, a new one
    started on a new channel; the platform is told when it is up."""
    if s.pf is not None:
        s.crash_pf()
    s.hold.clear()
    try:
        s.start_pf()
    except Exception as e:
        s.plat.guest_restarted(owner, False, error=repr(e))
        raise
    s.plat.guest_restarted(owner, True)


def lost(s: Scene, since: float = 0.0) -> list[str]:
    return [e.data["why"] for e in s.entries(Kind.ADAPTER_DRIVER_LOST, since)]


RECOVERING = [OnDriverLost.PLATFORM_RECOVER, OnDriverLost.RESTART_GUEST]


@pytest.mark.parametrize("action", RECOVERING)
def test_pf_driver_dead_before_the_adapter_error(tmp_path: Path, action: OnDriverLost) -> None:
    with scene(tmp_path, action) as s:
        s.crash_pf()
        assert wait_for(lambda: lost(s) == ["channel-closed"], HANG_S), s.story(0)
        t0 = s.inject()
        last = s.vfs_recovered(t0)
        decided = s.entries(Kind.PLATFORM_RECOVERY, t0)
        assert len(decided) == 1 and decided[0].data["why"] == "channel-closed"
        if action is OnDriverLost.RESTART_GUEST:
            assert decided[0].data["fallback_from"] == "restart-guest"
            assert decided[0].data["because"] == "no guest to restart"
        assert len(s.entries(Kind.PLATFORM_RECOVERED, t0)) == 1
        print(f"\n{action} before: every VF recovered {1000 * (last - t0):.1f} ms "
              "after the injection")


@pytest.mark.parametrize("point", [Call.SET_SLOT_RESET, Call.OPEN_SRIOV_ALLOW_UNFREEZE])
@pytest.mark.parametrize("action", RECOVERING)
def test_pf_driver_dies_during_the_recovery(tmp_path: Path, action: OnDriverLost,
                                            point: Call) -> None:
    """Killed at its reset (the adapter PE frozen) or at its allow-unfreeze (the adapter
    reset, the VFs locked out): the platform finishes the recovery."""
    with scene(tmp_path, action, hold=(point,)) as s:
        t0 = s.inject()
        assert wait_for(lambda: point in s.reached, HANG_S), s.story(t0)
        t_crash = time.monotonic()
        s.crash_pf()
        last = s.vfs_recovered(t0)
        assert lost(s, t0) == ["channel-closed"]
        assert len(s.entries(Kind.PLATFORM_RECOVERED, t0)) == 1
        print(f"\n{action} during ({point}): every VF recovered "
              f"{1000 * (last - t_crash):.1f} ms after the crash")


@pytest.mark.parametrize("action", RECOVERING)
def test_pf_driver_dies_after_the_recovery(tmp_path: Path, action: OnDriverLost) -> None:
    """Killed once it lifted the lockout: the VFs finish; the next adapter error is
    recovered by the platform at once (the driver is known lost)."""
    with scene(tmp_path, action) as s:
        t0 = s.inject()
        s.vfs_recovered(t0)
        s.crash_pf()
        assert wait_for(lambda: lost(s, t0) == ["channel-closed"], HANG_S), s.story(t0)
        assert not s.entries(Kind.PLATFORM_RECOVERY, t0)  # nothing to recover yet
        t1 = s.inject()
        last = s.vfs_recovered(t1)
        assert len(s.entries(Kind.PLATFORM_RECOVERED, t1)) == 1
        print(f"\n{action} after: the next error's VFs recovered "
              f"{1000 * (last - t1):.1f} ms after it")


@pytest.mark.parametrize("when", ["before", "during"])
def test_fail_makes_the_adapter_and_every_vf_permanently_failed(tmp_path: Path,
                                                                when: str) -> None:
    hold = (Call.SET_SLOT_RESET,) if when == "during" else ()
    with scene(tmp_path, OnDriverLost.FAIL, hold=hold) as s:
        if when == "before":
            s.crash_pf()
            assert wait_for(lambda: lost(s) == ["channel-closed"], HANG_S)
        t0 = s.inject()
        if when == "during":
            assert wait_for(lambda: Call.SET_SLOT_RESET in s.reached, HANG_S)
            s.crash_pf()

        def told() -> bool:
            return {e.pe for e in s.entries(Kind.PERMANENT_FAILURE, t0, Source.DRIVER)} >= \
                set(VFS)
        assert wait_for(told, HANG_S), s.story(t0)
        assert [e.data["why"] for e in s.entries(Kind.ADAPTER_FAILED, t0)] == \
            ["channel-closed"]
        pushed = s.entries(Kind.PERMANENT_FAILURE, t0)
        assert {e.pe for e in pushed} == {"adapter", *VFS}
        assert {e.data["cause"] for e in pushed} == {"adapter-driver-lost"}
        states = s.plat.pe_states()
        assert all("permanent" in states[p]["flags"] for p in ("adapter", *VFS)), states


@pytest.mark.parametrize("action", RECOVERING)
def test_stuck_pf_driver_the_deadline_fires(tmp_path: Path, action: OnDriverLost) -> None:
    """The adapter driver's channel stays open, the driver silent at its reset: after the
    deadline (0.5 s here) the platform recovers the adapter."""
    deadline_ms = 500
    with scene(tmp_path, action, deadline_ms=deadline_ms, hold=(Call.SET_SLOT_RESET,)) as s:
        t0 = s.inject()
        last = s.vfs_recovered(t0)
        found = s.entries(Kind.ADAPTER_DRIVER_LOST, t0)
        assert [e.data["why"] for e in found] == ["deadline"], s.story(t0)
        assert found[0].data["silent_ms"] >= deadline_ms
        assert len(s.entries(Kind.PLATFORM_RECOVERED, t0)) == 1
        print(f"\n{action} stuck: lost {1000 * (found[0].t - t0):.1f} ms after the "
              f"injection, every VF recovered at {1000 * (last - t0):.1f} ms")
        s.hold[Call.SET_SLOT_RESET].set()


@pytest.mark.parametrize("point", ["before", Call.SET_SLOT_RESET,
                                   Call.OPEN_SRIOV_ALLOW_UNFREEZE, "stuck"])
def test_restart_guest_the_new_driver_recovers_the_adapter_at_probe(
        tmp_path: Path, point: str) -> None:
    """With a restart hook: the new adapter driver's probe finds the adapter PE frozen
    (or left recovering, the VFs locked out) and recovers it; no platform recovery."""
    hold = () if point == "before" else (
        Call.SET_SLOT_RESET if point == "stuck" else point,)
    with scene(tmp_path, OnDriverLost.RESTART_GUEST, restart=restart_pf, hold=hold,
               timing=ResetTiming.SPEC, deadline_ms=4000) as s:
        first = s.pf
        if point == "before":
            s.crash_pf()
            assert wait_for(lambda: bool(s.entries(Kind.GUEST_RESTART)), HANG_S)
            assert wait_for(lambda: s.pf is not first and s.pf is not None
                            and s.pf.state.value == "up", HANG_S)
        t0 = s.inject()
        if point in (Call.SET_SLOT_RESET, Call.OPEN_SRIOV_ALLOW_UNFREEZE):
            assert wait_for(lambda: point in s.reached, HANG_S), s.story(t0)
            s.crash_pf()
        last = s.vfs_recovered(t0)
        assert not s.entries(Kind.PLATFORM_RECOVERY, t0), s.story(t0)
        restarts = s.entries(Kind.GUEST_RESTART, 0 if point == "before" else t0)
        assert len(restarts) == 1, s.story(t0)
        assert s.pf is not first
        if point != "before":
            found = s.entries(Kind.FOUND_FROZEN, t0, Source.DRIVER)
            assert [e.pe for e in found] == ["adapter"], s.story(t0)
            assert s.entries(Kind.ADAPTER_RECOVERED, t0, Source.DRIVER)[-1].data["at_probe"]
        allowed = s.entries(Call.OPEN_SRIOV_ALLOW_UNFREEZE, t0, Source.CALL)
        assert allowed and allowed[-1].data["status"] == 0
        print(f"\nrestart-guest {point}: every VF recovered {1000 * (last - t0):.1f} ms "
              "after the injection (spec timing)")
