"""One guest's QEMU killed in the default topology (issue 13): the shim cleans up after it
and the other guests and their VFs are unaffected.

svc holds the PF (adapter driver), g1 vf0, g2 vf1 and vf2. g1's QEMU is SIGKILLed while
host traffic flows to every VF. Then: the timeline says guest-died and guest-cleaned-up,
g1's console socket and socket directory are gone, QEMU is reaped, vf0's vfio-user
endpoint and g1's platform channel saw the disconnect, vf0 was taken back (reset); g2's
VFs kept passing traffic; an adapter error injected through the console afterwards is
recovered by svc and g2 in the claim's order (vf0 too, by the platform), and traffic
comes back on vf1 and vf2.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from qemu.qmp import QMPClient

from eeh_sriov.system import System
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from hypervisor_shim.claim import check_claim, first_failure
from qemu_launcher.assets import GuestAssets
from vfio_user import EndpointState


async def until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_one_qemu_killed_the_others_carry_on(assets: GuestAssets, accel: str,
                                             run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    topo = load_topology(DEFAULT_TOPOLOGY)
    asyncio.run(scenario(topo, assets, accel, d))


async def scenario(topo: object, assets: GuestAssets, accel: str, d: Path) -> None:
    from eeh_sriov.topology import Topology

    assert isinstance(topo, Topology)
    system = System(topo, d, assets, accel=accel,
                    platform_config=topo.platform_config(host_cpus=(),
                                                                  uplink="queue"))
    async with system:
        plat = system.platform
        tl = plat.timeline
        wanted = {"adapter", "vf0", "vf1", "vf2"}
        await until(lambda: wanted <= {e.pe for e in tl.snapshot()
                                       if e.source == "driver" and e.kind == "probe"},
                    180, "drivers ready")
        targets = {}
        for fn in ("vf0", "vf1", "vf2"):
            c = topo.vf_config(int(fn[2:]))
            assert c.mac is not None
            targets[fn] = Target(c.mac, c.vlan)
        with UplinkTraffic(plat, targets, rate_hz=20) as traffic:
            for name in targets:
                assert await asyncio.to_thread(traffic.wait_echo_after, name, 0.0, 30), name
            g1 = system.machines["g1"]
            assert g1.proc is not None
            console_sock = system.console.path("g1")
            sock_dir = g1.paths.sock_dir
            t_kill = time.monotonic()
            os.killpg(g1.proc.pid, signal.SIGKILL)

            # the shim cleans up after it
            await until(lambda: any(e.kind == "guest-cleaned-up" and e.owner == "g1"
                                    for e in tl.snapshot()), 30, "guest-cleaned-up")
            died = next(e for e in tl.snapshot() if e.kind == "guest-died")
            assert died.owner == "g1" and died.data["functions"] == ["vf0"]
            assert died.data["returncode"] == -signal.SIGKILL
            assert g1.exited and not sock_dir.exists() and not console_sock.exists()
            assert system.dead == {"g1": -signal.SIGKILL}
            ep = plat.host.server.server.endpoints["vf0"]
            assert plat.call(lambda: ep.state) is EndpointState.LISTENING
            assert plat.call(lambda: plat.adapter.vf(0).memory) is None  # unmapped
            assert not plat.server.connections.get("g1")
            gone = [e for e in tl.snapshot() if e.kind == "owner-gone"]
            assert [e.pe for e in gone] == ["vf0"], gone
            # its VF PE taken back: reset by the platform (an FLR: 100 ms with spec timing)
            await until(lambda: plat.pe_states()["vf0"]["state"] == 0, 30, "vf0 reset")

            # g2's VFs never noticed
            for name in ("vf1", "vf2"):
                t = time.monotonic()
                assert await asyncio.to_thread(traffic.wait_echo_after, name, t, 10), name
            assert not [e for e in tl.snapshot() if e.t > t_kill and e.source == "driver"
                        and e.owner in ("g2", "svc") and e.kind not in ("mailbox",)]

            # and they still recover from an adapter error
            client = QMPClient("faults")
            await client.connect(str(system.console.platform_path))
            try:
                t_inject = time.monotonic()
                await client.execute("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
            finally:
                await client.disconnect()
            await until(lambda: {"adapter", "vf1", "vf2"} <= {
                e.pe for e in tl.snapshot() if e.source == "driver" and e.kind == "recovered"
                and e.t > t_inject}, 90, "recovery of svc and g2")
            recovered = {e.pe: e.t for e in tl.snapshot() if e.source == "driver"
                         and e.kind == "recovered" and e.t > t_inject}
            for name in ("vf1", "vf2"):
                # traffic after the VF's recovery (an echo in flight at the injection
                # is not traffic back)
                t = await asyncio.to_thread(traffic.wait_echo_after, name, recovered[name], 30)
                assert t is not None, name
                tl.record("traffic", "traffic-back", pe=name, t=t)
            await until(lambda: plat.pe_states()["vf0"]["state"] == 0, 30, "vf0 back")
            steps = check_claim(tl.snapshot(), pf_owner="svc",
                                vfs={"vf1": "g2", "vf2": "g2"}, since=t_inject - 0.001)
            failed = first_failure(steps)
            assert failed is None, (failed, d)
            st = plat.pe_states()
            assert all(s["state"] == 0 for s in st.values()), st
