"""Two adapters in real guests (eeh_sriov/topologies/two-adapters.toml): svc holds both
PFs and runs an adapter driver for each, g1 holds nic0.vf0 and nic1.vf0, g2 nic0.vf1 and
nic1.vf1, each VF driver waiting on its own adapter's PF. Host traffic through each
adapter's own uplink to its VFs. An adapter error on nic0: the claim holds for nic0, and
nothing names nic1's PEs after it (no freeze, no driver recovery), its traffic's books
are exact. Times are printed (-s), not asserted (hang timeouts only).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import System
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.pe.names import split
from qemu_launcher.assets import GuestAssets

TOPOLOGY = DEFAULT_TOPOLOGY.parent / "two-adapters.toml"
BOOT_S = 300.0  # hang timeouts (a TCG boot on a loaded machine)


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_error_on_one_adapter_in_real_guests(assets: GuestAssets, accel: str,
                                             run_dir: Callable[..., Path]) -> None:
    asyncio.run(scenario(assets, accel, run_dir()))


async def scenario(assets: GuestAssets, accel: str, d: Path) -> None:
    topo = load_topology(TOPOLOGY)
    system = System(topo, d, assets, accel=accel,
                    platform_config=topo.platform_config(host_cpus=(), uplink="queue"))
    async with system:
        plat = system.platform
        tl = plat.timeline
        t_start = time.monotonic()
        await until(lambda: topo.guest_pes <= {e.pe for e in tl.snapshot() if
                                               e.source == Source.DRIVER and
                                               e.kind == Kind.PROBE}, BOOT_S, "drivers ready")
        print(f"\nevery driver of both adapters ready {time.monotonic() - t_start:.1f} s "
              "after the guests booted")
        pes = {p.pe: p for p in await plat.query_pes()}
        assert {"nic0", "nic1", "nic0.vf0", "nic1.vf1"} <= set(pes), pes
        assert pes["nic0"].address != pes["nic1"].address
        traffic: dict[str, UplinkTraffic] = {}
        for a in ("nic0", "nic1"):
            targets = {}
            for fn in topo.claim_args(a)[1]:
                c = topo.vf_config(fn)
                assert c.mac is not None
                targets[fn] = Target(c.mac, c.vlan)
            traffic[a] = UplinkTraffic(plat, targets, rate_hz=20, adapter=a).__enter__()
        try:
            for tr in traffic.values():
                for name in tr.targets:
                    assert await asyncio.to_thread(tr.wait_echo_after, name, 0.0, 60), name
            t0 = time.monotonic()
            await plat.inject("nic0", "adapter-fatal")
            pf_owner, vfs = topo.claim_args("nic0")
            await until(lambda: set(vfs) <= {e.pe for e in tl.snapshot() if e.t > t0 and
                                             e.source == Source.DRIVER and
                                             e.kind == Kind.RECOVERED}, BOOT_S,
                        "nic0's VFs recovered")
            recovered = {e.pe: e.t for e in tl.snapshot() if e.t > t0 and
                         e.source == Source.DRIVER and e.kind == Kind.RECOVERED}
            for name in vfs:
                t = await asyncio.to_thread(traffic["nic0"].wait_echo_after, name,
                                            recovered[name], 60)
                assert t is not None, (name, d)
                tl.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=name, t=t)
            print(f"nic0: every VF recovered {1000 * (max(recovered.values()) - t0):.0f} ms "
                  "after the injection")
            await asyncio.sleep(0.5)
            for tr in traffic.values():
                tr.pause()
            await asyncio.sleep(1.5)
            books = {a: tr.stats(in_flight_s=1.0) for a, tr in traffic.items()}
        finally:
            for tr in traffic.values():
                tr.stop()
        steps = check_claim(tl.snapshot(), pf_owner=pf_owner, vfs=vfs, since=t0 - 0.001,
                            adapter_pe="nic0")
        print("\n".join(s.line(steps[0].t or t0) for s in steps))
        assert first_failure(steps) is None, (first_failure(steps), d)
        nic1 = {pe for pe in pes if split(pe)[0] == "nic1" or pe == "nic1"}
        touched = [(e.source, e.kind, e.pe) for e in tl.snapshot()
                   if e.t >= t0 and e.pe in nic1 and e.source != Source.TRAFFIC
                   and e.kind != Kind.TRAFFIC]
        assert touched == [], touched[:10]
        for name, st in books["nic1"].items():
            assert st["lost"] == 0 and st["duplicates"] == 0 and st["sent"] == st["echoed"], \
                (name, st)
        assert all(p["state"] == 0 for p in plat.pe_states().values())
