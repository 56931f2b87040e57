"""The guests' VF-to-VF probe peers: each guest probes the VFs that follow its own, at
most MAX_PEERS, so the traffic grows with the VFs and not with their square."""

from __future__ import annotations

from pathlib import Path

from eeh_sriov.topology import load_topology
from eeh_sriov.traffic import MAX_PEERS, guest_traffic_command, vf_targets

TOPOLOGIES = Path(__file__).resolve().parents[3] / "eeh_sriov" / "topologies"


def peers(cmd: str) -> list[str]:
    return cmd.split("--peers ", 1)[1].split(",") if "--peers " in cmd else []


def test_eight_guests_of_eight_each_probe_the_next_guests_vfs() -> None:
    topo = load_topology(TOPOLOGIES / "scale-8x8.toml")
    targets = vf_targets(topo)
    mac_of = {fn: f"{t.mac.hex(':')}" for fn, t in targets.items()}
    clients = [g.name for g in topo.guests if g.name != "svc"]
    probed: set[str] = set()
    for i, guest in enumerate(clients):
        got = peers(guest_traffic_command(topo, guest, 10))
        nxt = clients[(i + 1) % len(clients)]
        assert len(got) == MAX_PEERS
        assert got == [mac_of[fn] for fn in topo.functions_of(nxt)], guest
        probed |= set(got)
    assert probed == set(mac_of.values())  # every VF still gets VF-to-VF traffic


def test_a_small_topology_keeps_every_peer() -> None:
    topo = load_topology(TOPOLOGIES / "default.toml")
    assert peers(guest_traffic_command(topo, "g1", 10)) == ["02:ee:00:00:01:02"]
    assert peers(guest_traffic_command(topo, "g2", 10)) == ["02:ee:00:00:01:00"]
    assert peers(guest_traffic_command(topo, "svc", 10)) == []
