"""`up --traffic`'s traffic-back step (eeh_sriov.traffic.TrafficBack) on the real platform
with the drivers on the host: the host's probes through the uplink to every VF, echoed by
the VF drivers; after a VF's recovery the first echo through it is a `traffic-back` entry
in the timeline, and the session's steps (eeh_sriov.report) show it."""

from __future__ import annotations

import asyncio
import time

from eeh_sriov.report import session_steps
from eeh_sriov.traffic import Target, TrafficBack, UplinkTraffic
from guest_drivers.vf import VfDriver
from hypervisor_shim.timeline import Entry
from tests.support.platform_rig import host_config, running

WAIT_S = 20.0  # a hang catcher


def test_traffic_back_after_each_recovery_of_a_vf() -> None:
    with running(host_config(nvfs=2)) as rig:
        agent = rig.agent()
        agent.start()
        vfs = [d for d in agent.drivers.values() if isinstance(d, VfDriver)]
        targets = {vf.name: Target(vf.mac, vf.vlan) for vf in vfs}
        said: list[Entry] = []

        async def said_at_least(n: int) -> bool:
            """Wait (at most WAIT_S) until `n` traffic-back steps were said."""
            deadline = time.monotonic() + WAIT_S
            while len(said) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return len(said) >= n

        async def go() -> None:
            with UplinkTraffic(rig.plat, targets, rate_hz=50) as traffic:
                back = TrafficBack(traffic, rig.plat.timeline, on_back=said.append)
                back.start()
                try:
                    for name in targets:  # baseline: every VF echoes
                        assert await asyncio.to_thread(traffic.wait_echo_after, name, 0.0,
                                                       WAIT_S), name
                    for n in (1, 2):  # each recovery gets its own traffic-back
                        rig.plat.inject_vf_error(0)
                        assert await said_at_least(n), rig.steps("vf0")
                finally:
                    back.stop()

        asyncio.run(go())
        entries = rig.entries()
        recovered = [e.t for e in entries if e.source == "driver" and e.kind == "recovered"
                     and e.pe == "vf0"]
        backs = [e for e in entries if e.source == "traffic" and e.kind == "traffic-back"]
        assert [e.pe for e in backs] == ["vf0", "vf0"]  # vf1 did not recover: none for it
        assert said == backs
        for rec_t, e in zip(recovered, backs, strict=True):
            assert e.t > rec_t and e.data["after"] == "recovered"
            assert e.data["ms"] == round((e.t - rec_t) * 1000, 3)
        steps = session_steps(entries, targets, traffic=True)
        assert [s.key for s in steps if s.key in ("recovered", "traffic-back")] == [
            "recovered", "traffic-back", "recovered", "traffic-back"]
        assert all(s.ok for s in steps)
