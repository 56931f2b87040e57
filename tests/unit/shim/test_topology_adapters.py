"""Several adapters in one topology (`[[adapter]]`): names, per-adapter policy, uplink and
adapter driver, the platform's configuration; every mistake one TopologyError naming
its dotted key. A single `[adapter]` keeps today's names (tests/unit/shim/test_topology.py
covers it)."""

from __future__ import annotations

import pytest

from eeh_sriov.topology import (
    DEFAULT_TOPOLOGY,
    HOST,
    TopologyError,
    format_mac,
    load_topology,
    parse_topology,
)
from hypervisor_shim.adapters import FIRST_BUS

TOPOLOGIES = DEFAULT_TOPOLOGY.parent


def two(first: str = "", second: str = "", top: str = "", guests: str | None = None,
        where: str = "svc") -> str:
    """Two adapters (nic0, nic1: 4 VFs, 2 enabled), svc holding both PFs, g1 a VF of
    each; `first`/`second`: lines in each [[adapter]] table (after its keys), `top` at
    the top level."""
    if guests is None:
        guests = ('[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic1.pf"]\n'
                  '[[guests]]\nname = "g1"\nfunctions = ["nic0.vf0", "nic1.vf1"]\n')
    return (f'{top}\n[pf_driver]\nwhere = "{where}"\n'
            f"[[adapter]]\ntotal_vfs = 4\nenabled_vfs = 2\n{first}\n"
            f"[[adapter]]\ntotal_vfs = 4\nenabled_vfs = 2\n{second}\n{guests}")


def error(text: str, key: str, *fragments: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "t.toml")
    e = info.value
    assert e.key == key, str(e)
    for fragment in fragments:
        assert fragment in e.reason, str(e)
    return e


def test_two_adapters_names_and_owners() -> None:
    topo = parse_topology(two())
    assert [a.name for a in topo.adapters] == ["nic0", "nic1"]
    assert topo.adapter is topo.adapters[0]
    assert topo.all_functions == ("nic0.pf", "nic0.vf0", "nic0.vf1",
                                  "nic1.pf", "nic1.vf0", "nic1.vf1")
    assert topo.adapter_pes == ("nic0", "nic1")
    assert topo.guest_pes == {"nic0", "nic1", "nic0.vf0", "nic1.vf1"}
    assert topo.owner_of("nic1.pf") == "svc" and topo.owner_of("nic1.vf1") == "g1"
    assert topo.owner_of("nic1.vf0") is None
    assert topo.claim_args("nic1") == ("svc", {"nic1.vf1": "g1"})
    with pytest.raises(ValueError):
        topo.owner_of("vf0")  # of several adapters, a function names its adapter
    # each adapter's default MAC range: the default base with its number in octet 4
    assert format_mac(topo.vf_config("nic1.vf0").mac or b"") == "02:ee:00:01:00:01"
    assert format_mac(topo.vf_config(0, "nic0").mac or b"") == "02:ee:00:00:00:01"


def test_platform_config_per_adapter() -> None:
    topo = parse_topology(two(second="[adapter.policy]\nmax_freezes = 1\n"
                                     "[adapter.uplink]\nkind = \"queue\"\n",
                              top='[policy]\nmax_freezes = 7\nwindow_s = 60.0\n'
                                  '[uplink]\nkind = "tap"\ntap_name = "eehx3"'))
    cfg = topo.platform_config()
    p0, p1 = cfg.plans()
    assert (p0.name, p0.bus, p1.name, p1.bus) == ("nic0", FIRST_BUS, "nic1", FIRST_BUS + 1)
    assert (p0.policy.max_freezes, p1.policy.max_freezes) == (7, 1)
    assert p1.policy.window_s == 60.0  # the top-level key the adapter left out
    assert (p0.uplink, p0.tap_name, p1.uplink, p1.tap_name) == ("tap", "eehx3", "queue",
                                                                 "eehx4")
    assert dict(p1.owners) == {"pf": "svc", "vf1": "g1"}  # by the adapter's own names
    assert cfg.owners == {"nic0.pf": "svc", "nic0.vf0": "g1", "nic1.pf": "svc",
                          "nic1.vf1": "g1"}
    assert cfg.owner_names == ["g1", "svc"]
    assert p0.base_mac != p1.base_mac


def test_timing_of_every_adapter() -> None:
    topo = parse_topology(two(first='timing = "spec"')).with_timing("fast")
    assert [a.timing for a in topo.all_adapters] == ["fast", "fast"]
    assert topo.adapter is topo.adapters[0]
    one = load_topology(DEFAULT_TOPOLOGY).with_timing("fast")
    assert one.adapter.timing == "fast" and one.adapters == ()


def test_one_adapter_keeps_its_names() -> None:
    topo = load_topology(DEFAULT_TOPOLOGY)
    assert topo.adapters == () and topo.adapter_pes == ("adapter",)
    cfg = topo.platform_config()
    assert cfg.adapters == () and [p.name for p in cfg.plans()] == [""]
    assert topo.all_functions[:2] == ("pf", "vf0")


