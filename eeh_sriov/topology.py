"""The topology of a run: one TOML file, checked in full before anything starts.

    topo = load_topology(DEFAULT_TOPOLOGY)
    topo.owner_of("vf1")          # "g2"; "host" for host-run drivers; None if unassigned
    topo.functions_of("g2")       # ("vf1", "vf2")
    topo.vf_config(1)             # VfConfig(index=1, mac=..., vlan=100, mtu=1500, ...)

Every mistake is one `TopologyError` naming the file and the key at fault as a dotted path
(`adapter.enabled_vfs`, `guests[1].functions[0]`, `adapter.vf.3.mtu`); unknown keys are
errors too, so a typo never silently falls back to a default. The parsed objects are frozen
dataclasses; build them with `parse_topology` / `load_topology`, which validate, not by hand.

One set of defaults and limits: a key's default and limit are those of the configuration
field it fills (`LIMITED_KEYS`: `device_model.AdapterConfig`, `hypervisor_shim.pe.
PolicyConfig`, `eeh_abi.vf_settings.VfSettings`, `GuestSpec`), declared there once
(`eeh_abi.limits`), so what parses here is what the platform accepts, and the platform's
configuration (`Topology.platform_config`) is built from checked values only.

File format (every table and every key with a default may be left out):

`[adapter]`
    `total_vfs`    VFs the adapter has (SR-IOV TotalVFs), 0..64; default 8.
    `enabled_vfs`  VFs the platform enables at start (NumVFs), 0..total_vfs; default
                   total_vfs. vf0..vf(enabled_vfs - 1) exist at start.
    `timing`       "fast" (resets complete at once) or "spec" (real hardware's delays);
                   default "fast". See `device_model.reset.ResetTiming`.
    `base_mac`     "02:ee:00:00:00:00" form, unicast; function n gets base_mac + n, so
                   the PF has base_mac and VF i has base_mac + 1 + i. Default as shown.
`[adapter.vf.<n>]` (or `[[adapter.vfs]]` with `index = <n>`), n < enabled_vfs
    Configuration the adapter driver applies to VF n (and restores after a recovery):
    `mac` (unicast; default base_mac + 1 + n), `vlan` (port VLAN 0..4095; absent:
    untagged), `mtu` (68..9216; default 1500), `anti_spoof` (bool; default false).
    The PF and every VF must end up with distinct MACs.
`[uplink]`
    `kind`         "auto" (a TAP interface when running as root, else an in-process
                   queue), "tap" or "queue"; default "auto".
    `tap_name`     the TAP interface's name (a valid Linux interface name, at most 15
                   characters); default "eehup0".
`[policy]`
    `max_freezes`  freezes of one PE allowed within the window; one more makes the PE
                   permanently failed (Linux's eeh_max_freezes); 0..1000000, default 5.
    `window_s`     the window in seconds, > 0 and <= 315360000 (ten years); default 3600.0.
    `retry_hint_ms` the "unavailable, retry in" hint of PE state 5, 1..3600000; default 1000.
    `max_reset_failures` failed resets of one PE in a row that make it (and every PE
                   below it) permanently failed, 1..100; default 3 (Linux tries 3 times).
    `errinjct`     whether guests may call ibm,errinjct on their own PEs; default false.
    `adapter_driver_deadline_ms` while the adapter PE is frozen or recovering, the
                   longest the adapter driver may go without a recovery step before it is
                   taken for lost, 100..3600000; default 10000 (hypervisor_shim.pe.policy
                   says why).
    `on_adapter_driver_lost` what the platform does when the adapter driver is lost
                   (its channel closed, its guest died, or the deadline passed):
                   "restart-guest" (restart the service guest; its driver recovers the
                   adapter at probe; where there is no guest, as in harness mode, this is
                   "platform-recover"), "platform-recover" (the platform resets and
                   reconfigures the adapter itself) or "fail" (the adapter and every VF
                   permanently failed). Default "restart-guest".
`[pf_driver]`
    `where`        required: the name of the guest that holds "pf" and runs the adapter
                   driver, or "host" (harness mode: the adapter driver runs on the host,
                   and no guest may hold "pf").
`[harness]` (only with `pf_driver.where = "host"`)
    `vf_drivers`   VF drivers run on the host, 0..enabled_vfs; default enabled_vfs. They
                   drive vf0..vf(vf_drivers - 1), which no guest may then hold.
`[[guests]]` (may be absent only in harness mode)
    `name`         unique, [a-z][a-z0-9-]{0,15}; "host" is reserved.
    `functions`    non-empty array of "pf" and "vfN" (N < enabled_vfs); a function
                   belongs to at most one guest.
    `memory_mib`   256..65536; default 512.
    `cpus`         1..16; default 1.
    `handlers`     whether the VF drivers in this guest have error handlers; a driver
                   without them is removed and re-added by the platform. Default true.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from device_model.adapter_config import DEFAULT_BASE_MAC, AdapterConfig
from eeh_abi.limits import Limit, limits
from eeh_abi.vf_settings import VfSettings, format_mac
from eeh_sriov.topology_types import (
    _TIMINGS,
    _VF_NAME,
    HOST,
    PF,
    AdapterSpec,
    GuestSpec,
    HarnessSpec,
    PfDriverSpec,
    TimingName,
    Topology,
    UplinkKind,
    UplinkSpec,
    VfConfig,
)
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe import OnDriverLost, PolicyConfig

__all__ = [  # the topology's types (eeh_sriov.topology_types) and what reads them
    "DEFAULT_TOPOLOGY", "HOST", "LIMITED_KEYS", "PF", "AdapterSpec", "GuestSpec",
    "HarnessSpec", "PfDriverSpec", "TimingName", "Topology", "TopologyError", "UplinkKind",
    "UplinkSpec", "VfConfig", "format_mac", "key_default", "key_limit", "load_topology",
    "parse_topology",
]

DEFAULT_TOPOLOGY: Path = Path(__file__).parent / "topologies" / "default.toml"

_UPLINK_KINDS = ("auto", "tap", "queue")
_GUEST_NAME = re.compile(r"[a-z][a-z0-9-]{0,15}")
_INDEX = re.compile(r"0|[1-9][0-9]*")
_MAC = re.compile(r"[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_IFNAMSIZ = 16


class TopologyError(ShimError):
    """A topology file that cannot be used: `key` is the dotted path at fault ("" when the
    file as a whole is, e.g. invalid TOML), `reason` says what is wrong."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        where = f"{key}: " if key else ""
        super().__init__(f"topology {source}: {where}{reason}")
        self.source = source
        self.key = key
        self.reason = reason


