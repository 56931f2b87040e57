"""Guests killed mid-recovery in real guests (issue 20): the service guest's QEMU at three
points of an adapter recovery, then a VF guest's during the lockout.

Default topology (svc holds the PF, g1 vf0, g2 vf1 and vf2; "spec" reset timing), one
System, host traffic to every VF. Three adapter errors, each with svc's QEMU SIGKILLed
(by PID, from a timeline listener, on the platform's thread, so the point is exact):
  1. at the adapter's pe-frozen, before its driver has even heard of it;
  2. during the lockout: once a VF's unfreeze was refused after the adapter driver
     started the adapter's reset;
  3. at the adapter driver's allow-unfreeze: the adapter recovered, no VF resumed yet.
Each time the platform restarts svc (policy.on_adapter_driver_lost = "restart-guest", the
default); in 1 and 2 its new adapter driver finds the adapter PE frozen or left
recovering at probe and recovers it; every VF passes traffic again. Then an adapter error
with g1's QEMU killed at vf0's first refused unfreeze: vf0 is taken back (owner-gone) and
reset after the lockout, g2's VFs finish their recovery in the claim's order. The times
are printed (-s), not asserted (hang timeouts only).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import System
from eeh_sriov.topology import DEFAULT_TOPOLOGY, Topology, load_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.timeline import Entry
from qemu_launcher.assets import GuestAssets

VFS = ("vf0", "vf1", "vf2")
BOOT_S = 300.0  # hang timeouts (a TCG boot on a loaded machine)


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


class Killer:
    """Kill guest `guest`'s QEMU at the first timeline entry `when` accepts (on the thread
    that records it: nothing runs between the entry and the kill)."""

    def __init__(self, system: System, guest: str,
                 when: Callable[[Entry, list[Entry]], bool]) -> None:
        self.system, self.guest, self.when = system, guest, when
        self.seen: list[Entry] = []
        self.at: Entry | None = None
        self.t = 0.0
        self._lock = threading.Lock()

    def __call__(self, e: Entry) -> None:
        with self._lock:
            if self.at is not None:
                return
            self.seen.append(e)
            if not self.when(e, self.seen):
                return
            self.at = e
        vm = self.system.machines[self.guest]
        assert vm.proc is not None
        self.t = time.monotonic()
        os.killpg(vm.proc.pid, signal.SIGKILL)


def is_(e: Entry, source: str, kind: str, pe: str | None = None) -> bool:
    return e.source == source and e.kind == kind and (pe is None or e.pe == pe)


def at_freeze(e: Entry, seen: list[Entry]) -> bool:
    return is_(e, Source.POLICY, Kind.PE_FROZEN, "adapter")


def in_lockout(e: Entry, seen: list[Entry]) -> bool:
    reset = any(is_(x, Source.POLICY, Kind.RESET_HOT, "adapter") for x in seen)
    return reset and is_(e, Source.POLICY, Kind.UNFREEZE_REFUSED) and e.pe in VFS


def at_allow_unfreeze(e: Entry, seen: list[Entry]) -> bool:
    return is_(e, Source.POLICY, Kind.ALLOW_UNFREEZE, "adapter")


@pytest.mark.timeout(1800)  # four recoveries, three of them with a TCG boot
def test_guests_killed_mid_recovery(assets: GuestAssets, accel: str,
                                    run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    topo = load_topology(DEFAULT_TOPOLOGY)
    asyncio.run(scenario(topo, assets, accel, d))


async def scenario(topo: Topology, assets: GuestAssets, accel: str, d: Path) -> None:
    system = System(topo, d, assets, accel=accel,
                    platform_config=topo.platform_config(host_cpus=(), uplink="queue"))
    async with system:
        plat = system.platform
        tl = plat.timeline

        def after(t: float, source: str, kind: str) -> list[Entry]:
            return [e for e in tl.snapshot() if e.t > t and is_(e, source, kind)]

        await until(lambda: {"adapter", *VFS} <= {e.pe for e in after(0, Source.DRIVER,
                                                                      Kind.PROBE)},
                    BOOT_S, "drivers ready")
        targets = {}
        for fn in VFS:
            c = topo.vf_config(int(fn[2:]))
            assert c.mac is not None
            targets[fn] = Target(c.mac, c.vlan)
        with UplinkTraffic(plat, targets, rate_hz=20) as traffic:
            for name in VFS:
                assert await asyncio.to_thread(traffic.wait_echo_after, name, 0.0, 60), name

            async def recovery(guest: str, when: Callable[[Entry, list[Entry]], bool],
                               vfs: tuple[str, ...]) -> tuple[float, Killer]:
                killer = Killer(system, guest, when)
                tl.add_listener(killer)
                t0 = time.monotonic()
                try:
                    await plat.inject("adapter", "adapter-fatal")
                    await until(lambda: killer.at is not None, 60, f"the kill of {guest}")
                    await until(lambda: set(vfs) <= {e.pe for e in after(
                        t0, Source.DRIVER, Kind.RECOVERED)}, BOOT_S, "every VF recovered")
                finally:
                    tl.remove_listener(killer)
                recovered = {e.pe: e.t for e in after(t0, Source.DRIVER, Kind.RECOVERED)}
                for name in vfs:
                    t = await asyncio.to_thread(traffic.wait_echo_after, name,
                                                recovered[name], 60)
                    assert t is not None, (name, d)
                    tl.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=name, t=t)
                last = max(recovered[n] for n in vfs)
                print(f"\n{guest} killed at {killer.at.kind if killer.at else None} "
                      f"{1000 * (killer.t - t0):.0f} ms after the injection; every VF "
                      f"recovered {1000 * (last - killer.t):.0f} ms after the kill")
                return t0, killer

            for n, point in enumerate((at_freeze, in_lockout, at_allow_unfreeze), 1):
                t0, killer = await recovery("svc", point, VFS)
                # the platform restarted svc, whose adapter driver is up again
                def back(n: int = n, t: float = killer.t) -> bool:
                    return system.restarted.get("svc", 0) >= n and any(
                        e.owner == "svc" and e.pe == "adapter"
                        for e in after(t, Source.DRIVER, Kind.PROBE))
                await until(back, BOOT_S, "svc restarted")
                lost = after(t0, Source.POLICY, Kind.ADAPTER_DRIVER_LOST)
                assert lost and lost[0].data["why"] in ("channel-closed", "guest-gone"), lost
                restarts = after(t0, Source.POLICY, Kind.GUEST_RESTART)
                assert len(restarts) == 1, restarts
                assert restarts[0].data["slot_reset"] is (point is not at_allow_unfreeze)
                assert not after(t0, Source.POLICY, Kind.PLATFORM_RECOVERY)
                found = after(t0, Source.DRIVER, Kind.FOUND_FROZEN)
                if point is not at_allow_unfreeze:  # the new driver recovered the adapter
                    assert [e.owner for e in found] == ["svc"], found
                    ready = after(t0, Source.SHIM, Kind.GUEST_RESTARTED)[0]
                    print(f"  svc back in {ready.data['ready_s']} s (boot), restart "
                          f"{ready.t - killer.t:.1f} s after the kill")
                st = plat.pe_states()
                assert all(s["state"] == 0 for s in st.values()), st

            # a VF guest killed during the lockout: its VF taken back, the others in order
            t0, killer = await recovery("g1", lambda e, seen: is_(
                e, Source.POLICY, Kind.UNFREEZE_REFUSED, "vf0"), ("vf1", "vf2"))
            gone = [e for e in after(t0, Source.POLICY, Kind.OWNER_GONE)]
            assert [(e.pe, e.data["action"]) for e in gone] == \
                [("vf0", "reset after the lockout")], gone
            await until(lambda: plat.pe_states()["vf0"]["state"] == 0, 60, "vf0 reset")
            steps = check_claim(tl.snapshot(), pf_owner="svc",
                                vfs={"vf1": "g2", "vf2": "g2"}, since=t0 - 0.001)
            failed = first_failure(steps)
            assert failed is None, (failed, d)
            assert system.dead == {"g1": -signal.SIGKILL}
            assert system.restarted == {"svc": 3}
    # leaving the System took every guest down: no adapter driver lost for it
    assert len([e for e in tl.snapshot() if e.kind == Kind.GUEST_RESTART]) == 3