def test_shipped_two_adapter_topologies() -> None:
    vm = load_topology(TOPOLOGIES / "two-adapters.toml")
    assert [a.name for a in vm.adapters] == ["nic0", "nic1"]
    assert vm.functions_of("g1") == ("nic0.vf0", "nic1.vf0")
    assert vm.policy_of(vm.adapters[1]).max_freezes == 3
    harness = load_topology(TOPOLOGIES / "two-adapters-harness.toml")
    assert harness.harness_mode
    assert len(harness.functions_of(HOST)) == 2 * 65
    assert [a.enabled_vfs for a in harness.adapters] == [64, 64]


def test_per_adapter_pf_driver() -> None:
    guests = ('[[guests]]\nname = "svc"\nfunctions = ["nic0.pf"]\n'
              '[[guests]]\nname = "svc2"\nfunctions = ["nic1.pf", "nic1.vf0"]\n')
    topo = parse_topology(two(second='[adapter.pf_driver]\nwhere = "svc2"', guests=guests))
    assert topo.owner_of("nic1.pf") == "svc2" and topo.owner_of("nic0.pf") == "svc"
    error(two(guests=guests), "pf_driver.where", 'does not hold "nic1.pf"', "svc2")


@pytest.mark.parametrize(("text", "key", "fragment"), [
    (two(first='name = "nic1"'), "adapter[1].name", "duplicate adapter name"),
    (two(first='name = "adapter"'), "adapter[0].name", "not an adapter name"),
    (two(first='name = "a.b"'), "adapter[0].name", "not an adapter name"),
    (two(first='name = "vf2"'), "adapter[0].name", "not an adapter name"),
    (two(second='timing = "slow"'), "adapter[1].timing", "must be one of"),
    (two(second="colour = 1"), "adapter[1].colour", "unknown key"),
    (two(second="[adapter.vf.3]\nmtu = 1500"), "adapter[1].vf.3",
     "adapter[1].enabled_vfs = 2"),
    (two(second="[adapter.vf.0]\nmtu = 10"), "adapter[1].vf.0.mtu", ""),
    (two(second="[adapter.policy]\nmax_freezes = -1"), "adapter[1].policy.max_freezes", ""),
    (two(second="[adapter.policy]\nmax_frezes = 1"), "adapter[1].policy.max_frezes",
     "did you mean 'max_freezes'"),
    (two(second='[adapter.uplink]\ntap_name = "eehup0"'), "adapter[1].uplink.tap_name",
     "already the uplink of adapter"),
    (two(second='[adapter.pf_driver]\nwhere = "host"'), "adapter[1].pf_driver.where",
     "every adapter driver runs on the host"),
    (two(second='base_mac = "02:ee:00:00:00:04"'), "adapter[1].base_mac",
     "give each adapter its own base_mac"),
    (two(second='[adapter.vf.0]\nmac = "02:ee:00:00:00:02"'), "adapter[1].vf.0.mac",
     "nic0.vf1's default MAC"),
    (two(guests='[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic1.pf", "vf0"]\n'),
     "guests[0].functions[2]", "names its adapter"),
    (two(guests='[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic2.pf"]\n'),
     "guests[0].functions[1]", "names its adapter (nic0, nic1)"),
    (two(guests='[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic1.vf3"]\n'),
     "guests[0].functions[1]", "adapter[1].enabled_vfs = 2"),
    (two(guests='[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic1.vf4"]\n'),
     "guests[0].functions[1]", "adapter[1].total_vfs"),
    (two(guests='[[guests]]\nname = "svc"\nfunctions = ["nic0.pf"]\n'),
     "pf_driver.where", 'does not hold "nic1.pf"'),
    ('adapter = []\n[pf_driver]\nwhere = "host"', "adapter", "an empty array"),
    (two(where="host", guests="", top="[harness]\nvf_drivers = 3"), "harness.vf_drivers",
     ""),
    (two(where="host", guests='[[guests]]\nname = "g"\nfunctions = ["nic1.vf0"]\n'),
     "guests[0].functions[0]", "driven by the host"),
])
def test_mistakes_name_their_key(text: str, key: str, fragment: str) -> None:
    error(text, key, fragment)


def test_single_adapter_table_refuses_the_several_keys() -> None:
    text = ('[adapter]\nname = "nic0"\n[pf_driver]\nwhere = "host"\n')
    error(text, "adapter.name", "unknown key")


def test_guest_traffic_peers_stay_on_their_adapter() -> None:
    from eeh_sriov.traffic import guest_traffic_command, vf_targets
    guests = ('[[guests]]\nname = "svc"\nfunctions = ["nic0.pf", "nic1.pf"]\n'
              '[[guests]]\nname = "g1"\nfunctions = ["nic1.vf0"]\n'
              '[[guests]]\nname = "g2"\nfunctions = ["nic0.vf0", "nic1.vf1"]\n'
              '[[guests]]\nname = "g3"\nfunctions = ["nic0.vf1"]\n')
    topo = parse_topology(two(guests=guests))
    assert set(vf_targets(topo)) == {"nic1.vf0", "nic0.vf0", "nic1.vf1", "nic0.vf1"}
    # g1 (nic1 only): its peer is nic1.vf1 alone; g2 (both adapters): none
    assert guest_traffic_command(topo, "g1", 10).endswith("--peers 02:ee:00:01:00:02")
    assert "--peers" not in guest_traffic_command(topo, "g2", 10)
    assert guest_traffic_command(topo, "g3", 10).endswith("--peers 02:ee:00:00:00:01")