# ---- the keys with a limit

# Every key whose value has a limit, by its path (<n>: a VF's number, in either form of
# its table; <i>: a guest's place), and the configuration field that declares the limit
# and the default (eeh_abi.limits). The parser takes limits and defaults from here only.
LIMITED_KEYS: dict[str, tuple[type[Any], str]] = {
    "adapter.total_vfs": (AdapterConfig, "total_vfs"),
    "adapter.vf.<n>.vlan": (VfSettings, "vlan"),
    "adapter.vf.<n>.mtu": (VfSettings, "mtu"),
    "policy.max_freezes": (PolicyConfig, "max_freezes"),
    "policy.window_s": (PolicyConfig, "window_s"),
    "policy.retry_hint_ms": (PolicyConfig, "retry_hint_ms"),
    "policy.max_reset_failures": (PolicyConfig, "max_reset_failures"),
    "policy.adapter_driver_deadline_ms": (PolicyConfig, "adapter_driver_deadline_ms"),
    "guests[<i>].memory_mib": (GuestSpec, "memory_mib"),
    "guests[<i>].cpus": (GuestSpec, "cpus"),
}


def key_limit(key: str) -> Limit:
    """The limit of a key of `LIMITED_KEYS` (as the configuration field declares it)."""
    cls, name = LIMITED_KEYS[key]
    return limits(cls)[name]


def key_default(key: str) -> Any:
    """The default of a key of `LIMITED_KEYS` (the configuration field's)."""
    cls, name = LIMITED_KEYS[key]
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


# ---- loading


