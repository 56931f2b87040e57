"""Topology files: the shipped ones parse; every mistake is one TopologyError naming its key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from device_model.adapter import AdapterConfig
from device_model.reset import ResetTiming
from eeh_abi.papr import FREEZE_WINDOW_S, MAX_FREEZES, MAX_RESET_TRIES, RETRY_HINT_MS
from eeh_sriov.topology import (
    DEFAULT_TOPOLOGY,
    HOST,
    GuestSpec,
    Topology,
    TopologyError,
    VfConfig,
    format_mac,
    load_topology,
    parse_topology,
)
from hypervisor_shim.errors import ShimError

TOPOLOGIES = DEFAULT_TOPOLOGY.parent

GUESTS = """
[[guests]]
name = "svc"
functions = ["pf"]

[[guests]]
name = "g1"
functions = ["vf0"]

[[guests]]
name = "g2"
functions = ["vf1", "vf2"]
"""


def make(adapter: str = "", top: str = "", guests: str = GUESTS, where: str = '"svc"',
         root: str = "") -> str:
    """A valid topology (8 VFs, 3 enabled, svc/g1/g2) with lines added or replaced: `root`
    before any table, `adapter` in [adapter] (its total_vfs/enabled_vfs replace ours),
    `top` after [pf_driver]."""
    head = [f"{k} = {v}" for k, v in (("total_vfs", 8), ("enabled_vfs", 3))
            if not adapter.startswith(k) and f"\n{k}" not in adapter.split("[")[0]]
    return (f"{root}\n[adapter]\n{chr(10).join(head)}\n{adapter}\n"
            f"[pf_driver]\nwhere = {where}\n{top}\n{guests}")


def guests(*entries: tuple[str, str]) -> str:
    return "".join(f'\n[[guests]]\nname = "{n}"\nfunctions = {f}\n' for n, f in entries)


def error(text: str, key: str, *fragments: str) -> TopologyError:
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "t.toml")
    e = info.value
    assert e.key == key, str(e)
    where = f"{key}: " if key else ""
    assert str(e) == f"topology t.toml: {where}{e.reason}"
    for fragment in fragments:
        assert fragment in e.reason, str(e)
    return e


# ---- the shipped topologies


def test_default_topology() -> None:
    t = load_topology(DEFAULT_TOPOLOGY)
    assert t.source == str(DEFAULT_TOPOLOGY)
    assert [g.name for g in t.guests] == ["svc", "g1", "g2"]
    assert t.guest("svc") == GuestSpec("svc", ("pf",), memory_mib=512)
    assert t.functions_of("g1") == ("vf0",)
    assert t.functions_of("g2") == ("vf1", "vf2")
    assert t.pf_driver.where == "svc" and not t.harness_mode and t.harness is None
    assert t.functions_of(HOST) == ()
    a = t.adapter
    assert (a.total_vfs, a.enabled_vfs, a.timing) == (8, 3, "spec")
    assert a.reset_timing is ResetTiming.SPEC
    assert t.reset_timing == ResetTiming.SPEC
    assert format_mac(a.base_mac) == "02:ee:00:00:00:00"
    assert t.all_functions == ("pf", "vf0", "vf1", "vf2")
    assert [t.owner_of(f) for f in t.all_functions] == ["svc", "g1", "g2", "g2"]
    configs = [t.vf_config(n) for n in range(3)]
    macs = {a.base_mac} | {c.mac for c in configs}
    assert len(macs) == 4  # the PF and every VF distinct
    assert all(c.index == n for n, c in enumerate(configs))
    assert configs[1].vlan == 100 and configs[0].vlan is None and configs[2].vlan is None
    assert configs[2].mtu == 9000 and configs[0].mtu == configs[1].mtu == 1500
    assert t.uplink.kind == "auto" and t.uplink.tap_name == "eehup0"
    assert t.policy.max_freezes == MAX_FREEZES and t.policy.window_s == FREEZE_WINDOW_S
    assert t.policy.retry_hint_ms == RETRY_HINT_MS and not t.policy.errinjct
    assert t.policy.max_reset_failures == MAX_RESET_TRIES
    assert t.policy.adapter_driver_deadline_ms == 10_000
    assert t.policy.on_adapter_driver_lost == "restart-guest"
    assert all(g.handlers for g in t.guests)


def test_default_topology_explains_every_key() -> None:
    """Each key is set right below a comment, or named in a comment (the per-VF and
    per-guest keys are explained once, above their tables); the file sets every key."""
    lines = DEFAULT_TOPOLOGY.read_text().splitlines()
    comments = "\n".join(line for line in lines if line.startswith("#"))
    keys = set()
    for i, line in enumerate(lines):
        if "=" in line and not line.startswith("#"):
            key = line.split("=")[0].strip()
            keys.add(key)
            assert lines[i - 1].startswith("#") or re.search(rf"\b{key}\b", comments), key
    assert keys == {"total_vfs", "enabled_vfs", "timing", "base_mac", "mac", "vlan", "mtu",
                    "anti_spoof", "kind", "tap_name", "max_freezes", "window_s",
                    "retry_hint_ms", "max_reset_failures", "errinjct",
                    "adapter_driver_deadline_ms", "on_adapter_driver_lost", "where", "name",
                    "functions", "memory_mib", "handlers"}


def test_harness_topology() -> None:
    t = load_topology(TOPOLOGIES / "harness-8vf.toml")
    assert t.guests == () and t.harness_mode
    assert t.harness is not None and t.harness.vf_drivers == 8
    assert t.adapter.enabled_vfs == 8
    assert {t.owner_of(f) for f in t.all_functions} == {HOST}
    assert t.functions_of(HOST) == t.all_functions
    assert t.uplink.resolved_kind(euid=0) == "queue"


@pytest.mark.parametrize("path", sorted(TOPOLOGIES.glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_topology_parses(path: Path) -> None:
    assert isinstance(load_topology(path), Topology)


# ---- defaults and helpers


def test_minimal_topology_takes_defaults() -> None:
    t = parse_topology('[pf_driver]\nwhere = "a"\n[[guests]]\nname = "a"\nfunctions = ["pf"]')
    assert t.source == "<string>"
    assert (t.adapter.total_vfs, t.adapter.enabled_vfs, t.adapter.timing) == (8, 8, "fast")
    assert t.adapter.vfs == ()
    assert t.guests == (GuestSpec("a", ("pf",), memory_mib=512, cpus=1, handlers=True),)
    assert t.policy.max_freezes == 5 and t.policy.window_s == 3600.0
    assert t.policy.retry_hint_ms == 1000 and t.policy.errinjct is False
    assert t.policy.max_reset_failures == 3
    assert t.owner_of("vf7") is None  # enabled, held by nobody


def test_vf_config_defaults_match_the_device_model() -> None:
    t = parse_topology(make('base_mac = "02:aa:00:00:00:f0"'))
    device = AdapterConfig(total_vfs=8, base_mac=t.adapter.base_mac)
    for n in range(8):  # also VFs not enabled at start
        assert t.vf_config(n) == VfConfig(n, device.mac(1 + n), None, 1500, False)
    assert t.adapter.mac(0) == device.mac(0)
    for bad in (-1, 8):
        with pytest.raises(ValueError):
            t.vf_config(bad)


def test_vf_config_both_forms() -> None:
    by_key = parse_topology(make(
        '[adapter.vf.2]\nmac = "02:ee:00:00:0a:02"\nvlan = 0\nmtu = 68\nanti_spoof = true'))
    by_array = parse_topology(make(
        '[[adapter.vfs]]\nindex = 2\nmac = "02:EE:00:00:0A:02"\nvlan = 0\nmtu = 68\n'
        "anti_spoof = true"))
    assert by_key.adapter == by_array.adapter
    assert by_key.vf_config(2) == VfConfig(2, bytes.fromhex("02ee00000a02"), 0, 68, True)
    mixed = parse_topology(make('[adapter.vf.0]\nmtu = 9216\n[[adapter.vfs]]\nindex = 1\n'
                                "vlan = 4095"))
    assert [c.index for c in mixed.adapter.vfs] == [0, 1]
    assert mixed.vf_config(0).mtu == 9216 and mixed.vf_config(1).vlan == 4095


def test_timing_and_retry_hint() -> None:
    t = parse_topology(make('timing = "spec"'))
    assert t.adapter.reset_timing is ResetTiming.SPEC
    assert t.reset_timing == ResetTiming.SPEC
    t = parse_topology(make('timing = "spec"', "[policy]\nretry_hint_ms = 250"))
    assert t.reset_timing == dataclasses.replace(ResetTiming.SPEC, retry_hint_ms=250)
    assert t.policy.retry_hint_ms == 250


def test_policy_and_uplink_values() -> None:
    t = parse_topology(make(top='[policy]\nmax_freezes = 0\nwindow_s = 60\nerrinjct = true\n'
                                '[uplink]\nkind = "tap"\ntap_name = "eeh-test.1"'))
    assert t.policy.max_freezes == 0 and t.policy.window_s == 60.0
    assert isinstance(t.policy.window_s, float) and t.policy.errinjct
    assert t.uplink.resolved_kind(euid=1000) == "tap"
    auto = parse_topology(make())
    assert auto.uplink.resolved_kind(euid=0) == "tap"
    assert auto.uplink.resolved_kind(euid=1000) == "queue"
    queue = parse_topology(make(top='[uplink]\nkind = "queue"'))
    assert queue.uplink.resolved_kind(euid=0) == "queue"


def test_guest_fields() -> None:
    t = parse_topology(make(guests=GUESTS.replace(
        'name = "g1"', 'name = "g1"\nmemory_mib = 1024\ncpus = 2\nhandlers = false')))
    assert t.guest("g1") == GuestSpec("g1", ("vf0",), memory_mib=1024, cpus=2, handlers=False)
    with pytest.raises(ValueError):
        t.guest("nope")
    with pytest.raises(ValueError):
        t.functions_of("nope")


def test_owner_of() -> None:
    t = parse_topology(make(guests=guests(("svc", '["pf", "vf2"]'), ("g1", '["vf0"]'))))
    assert t.owner_of("pf") == "svc" and t.owner_of("vf2") == "svc"
    assert t.owner_of("vf1") is None  # enabled, held by nobody
    assert t.owner_of("vf5") is None  # not enabled
    for bad in ("vf8", "eth0", "vf01", "PF"):
        with pytest.raises(ValueError):
            t.owner_of(bad)


def test_harness_mode_with_guests_above_the_host_drivers() -> None:
    t = parse_topology(make(where='"host"', top="[harness]\nvf_drivers = 1",
                            guests=guests(("g1", '["vf1", "vf2"]'))))
    assert t.owner_of("pf") == HOST and t.owner_of("vf0") == HOST
    assert t.owner_of("vf1") == "g1"
    assert t.functions_of(HOST) == ("pf", "vf0")
    zero = parse_topology(make(where='"host"', top="[harness]\nvf_drivers = 0",
                               guests=guests(("g1", '["vf0"]'))))
    assert zero.functions_of(HOST) == ("pf",) and zero.owner_of("vf0") == "g1"
    default = parse_topology(make(where='"host"', guests=""))
    assert default.harness is not None and default.harness.vf_drivers == 3


def test_frozen() -> None:
    t = load_topology(DEFAULT_TOPOLOGY)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.adapter.enabled_vfs = 4  # type: ignore[misc]


# ---- errors


def test_error_type_and_message() -> None:
    e = error(make("total_vfs = 65"), "adapter.total_vfs", "0..64")
    assert isinstance(e, ShimError)
    assert str(e) == "topology t.toml: adapter.total_vfs: must be 0..64, not 65"
    assert e.source == "t.toml" and e.reason == "must be 0..64, not 65"


def test_invalid_toml() -> None:
    text = make() + "\nname = \n"
    e = error(text, "", "invalid TOML", f"line {text.count(chr(10))}")
    assert str(e).startswith("topology t.toml: invalid TOML: ")
    error('[adapter]\ntotal_vfs = 8\n[adapter]\n', "", "invalid TOML", "line 3")


def test_load_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(TopologyError, match=r"^topology .*nope\.toml: cannot read") as info:
        load_topology(missing)
    assert info.value.key == ""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"[adapter]\ntotal_vfs = 8 # \xff\n")
    with pytest.raises(TopologyError, match="not UTF-8"):
        load_topology(bad)
    typo = tmp_path / "typo.toml"
    typo.write_text(make("enabeld_vfs = 2"))
    with pytest.raises(TopologyError, match=f"^topology {typo}: adapter.enabeld_vfs: "):
        load_topology(typo)


@pytest.mark.parametrize(("text", "key", "fragment"), [
    (make("enabeld_vfs = 2"), "adapter.enabeld_vfs", "did you mean 'enabled_vfs'?"),
    (make(top="[polcy]\nmax_freezes = 1"), "polcy", "did you mean 'policy'?"),
    (make(top="[policy]\nmax_freeze = 1"), "policy.max_freeze", "max_freezes"),
    (make(top='[uplink]\ntapname = "x"'), "uplink.tapname", "tap_name"),
    (make(top='[pf_driver.extra]\nx = 1'), "pf_driver.extra", "unknown key"),
    (make(where='"host"', top="[harness]\nvf_driver = 1", guests=""), "harness.vf_driver",
     "vf_drivers"),
    (make("[adapter.vf.1]\ntrust = true"), "adapter.vf.1.trust", "unknown key"),
    (make("[[adapter.vfs]]\nindex = 1\nmut = 1500"), "adapter.vfs[0].mut", "mtu"),
    (make("[adapter.vf.1]\nindex = 1"), "adapter.vf.1.index", "unknown key"),
    (make(guests=GUESTS.replace('name = "g1"', 'name = "g1"\nmemroy_mib = 1024')),
     "guests[1].memroy_mib", "memory_mib"),
    (make(guests=GUESTS.replace('name = "g2"', 'name = "g2"\n"odd key" = 1')),
     'guests[2]."odd key"', "unknown key"),
    (make(root="topology = 1"), "topology", "unknown key"),
])
def test_unknown_keys(text: str, key: str, fragment: str) -> None:
    error(text, key, "unknown key", fragment)


@pytest.mark.parametrize(("adapter", "key", "fragment"), [
    ("total_vfs = -1", "adapter.total_vfs", "0..64"),
    ("total_vfs = 65", "adapter.total_vfs", "0..64"),
    ('total_vfs = "8"', "adapter.total_vfs", "must be an integer, not a string"),
    ("total_vfs = true", "adapter.total_vfs", "must be an integer, not a boolean"),
    ("total_vfs = 8.0", "adapter.total_vfs", "must be an integer, not a float"),
    ("total_vfs = [8]", "adapter.total_vfs", "not an array"),
    ("enabled_vfs = 9", "adapter.enabled_vfs", "0..8"),
    ("enabled_vfs = -1", "adapter.enabled_vfs", "0..8"),
    ("enabled_vfs = false", "adapter.enabled_vfs", "not a boolean"),
    ('timing = "slow"', "adapter.timing", '"fast", "spec"'),
    ("timing = 1", "adapter.timing", "must be a string"),
    ('base_mac = "02:ee:00:00:00"', "adapter.base_mac", "MAC address like"),
    ('base_mac = "02-ee-00-00-00-00"', "adapter.base_mac", "MAC address like"),
    ("base_mac = 2", "adapter.base_mac", "not an integer"),
    ('base_mac = "03:ee:00:00:00:00"', "adapter.base_mac", "multicast"),
    ('base_mac = "00:00:00:00:00:00"', "adapter.base_mac", "not a usable"),
    ('base_mac = "02:ff:ff:ff:ff:fa"', "adapter.base_mac", "first octet"),
    ("[adapter.vf.0]\nvlan = 4096", "adapter.vf.0.vlan", "0..4095"),
    ("[adapter.vf.0]\nvlan = -1", "adapter.vf.0.vlan", "0..4095"),
    ('[adapter.vf.0]\nvlan = "100"', "adapter.vf.0.vlan", "not a string"),
    ("[adapter.vf.0]\nmtu = 67", "adapter.vf.0.mtu", "68..9216"),
    ("[adapter.vf.0]\nmtu = 9217", "adapter.vf.0.mtu", "68..9216"),
    ("[adapter.vf.0]\nmtu = true", "adapter.vf.0.mtu", "not a boolean"),
    ("[adapter.vf.0]\nanti_spoof = 1", "adapter.vf.0.anti_spoof", "true or false"),
    ('[adapter.vf.0]\nmac = "01:00:5e:00:00:01"', "adapter.vf.0.mac", "multicast"),
    ('[adapter.vf.0]\nmac = "nope"', "adapter.vf.0.mac", "MAC address like"),
    ("[[adapter.vfs]]\nindex = -1", "adapter.vfs[0].index", ">= 0"),
    ('[[adapter.vfs]]\nindex = "1"', "adapter.vfs[0].index", "not a string"),
    ("[[adapter.vfs]]\nmtu = 1500", "adapter.vfs[0].index", "required"),
])
def test_bad_adapter_values(adapter: str, key: str, fragment: str) -> None:
    error(make(adapter), key, fragment)


@pytest.mark.parametrize(("top", "key", "fragment"), [
    ("[policy]\nmax_freezes = -1", "policy.max_freezes", "0..1000000"),
    ('[policy]\nmax_freezes = "5"', "policy.max_freezes", "not a string"),
    ("[policy]\nmax_freezes = true", "policy.max_freezes", "not a boolean"),
    ("[policy]\nwindow_s = 0", "policy.window_s", "> 0"),
    ("[policy]\nwindow_s = -1.5", "policy.window_s", "> 0"),
    ("[policy]\nwindow_s = nan", "policy.window_s", "finite"),
    ("[policy]\nwindow_s = inf", "policy.window_s", "finite"),
    ('[policy]\nwindow_s = "1h"', "policy.window_s", "must be a number"),
    ("[policy]\nwindow_s = true", "policy.window_s", "not a boolean"),
    ("[policy]\nretry_hint_ms = 0", "policy.retry_hint_ms", "1.."),
    ("[policy]\nretry_hint_ms = 2147483648", "policy.retry_hint_ms", "1.."),
    ("[policy]\nretry_hint_ms = 1.5", "policy.retry_hint_ms", "not a float"),
    ('[policy]\nerrinjct = "yes"', "policy.errinjct", "true or false"),
    ("[policy]\nerrinjct = 0", "policy.errinjct", "true or false"),
    ('[uplink]\nkind = "bridge"', "uplink.kind", '"auto", "tap", "queue"'),
    ('[uplink]\ntap_name = "a-very-long-name0"', "uplink.tap_name", "not a valid interface"),
    ('[uplink]\ntap_name = ""', "uplink.tap_name", "not a valid interface"),
    ('[uplink]\ntap_name = "a/b"', "uplink.tap_name", "not a valid interface"),
    ('[uplink]\ntap_name = "a b"', "uplink.tap_name", "not a valid interface"),
    ('[uplink]\ntap_name = ".."', "uplink.tap_name", "not a valid interface"),
    ("[uplink]\ntap_name = 0", "uplink.tap_name", "must be a string"),
])
def test_bad_policy_and_uplink_values(top: str, key: str, fragment: str) -> None:
    error(make(top=top), key, fragment)


def test_sections_must_be_tables() -> None:
    error(make(root="policy = 3"), "policy", "must be a table, not an integer")
    error(make(root="uplink = []"), "uplink", "must be a table, not an array")
    error(make(root='harness = "x"', where='"host"', guests=""), "harness",
          "must be a table, not a string")
    error(make(root='guests = ["svc"]', guests=""), "guests[0]", "must be a table, not a string")
    error(make(root="guests = 1", guests=""), "guests", "must be an array of tables")


@pytest.mark.parametrize(("g", "key", "fragment"), [
    (guests(("svc", '["pf"]'), ("g1", '["eth0"]')), "guests[1].functions[0]",
     'unknown function "eth0"'),
    (guests(("svc", '["pf"]'), ("g1", '["vf"]')), "guests[1].functions[0]", "unknown function"),
    (guests(("svc", '["pf"]'), ("g1", '["vf01"]')), "guests[1].functions[0]",
     "unknown function"),
    (guests(("svc", '["pf"]'), ("g1", '["VF0"]')), "guests[1].functions[0]",
     "unknown function"),
    (guests(("svc", '["pf"]'), ("g1", "[0]")), "guests[1].functions[0]",
     "not an integer"),
    (guests(("svc", '["pf"]'), ("g1", '["vf0", "vf3"]')), "guests[1].functions[1]",
     "vf3 is not enabled: adapter.enabled_vfs = 3 enables vf0..vf2"),
    (guests(("svc", '["pf"]'), ("g1", '["vf8"]')), "guests[1].functions[0]",
     "vf8 does not exist"),
    (guests(("svc", '["pf"]'), ("g1", '["vf0", "vf0"]')), "guests[1].functions[1]",
     'vf0 is already given to guest "g1" (guests[1].functions[0])'),
    (guests(("svc", '["pf"]'), ("g1", '["vf0"]'), ("g2", '["vf1", "vf0"]')),
     "guests[2].functions[1]", 'vf0 is already given to guest "g1"'),
    (guests(("svc", '["pf"]'), ("g1", '["pf"]')), "guests[1].functions[0]",
     'pf is already given to guest "svc"'),
    (guests(("svc", '["pf"]'), ("g1", "[]")), "guests[1].functions", "at least one"),
    (guests(("svc", '["pf"]'), ("g1", '"vf0"')), "guests[1].functions", "must be an array"),
    (guests(("svc", '["pf"]')) + '[[guests]]\nname = "g1"\n', "guests[1].functions",
     "required"),
    (guests(("svc", '["pf"]'), ("g1", '["vf0"]'), ("g1", '["vf1"]')), "guests[2].name",
     'duplicate guest name "g1" (also guests[1].name)'),
    (guests(("svc", '["pf"]'), ("G1", '["vf0"]')), "guests[1].name", "not a guest name"),
    (guests(("svc", '["pf"]'), ("1g", '["vf0"]')), "guests[1].name", "not a guest name"),
    (guests(("svc", '["pf"]'), ("g" * 17, '["vf0"]')), "guests[1].name", "not a guest name"),
    (guests(("svc", '["pf"]'), ("host", '["vf0"]')), "guests[1].name", "reserved"),
    (guests(("svc", '["pf"]')) + '[[guests]]\nfunctions = ["vf0"]\n', "guests[1].name",
     "required"),
    (guests(("svc", '["pf"]')) + '[[guests]]\nname = 7\nfunctions = ["vf0"]\n',
     "guests[1].name", "must be a string"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\nmemory_mib = 255'), "guests[1].memory_mib",
     "256..65536"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\nmemory_mib = -512'), "guests[1].memory_mib",
     "256..65536"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\nmemory_mib = "1G"'),
     "guests[1].memory_mib", "not a string"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\ncpus = 0'), "guests[1].cpus", "1..16"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\ncpus = true'), "guests[1].cpus",
     "not a boolean"),
    (GUESTS.replace('name = "g1"', 'name = "g1"\nhandlers = 1'), "guests[1].handlers",
     "true or false"),
    ('[guests]\nname = "svc"\nfunctions = ["pf"]\n', "guests", "[[guests]]"),
])
def test_bad_guests(g: str, key: str, fragment: str) -> None:
    error(make(guests=g), key, fragment)


def test_more_vfs_than_enabled() -> None:
    error(make("enabled_vfs = 2", guests=GUESTS), "guests[2].functions[1]",
          "vf2 is not enabled", "enables vf0..vf1")
    error(make("enabled_vfs = 1", guests=GUESTS), "guests[2].functions[0]",
          "enables only vf0")
    error(make("enabled_vfs = 0", guests=GUESTS), "guests[1].functions[0]",
          "enables no VFs")


@pytest.mark.parametrize(("adapter", "key", "fragment"), [
    ("[adapter.vf.3]\nmtu = 1500", "adapter.vf.3", "configures vf3, but adapter.enabled_vfs"),
    ("[adapter.vf.63]\nmtu = 1500", "adapter.vf.63", "configures vf63"),
    ("[[adapter.vfs]]\nindex = 5", "adapter.vfs[0]", "configures vf5"),
    ("[[adapter.vfs]]\nindex = 1\n[[adapter.vfs]]\nindex = 3", "adapter.vfs[1]",
     "configures vf3"),
    ("[adapter.vf.x]\nmtu = 1500", "adapter.vf.x", "VF number"),
    ("[adapter.vf.01]\nmtu = 1500", "adapter.vf.01", "VF number"),
    ('[adapter.vf."-1"]\nmtu = 1500', "adapter.vf.-1", "VF number"),
    ("vf = 1", "adapter.vf", "must be tables [adapter.vf.<n>]"),
    ("[adapter.vf]\n0 = 1", "adapter.vf.0", "must be a table, not an integer"),
    ("vfs = 1", "adapter.vfs", "must be an array of tables"),
])
def test_vf_config_index(adapter: str, key: str, fragment: str) -> None:
    error(make(adapter), key, fragment)


def test_vf_config_given_twice() -> None:
    error(make("[adapter.vf.1]\nmtu = 1500\n[[adapter.vfs]]\nindex = 1"), "adapter.vfs[0]",
          "vf1 is configured twice (also at adapter.vf.1)")
    error(make("[[adapter.vfs]]\nindex = 2\n[[adapter.vfs]]\nindex = 2"), "adapter.vfs[1]",
          "configured twice")


@pytest.mark.parametrize(("adapter", "key", "fragment"), [
    ('[adapter.vf.0]\nmac = "02:ee:00:00:00:00"', "adapter.vf.0.mac", "the PF's"),
    ('[adapter.vf.0]\nmac = "02:ee:00:00:00:02"', "adapter.vf.0.mac", "vf1's default"),
    ('[adapter.vf.0]\nmac = "02:ee:00:00:00:07"', "adapter.vf.0.mac", "vf6's default"),
    ('[adapter.vf.0]\nmac = "02:ee:00:00:01:00"\n[adapter.vf.2]\nmac = "02:ee:00:00:01:00"',
     "adapter.vf.2.mac", "vf0's MAC (adapter.vf.0.mac)"),
])
def test_duplicate_macs(adapter: str, key: str, fragment: str) -> None:
    error(make(adapter), key, "is already", fragment)


def test_a_vf_may_take_its_own_default_mac_or_a_freed_one() -> None:
    t = parse_topology(make('[adapter.vf.0]\nmac = "02:ee:00:00:00:01"\n'
                            '[adapter.vf.1]\nmac = "02:ee:00:00:00:20"\n'
                            '[adapter.vf.2]\nmac = "02:ee:00:00:00:02"'))
    assert t.vf_config(2).mac == bytes.fromhex("02ee00000002")  # vf1's default, unused


@pytest.mark.parametrize(("where", "g", "top", "key", "fragment"), [
    ('"nobody"', GUESTS, "", "pf_driver.where", 'no guest named "nobody"'),
    ('"g1"', GUESTS, "", "pf_driver.where", 'guest "g1" does not hold "pf" (guest "svc" does)'),
    ('"svc"', guests(("svc", '["vf0"]'), ("g1", '["vf1"]')), "", "pf_driver.where",
     'no guest does'),
    ('"g1"', guests(("svc", '["vf0"]'), ("g1", '["vf1"]')), "", "pf_driver.where",
     'no guest does'),
    ('"host"', GUESTS, "", "guests[0].functions[0]", '"pf" belongs to the host'),
    ('"host"', guests(("g1", '["vf0"]')), "[harness]\nvf_drivers = 1",
     "guests[0].functions[0]", "vf0 is driven by the host"),
    ('"host"', guests(("g1", '["vf2"]')), "", "guests[0].functions[0]",
     "harness.vf_drivers = 3 runs drivers for vf0..vf2"),
    ('"host"', "", "[harness]\nvf_drivers = 4", "harness.vf_drivers", "0..3"),
    ('"host"', "", "[harness]\nvf_drivers = -1", "harness.vf_drivers", "0..3"),
    ('"host"', "", '[harness]\nvf_drivers = "all"', "harness.vf_drivers", "not a string"),
    ('"svc"', GUESTS, "[harness]\nvf_drivers = 1", "harness", "only for harness mode"),
    ('"svc"', "", "", "guests", "no guests"),
    ("1", GUESTS, "", "pf_driver.where", "must be a string"),
])
def test_pf_driver_placement(where: str, g: str, top: str, key: str, fragment: str) -> None:
    error(make(where=where, top=top, guests=g), key, fragment)


def test_pf_driver_required() -> None:
    error(f"[adapter]\nenabled_vfs = 3\n{GUESTS}", "pf_driver.where", "required")
    error(make().replace('where = "svc"', ""), "pf_driver.where", "required")
    error(make(root='pf_driver = "svc"').replace('[pf_driver]\nwhere = "svc"', ""),
          "pf_driver", "must be a table")
