"""One set of limits: the topology file refuses, at parse and naming the file and the key,
every value the configuration it fills would refuse later (each limit is declared once,
next to its configuration field: eeh_abi.limits)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from device_model import AdapterConfig
from device_model.errors import ConfigurationError
from eeh_abi.limits import Limit, limits
from eeh_abi.vf_settings import VfSettings
from eeh_sriov.topology import (
    LIMITED_KEYS,
    GuestSpec,
    TopologyError,
    key_limit,
    load_topology,
    parse_topology,
)
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.pe.policy import PolicyError

GUESTS = """
[[guests]]
name = "svc"
functions = ["pf"]

[[guests]]
name = "g1"
functions = ["vf0"]
"""

# Every configuration dataclass that declares limits, and the limited fields a topology
# file does not set (the adapter's identity and routing are the model's, not the user's).
CONFIGS: tuple[type[Any], ...] = (AdapterConfig, PolicyConfig, VfSettings, GuestSpec)
NOT_IN_TOPOLOGIES = {(AdapterConfig, f) for f in (
    "vendor_id", "device_id", "vf_device_id", "bus", "first_vf_offset", "vf_stride")}


def topology(key: str, value: str) -> list[tuple[str, str]]:
    """TOML setting the limited key `key` (a LIMITED_KEYS path) to `value`, with the
    concrete key path each form of it is reported as."""
    section, name = key.rsplit(".", 1)

    def text(adapter: str = "", policy: str = "", guests: str = GUESTS) -> str:
        return (f"[adapter]\n{adapter}\n[policy]\n{policy}\n[pf_driver]\nwhere = \"svc\"\n"
                f"{guests}")

    forms: dict[str, list[tuple[str, str]]] = {
        "adapter": [(text(adapter=f"{name} = {value}"), key)],
        "adapter.vf.<n>": [
            (text(adapter=f"enabled_vfs = 2\n[adapter.vf.1]\n{name} = {value}"),
             f"adapter.vf.1.{name}"),
            (text(adapter=f"enabled_vfs = 2\n[[adapter.vfs]]\nindex = 1\n{name} = {value}"),
             f"adapter.vfs[0].{name}")],
        "policy": [(text(policy=f"{name} = {value}"), key)],
        "guests[<i>]": [(text(guests=GUESTS.replace('name = "g1"',
                                                    f'name = "g1"\n{name} = {value}')),
                         f"guests[1].{name}")],
    }
    return forms[section]


def outside(lim: Limit) -> list[int | float]:
    """The values just outside `lim`, computed here from its ends (not by Limit)."""
    out: list[int | float] = []
    if lim.lo is not None:
        out.append(lim.lo if lim.lo_open else lim.lo - 1)
    if lim.hi is not None:
        out.append(lim.hi + 1 if lim.integer else lim.hi * 1.5)
    return out


def inside(lim: Limit) -> list[int | float]:
    out: list[int | float] = []
    if lim.lo is not None:
        out.append(lim.lo + (1 if lim.integer else 0.5) if lim.lo_open else lim.lo)
    if lim.hi is not None:
        out.append(lim.hi)
    return out


def toml(value: int | float) -> str:
    return repr(value)


# ---- the finding: a retry hint the policy refuses passed the topology

def test_the_policy_limit_fails_at_parse_naming_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(f'[policy]\nretry_hint_ms = 5000000\n[pf_driver]\nwhere = "svc"\n{GUESTS}')
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    e = info.value
    assert str(e) == (f"topology {path}: policy.retry_hint_ms: "
                      "must be 1..3600000, not 5000000")
    assert (e.source, e.key) == (str(path), "policy.retry_hint_ms")
    # the policy refuses it in the same words (one limit, one message)
    with pytest.raises(PolicyError) as perr:
        PolicyConfig(retry_hint_ms=5_000_000)
    assert str(perr.value) == "policy retry_hint_ms: must be 1..3600000, not 5000000"


@pytest.mark.parametrize(("key", "value", "message"), [
    # written by hand: what a user reads
    ("policy.retry_hint_ms", "3600001", "must be 1..3600000, not 3600001"),
    ("policy.max_freezes", "1000001", "must be 0..1000000, not 1000001"),
    ("policy.window_s", "0.0", "must be > 0 and <= 315360000, not 0.0"),
    ("policy.window_s", "315360001", "must be > 0 and <= 315360000, not 315360001"),
    ("policy.max_reset_failures", "0", "must be 1..100, not 0"),
    ("adapter.total_vfs", "65", "must be 0..64, not 65"),
    ("adapter.vf.<n>.mtu", "9217", "must be 68..9216, not 9217"),
    ("adapter.vf.<n>.vlan", "4096", "must be 0..4095, not 4096"),
    ("guests[<i>].memory_mib", "255", "must be 256..65536, not 255"),
    ("guests[<i>].cpus", "17", "must be 1..16, not 17"),
])
def test_messages(key: str, value: str, message: str) -> None:
    for text, path in topology(key, value):
        with pytest.raises(TopologyError) as info:
            parse_topology(text, "t.toml")
        assert str(info.value) == f"topology t.toml: {path}: {message}"


# ---- every limit, walked

def test_every_limited_field_is_a_topology_key_or_said_not_to_be() -> None:
    declared = {(cls, name) for cls in CONFIGS for name in limits(cls)}
    assert declared == set(LIMITED_KEYS.values()) | NOT_IN_TOPOLOGIES
    for key in LIMITED_KEYS:  # and the parser has a way to set each (no key left unread)
        assert topology(key, "1")


WALK = [(key, v) for key in LIMITED_KEYS for v in outside(key_limit(key))]


@pytest.mark.parametrize(("key", "value"), WALK, ids=[f"{k}={v}" for k, v in WALK])
def test_just_outside_each_limit_is_refused_with_the_key(key: str, value: int | float) -> None:
    lim = key_limit(key)
    for text, path in topology(key, toml(value)):
        with pytest.raises(TopologyError) as info:
            parse_topology(text, "t.toml")
        assert info.value.key == path, str(info.value)
        assert info.value.reason == f"must be {lim.span()}, not {value!r}"


INSIDE = [(key, v) for key in LIMITED_KEYS for v in inside(key_limit(key))]


@pytest.mark.parametrize(("key", "value"), INSIDE, ids=[f"{k}={v}" for k, v in INSIDE])
def test_the_ends_of_each_limit_are_accepted(key: str, value: int | float) -> None:
    for text, path in topology(key, toml(value)):
        try:
            parse_topology(text, "t.toml")
        except TopologyError as e:  # total_vfs = 0 leaves enabled_vfs = 2 too many
            assert e.key != path, str(e)


# ---- the values the parser lets through, the configurations accept

READ_BACK: dict[str, Callable[[Any], Any]] = {
    "adapter.total_vfs": lambda t: t.platform_config().total_vfs,
    "adapter.vf.<n>.vlan": lambda t: t.platform_config().vf_settings[1].vlan,
    "adapter.vf.<n>.mtu": lambda t: t.platform_config().vf_settings[1].mtu,
    "guests[<i>].memory_mib": lambda t: t.guest("g1").memory_mib,
    "guests[<i>].cpus": lambda t: t.guest("g1").cpus,
}


@pytest.mark.parametrize("key", sorted(LIMITED_KEYS))
def test_a_value_at_the_limit_reaches_the_platform_config(key: str) -> None:
    value = key_limit(key).hi
    assert value is not None
    name = key.rsplit(".", 1)[1]
    read = READ_BACK.get(key, lambda t: getattr(t.platform_config().policy, name))
    for text, _ in topology(key, toml(value)):
        if key == "adapter.total_vfs":  # 64 VFs, one enabled
            text = text.replace("[adapter]\n", "[adapter]\nenabled_vfs = 1\n")
        assert read(parse_topology(text)) == value


def test_the_configurations_refuse_what_the_topology_refuses() -> None:
    """The same limits, checked by the configuration itself when built by hand."""
    with pytest.raises(ConfigurationError, match=r"total_vfs: must be 0\.\.64, not 65"):
        AdapterConfig(total_vfs=65)
    with pytest.raises(ValueError, match=r"VF setting mtu: must be 68\.\.9216, not 67"):
        VfSettings(mtu=67)
    with pytest.raises(PolicyError, match=r"window_s: must be a finite number"):
        PolicyConfig(window_s=float("nan"))
    with pytest.raises(PolicyError, match="max_freezes: must be an integer"):
        PolicyConfig(max_freezes=True)


def test_one_default_for_total_vfs() -> None:
    """Topology -> PlatformConfig -> AdapterHostConfig -> AdapterConfig: one default (8),
    the adapter's, every VF enabled."""
    from hypervisor_shim.adapter_host import AdapterHostConfig
    from hypervisor_shim.platform import PlatformConfig

    t = parse_topology('[pf_driver]\nwhere = "a"\n[[guests]]\nname = "a"\nfunctions = ["pf"]')
    defaults = [t.adapter.total_vfs, PlatformConfig().total_vfs, AdapterHostConfig().total_vfs,
                AdapterConfig().total_vfs]
    assert defaults == [8, 8, 8, 8]
    assert [t.adapter.enabled_vfs, PlatformConfig().enabled_vfs,
            AdapterHostConfig().enabled_vfs] == [8, 8, 8]
    assert t.platform_config().policy == PolicyConfig()
    assert dataclasses.replace(t.platform_config(), owners={}, vf_settings={}, handlers={},
                               uplink="queue") == PlatformConfig()