def load_topology(path: Path) -> Topology:
    """Read and validate a topology file; every problem is a TopologyError."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise TopologyError(str(path), "", f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise TopologyError(str(path), "", f"not UTF-8 text: {e}") from e
    return parse_topology(text, str(path))


def parse_topology(text: str, source: str = "<string>") -> Topology:
    """Parse and validate a topology given as TOML text; `source` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(source, "", f"invalid TOML: {e}") from e
    try:
        return _parse(data, source)
    except _Invalid as e:
        raise TopologyError(source, e.key, e.reason) from None


class _Invalid(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason


def _join(path: str, key: str) -> str:
    if not _BARE_KEY.fullmatch(key):
        key = json.dumps(key)  # a TOML basic string for keys that need quotes
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def _show(value: object) -> str:
    return json.dumps(value) if isinstance(value, (str, bool)) else repr(value)


class _Table:
    """One TOML table at a dotted path; refuses keys it does not know on sight."""

    def __init__(self, data: object, path: str, allowed: Sequence[str],
                 template: str | None = None) -> None:
        if not isinstance(data, dict):
            raise _Invalid(path, f"must be a table, not {_kind(data)}")
        self.data: dict[str, object] = data
        self.path = path
        self.template = path if template is None else template  # its path in LIMITED_KEYS
        for key in data:
            if key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                guess = f"did you mean {hint[0]!r}? " if hint else ""
                raise _Invalid(self.key(key),
                               f"unknown key; {guess}known here: {', '.join(allowed)}")

    def key(self, name: str) -> str:
        return _join(self.path, name)

    def get(self, name: str) -> object | None:
        return self.data.get(name)  # TOML has no null: None means absent

    def integer(self, name: str, default: int | None, lo: int, hi: int | None = None) -> int:
        value = self.get(name)
        if value is None:
            if default is None:
                raise _Invalid(self.key(name), "required")
            return default
        return _int(self.key(name), value, lo, hi)

    def limited(self, name: str, default: Any = None) -> Any:
        """A key of LIMITED_KEYS: its value within the configuration field's limit, or (absent)
        `default`, else the field's default."""
        key = _join(self.template, name)
        value = self.get(name)
        if value is None:
            return key_default(key) if default is None else default
        return _limited(self.key(name), value, key_limit(key))

    def flag(self, name: str, default: bool) -> bool:
        value = self.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _Invalid(self.key(name),
                           f"must be true or false, not {_kind(value)} ({_show(value)})")
        return value

    def string(self, name: str, default: str | None) -> str:
        value = self.get(name)
        if value is None:
            if default is None:
                raise _Invalid(self.key(name), "required")
            return default
        if not isinstance(value, str):
            raise _Invalid(self.key(name), f"must be a string, not {_kind(value)} ({value!r})")
        return value

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        value = self.string(name, default)
        if value not in choices:
            raise _Invalid(self.key(name), f"must be one of {', '.join(map(_show, choices))}, "
                                           f"not {_show(value)}")
        return value

    def table(self, name: str, allowed: Sequence[str]) -> _Table:
        value = self.get(name)
        return _Table({} if value is None else value, self.key(name), allowed)

    def tables(self, name: str) -> list[tuple[str, object]]:
        """An array of tables (`[[name]]`), as (path, item) pairs; absent: empty."""
        value = self.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _Invalid(self.key(name), f"must be an array of tables ([[{name}]]), "
                                           f"not {_kind(value)}")
        return [(f"{self.key(name)}[{i}]", item) for i, item in enumerate(value)]


def _limited(key: str, value: object, lim: Limit) -> Any:
    """`value` if it is within `lim` (an int, or a float for a limit of numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            (lim.integer and not isinstance(value, int)):
        what = "an integer" if lim.integer else "a number"
        raise _Invalid(key, f"must be {what}, not {_kind(value)} ({_show(value)})")
    bad = lim.problem(value)
    if bad is not None:
        raise _Invalid(key, bad)
    return value if lim.integer else float(value)


def _int(key: str, value: object, lo: int, hi: int | None) -> int:
    """An integer in lo..hi where the bounds depend on other keys (enabled_vfs <= total_vfs)."""
    result: int = _limited(key, value, Limit(lo, hi))
    return result


def _mac(key: str, value: object) -> bytes:
    if not isinstance(value, str) or not _MAC.fullmatch(value):
        shown = _show(value) if isinstance(value, str) else _kind(value)
        raise _Invalid(key, f'must be a MAC address like "02:ee:00:00:00:00", not {shown}')
    mac = bytes.fromhex(value.replace(":", ""))
    if mac[0] & 1:
        raise _Invalid(key, f"{value} is a multicast address; a unicast one is needed "
                            "(the low bit of the first octet clear)")
    if not any(mac):
        raise _Invalid(key, "00:00:00:00:00:00 is not a usable MAC address")
    return mac


def _enabled_range(enabled: int) -> str:
    if enabled == 0:
        return "adapter.enabled_vfs = 0 enables no VFs"
    if enabled == 1:
        return "adapter.enabled_vfs = 1 enables only vf0"
    return f"adapter.enabled_vfs = {enabled} enables vf0..vf{enabled - 1}"


# ---- sections

_TOP_KEYS = ("adapter", "uplink", "policy", "pf_driver", "harness", "guests")
_POLICY_KEYS = ("max_freezes", "window_s", "retry_hint_ms", "max_reset_failures", "errinjct",
                "adapter_driver_deadline_ms", "on_adapter_driver_lost")
_ADAPTER_KEYS = ("total_vfs", "enabled_vfs", "timing", "base_mac", "vf", "vfs")
_VF_KEYS = ("mac", "vlan", "mtu", "anti_spoof")
_GUEST_KEYS = ("name", "functions", "memory_mib", "cpus", "handlers")


def _parse(data: dict[str, object], source: str) -> Topology:
    top = _Table(data, "", _TOP_KEYS)
    adapter = _parse_adapter(top.table("adapter", _ADAPTER_KEYS))
    uplink = _parse_uplink(top.table("uplink", ("kind", "tap_name")))
    policy = _parse_policy(top.table("policy", _POLICY_KEYS))
    guests = _parse_guests(top, adapter)
    where = top.table("pf_driver", ("where",)).string("where", None)
    harness = _parse_harness(top, adapter, where)
    _check_ownership(guests, where, harness)
    return Topology(source=source, adapter=adapter, uplink=uplink, policy=policy,
                    pf_driver=PfDriverSpec(where), guests=tuple(g for g, _ in guests),
                    harness=harness)


def _parse_adapter(t: _Table) -> AdapterSpec:
    total: int = t.limited("total_vfs")
    enabled = t.integer("enabled_vfs", total, 0, total)
    timing: TimingName = "spec" if t.choice("timing", "fast", tuple(_TIMINGS)) == "spec" \
        else "fast"
    raw_mac = t.get("base_mac")
    base_mac = DEFAULT_BASE_MAC if raw_mac is None else _mac(t.key("base_mac"), raw_mac)
    base = int.from_bytes(base_mac, "big")
    if base + total >= 1 << 48 or (base + total) >> 40 != base >> 40:
        raise _Invalid(t.key("base_mac"), f"base_mac + {total} (the last VF's default MAC) "
                                          "must not change the first octet")
    given: dict[int, tuple[str, VfConfig]] = {}

    def add(path: str, index: int, vt: _Table) -> None:
        if index >= enabled:
            raise _Invalid(path, f"configures vf{index}, but {_enabled_range(enabled)}")
        if index in given:
            raise _Invalid(path, f"vf{index} is configured twice (also at {given[index][0]})")
        mac = vt.get("mac")
        spoof = vt.get("anti_spoof")
        given[index] = (path, VfConfig(
            index=index,
            mac=None if mac is None else _mac(vt.key("mac"), mac),
            vlan=vt.limited("vlan"),
            mtu=vt.limited("mtu"),
            anti_spoof=None if spoof is None else vt.flag("anti_spoof", False),
        ))

    by_key = t.get("vf")
    if by_key is not None:
        if not isinstance(by_key, dict):
            raise _Invalid(t.key("vf"), "must be tables [adapter.vf.<n>], one per VF, "
                                        f"not {_kind(by_key)}")
        for name, item in by_key.items():
            path = _join(t.key("vf"), name)
            if not _INDEX.fullmatch(name):
                raise _Invalid(path, "must be a VF number: [adapter.vf.<n>], e.g. [adapter.vf.0]")
            add(path, int(name), _Table(item, path, _VF_KEYS, "adapter.vf.<n>"))
    for path, item in t.tables("vfs"):
        vt = _Table(item, path, ("index", *_VF_KEYS), "adapter.vf.<n>")
        add(path, vt.integer("index", None, 0), vt)

    _check_macs(base_mac, total, given)
    vfs = tuple(cfg for _, (_, cfg) in sorted(given.items()))
    return AdapterSpec(total, enabled, timing, base_mac, vfs)


def _check_macs(base_mac: bytes, total: int,
                given: dict[int, tuple[str, VfConfig]]) -> None:
    base = int.from_bytes(base_mac, "big")
    owners: dict[bytes, str] = {base_mac: "the PF's MAC (adapter.base_mac)"}
    for i in range(total):  # defaults of VFs not enabled yet too: they may be enabled later
        if i not in given or given[i][1].mac is None:
            owners.setdefault((base + 1 + i).to_bytes(6, "big"),
                              f"vf{i}'s default MAC (adapter.base_mac + {1 + i})")
    for i, (path, cfg) in sorted(given.items()):
        if cfg.mac is None:
            continue
        if cfg.mac in owners:
            raise _Invalid(f"{path}.mac", f"{format_mac(cfg.mac)} is already "
                                          f"{owners[cfg.mac]}; each function needs its own")
        owners[cfg.mac] = f"vf{i}'s MAC ({path}.mac)"


def _parse_uplink(t: _Table) -> UplinkSpec:
    raw = t.choice("kind", "auto", _UPLINK_KINDS)
    kind: UplinkKind = "tap" if raw == "tap" else "queue" if raw == "queue" else "auto"
    name = t.string("tap_name", "eehup0")
    if (not name or len(name) >= _IFNAMSIZ or name in (".", "..")
            or any(c in name for c in "/:%") or any(c.isspace() for c in name)):
        raise _Invalid(t.key("tap_name"), f"{_show(name)} is not a valid interface name "
                                          f"(1..{_IFNAMSIZ - 1} characters, none of '/', ':', "
                                          "'%' or white space, not '.' or '..')")
    return UplinkSpec(kind, name)


def _parse_policy(t: _Table) -> PolicyConfig:
    return PolicyConfig(
        max_freezes=t.limited("max_freezes"),
        window_s=t.limited("window_s"),
        retry_hint_ms=t.limited("retry_hint_ms"),
        max_reset_failures=t.limited("max_reset_failures"),
        errinjct=t.flag("errinjct", PolicyConfig.errinjct),
        adapter_driver_deadline_ms=t.limited("adapter_driver_deadline_ms"),
        on_adapter_driver_lost=OnDriverLost(t.choice(
            "on_adapter_driver_lost", PolicyConfig.on_adapter_driver_lost,
            [o.value for o in OnDriverLost])),
    )


def _parse_function(key: str, value: object, adapter: AdapterSpec) -> str:
    if not isinstance(value, str):
        raise _Invalid(key, f'must be a function name ("pf" or "vfN"), not {_kind(value)}')
    if value == PF:
        return value
    m = _VF_NAME.fullmatch(value)
    if m is None:
        raise _Invalid(key, f'unknown function {_show(value)}: functions are "pf" and '
                            f'"vf0".."vf{adapter.total_vfs - 1}"')
    n = int(m.group(1))
    if n >= adapter.total_vfs:
        raise _Invalid(key, f"{value} does not exist: the adapter has {adapter.total_vfs} VFs "
                            "(adapter.total_vfs)")
    if n >= adapter.enabled_vfs:
        raise _Invalid(key, f"{value} is not enabled: {_enabled_range(adapter.enabled_vfs)}")
    return value


def _parse_guests(top: _Table, adapter: AdapterSpec) -> list[tuple[GuestSpec, str]]:
    guests: list[tuple[GuestSpec, str]] = []
    names: dict[str, str] = {}
    holders: dict[str, tuple[str, str]] = {}  # function -> (guest, the key that gave it)
    for path, item in top.tables("guests"):
        t = _Table(item, path, _GUEST_KEYS, "guests[<i>]")
        name = t.string("name", None)
        if not _GUEST_NAME.fullmatch(name):
            raise _Invalid(t.key("name"), f"{_show(name)} is not a guest name "
                                          "([a-z][a-z0-9-]{0,15})")
        if name == HOST:
            raise _Invalid(t.key("name"), '"host" is reserved (pf_driver.where = "host" '
                                          "means the host)")
        if name in names:
            raise _Invalid(t.key("name"), f"duplicate guest name {_show(name)} "
                                          f"(also {names[name]})")
        names[name] = t.key("name")
        raw = t.get("functions")
        if raw is None:
            raise _Invalid(t.key("functions"), 'required: a non-empty array such as ["vf0"]')
        if not isinstance(raw, list):
            raise _Invalid(t.key("functions"), f"must be an array of function names, "
                                               f"not {_kind(raw)}")
        if not raw:
            raise _Invalid(t.key("functions"), "must name at least one function")
        functions: list[str] = []
        for j, value in enumerate(raw):
            fkey = f"{t.key('functions')}[{j}]"
            function = _parse_function(fkey, value, adapter)
            if function in holders:
                other, okey = holders[function]
                raise _Invalid(fkey, f"{function} is already given to guest {_show(other)} "
                                     f"({okey}); a function belongs to one guest at most")
            holders[function] = (name, fkey)
            functions.append(function)
        guests.append((GuestSpec(
            name=name,
            functions=tuple(functions),
            memory_mib=t.limited("memory_mib"),
            cpus=t.limited("cpus"),
            handlers=t.flag("handlers", True),
        ), path))
    return guests


def _parse_harness(top: _Table, adapter: AdapterSpec, where: str) -> HarnessSpec | None:
    if where != HOST:
        if top.get("harness") is not None:
            raise _Invalid("harness", 'only for harness mode (pf_driver.where = "host"); '
                                      f"here the adapter driver runs in guest {_show(where)}")
        return None
    t = top.table("harness", ("vf_drivers",))
    return HarnessSpec(t.integer("vf_drivers", adapter.enabled_vfs, 0, adapter.enabled_vfs))


def _check_ownership(guests: list[tuple[GuestSpec, str]], where: str,
                     harness: HarnessSpec | None) -> None:
    def key_of(path: str, g: GuestSpec, function: str) -> str:
        return f"{path}.functions[{g.functions.index(function)}]"

    if harness is not None:
        for g, path in guests:
            for function in g.functions:
                if function == PF:
                    raise _Invalid(key_of(path, g, function),
                                   '"pf" belongs to the host: pf_driver.where = "host"')
                n = int(function[2:])
                if n < harness.vf_drivers:
                    raise _Invalid(key_of(path, g, function),
                                   f"{function} is driven by the host: harness.vf_drivers = "
                                   f"{harness.vf_drivers} runs drivers for "
                                   f"vf0..vf{harness.vf_drivers - 1}")
        return
    if not guests:
        raise _Invalid("guests", 'no guests; give "pf" to one, or set pf_driver.where = "host" '
                                 "for harness mode")
    names = [g.name for g, _ in guests]
    if where not in names:
        raise _Invalid("pf_driver.where", f"no guest named {_show(where)} (guests: "
                                          f"{', '.join(names)}); name one, or \"host\"")
    holder = next((g.name for g, _ in guests if PF in g.functions), None)
    if holder is None:
        raise _Invalid("pf_driver.where", f'guest {_show(where)} does not hold "pf", and no '
                                          'guest does: add "pf" to its functions, or set '
                                          'where = "host"')
    if holder != where:
        raise _Invalid("pf_driver.where", f'guest {_show(where)} does not hold "pf" '
                                          f"(guest {_show(holder)} does); the adapter driver "
                                          'runs where "pf" is')
