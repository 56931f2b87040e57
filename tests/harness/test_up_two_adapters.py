"""`up --traffic` on a topology of two adapters, its parts on the real platform with the
drivers on the host (harness mode: `up` itself boots guests): the host probes every VF of
both adapters, each through its own adapter's uplink (`operator_cli.probed`,
`traffic.UplinkTraffic`); after an error on nic1 the first echo through each of nic1's
recovered VFs is a `traffic-back` step named with its adapter (nic1.vf1), in the live
line, timeline.md and summary.json (`operator_cli.write_session`); each adapter's uplink
has its own capture. Before, the host probed the first adapter's VFs only: nic1's VFs got
no probes and no traffic-back step."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from eeh_abi import traffic as T
from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.operator_cli import live_line, probed, write_session
from eeh_sriov.topology import parse_topology
from eeh_sriov.traffic import TrafficBack, UplinkTraffic, write_pcaps
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.injection import InjectKind
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry

WAIT_S = 30.0  # a hang catcher
TOPOLOGY = "".join(['''
[uplink]
kind = "queue"
[pf_driver]
where = "host"
'''] + [f'''
[[adapter]]
name = "{name}"
total_vfs = 2
enabled_vfs = 2
''' for name in ("nic0", "nic1")])


def test_up_traffic_probes_every_adapters_vfs_and_says_traffic_back_for_nic1(
        tmp_path: Path) -> None:
    topo = parse_topology(TOPOLOGY, "two-adapters-up")
    targets = probed(topo)
    assert sorted(targets) == ["nic0.vf0", "nic0.vf1", "nic1.vf0", "nic1.vf1"]
    said: list[Entry] = []
    with Platform(topo.platform_config(), tmp_path) as plat:
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))),
                      poll=PollConfig(max_sleep_s=0.01))
        agent.start(probe_timeout=WAIT_S)
        try:
            async def said_for(vfs: set[str]) -> bool:
                deadline = time.monotonic() + WAIT_S
                while not vfs <= {e.pe for e in said} and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return vfs <= {e.pe for e in said}

            async def session() -> dict[str, int]:
                with UplinkTraffic(plat, targets, rate_hz=50) as traffic:
                    assert sorted(traffic.ports) == ["nic0", "nic1"]
                    back = TrafficBack(traffic, plat.timeline, on_back=said.append)
                    back.start()
                    try:
                        for name in targets:  # every VF of both adapters echoes
                            assert await asyncio.to_thread(
                                traffic.wait_echo_after, name, 0.0, WAIT_S), name
                        # as the console injects: an error of nic1.vf1, then of nic1
                        await plat.inject("nic1.vf1", InjectKind.VF_ERROR, by=Source.CONSOLE)
                        assert await said_for({"nic1.vf1"}), plat.timeline.snapshot()[-20:]
                        await plat.inject("nic1", InjectKind.ADAPTER_FATAL, by=Source.CONSOLE)
                        assert await said_for({"nic1.vf0"}), plat.timeline.snapshot()[-20:]
                    finally:
                        back.stop()
                    traffic.stop()
                    assert all(traffic.stats()[n]["echoed"] > 0 for n in targets)
                    return write_pcaps(traffic, tmp_path)

            pcaps = asyncio.run(session())
        finally:
            agent.stop()
        entries = plat.timeline.snapshot()

    backs = [e.pe for e in entries if e.source == Source.TRAFFIC and
             e.kind == Kind.TRAFFIC_BACK]
    # nic1's VFs only: nic0 never recovered (its traffic was never down)
    assert backs[0] == "nic1.vf1" and set(backs) == {"nic1.vf0", "nic1.vf1"}, backs
    assert said[0].pe == "nic1.vf1" and " nic1.vf1 " in live_line(said[0])

    paths = write_session(tmp_path, topo, entries, traffic=True, stats={}, pcaps=pcaps,
                          t0=entries[0].t, extra={})
    assert [p.name for p in paths] == ["timeline.md", "summary.json", "uplink-nic0.pcap",
                                       "uplink-nic1.pcap"]
    md = (tmp_path / "timeline.md").read_text()
    assert "| console: inject nic1.vf1 vf-error |" in md
    assert "traffic back through nic1.vf1" in md and "traffic back through nic1.vf0" in md
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ok"], summary["steps"]
    steps = [(s["step"], s["title"].split(" (")[0]) for s in summary["steps"]
             if s["step"] == "traffic-back"]
    assert ("traffic-back", "traffic back through nic1.vf1") in steps, steps
    assert set(summary["injections"][0]["traffic_back_ms"]) == {"nic1.vf1"}
    assert summary["uplink_pcaps"] == pcaps and all(n > 0 for n in pcaps.values())

    # each capture holds its own adapter's probes and echoes only
    from scapy.utils import rdpcap
    for adapter in ("nic0", "nic1"):
        macs = {t.mac for n, t in targets.items() if n.startswith(adapter + ".")}
        others = {t.mac for t in targets.values()} - macs
        frames = [bytes(p) for p in rdpcap(str(tmp_path / f"uplink-{adapter}.pcap"))]
        probes = [p for f in frames if (p := T.parse(f)) is not None]
        assert probes and all(p.dst not in others and p.src not in others for p in probes)
