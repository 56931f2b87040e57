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
import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

from device_model.adapter_config import DEFAULT_BASE_MAC
from eeh_abi.vf_settings import format_mac
from eeh_sriov.topology_keys import (
    LIMITED_KEYS,
    Invalid,
    Table,
    join_key,
    key_default,
    key_limit,
    kind_of,
    mac_of,
    show,
)
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
from hypervisor_shim.pe.names import qualify, split

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
    except Invalid as e:
        raise TopologyError(source, e.key, e.reason) from None


def _enabled_range(enabled: int, where: str = "adapter") -> str:
    if enabled == 0:
        return f"{where}.enabled_vfs = 0 enables no VFs"
    if enabled == 1:
        return f"{where}.enabled_vfs = 1 enables only vf0"
    return f"{where}.enabled_vfs = {enabled} enables vf0..vf{enabled - 1}"


# ---- sections

_TOP_KEYS = ("adapter", "uplink", "policy", "pf_driver", "harness", "guests")
_POLICY_KEYS = ("max_freezes", "window_s", "retry_hint_ms", "max_reset_failures", "errinjct",
                "adapter_driver_deadline_ms", "on_adapter_driver_lost")
_ADAPTER_KEYS = ("total_vfs", "enabled_vfs", "timing", "base_mac", "vf", "vfs")
# one of several adapters ([[adapter]]) also has these
_SEVERAL_KEYS = (*_ADAPTER_KEYS, "name", "policy", "uplink", "pf_driver")
_VF_KEYS = ("mac", "vlan", "mtu", "anti_spoof")
_GUEST_KEYS = ("name", "functions", "memory_mib", "cpus", "handlers")
_RESERVED_ADAPTER_NAMES = ("adapter", HOST, PF)
# adapter i's default base MAC: the default one with i in its fourth octet
_ADAPTER_MAC_STEP = 1 << 16


def _parse(data: dict[str, object], source: str) -> Topology:
    top = Table(data, "", _TOP_KEYS)
    uplink = _parse_uplink(top.table("uplink", ("kind", "tap_name")))
    policy = _parse_policy(top.table("policy", _POLICY_KEYS))
    where = top.table("pf_driver", ("where",)).string("where", None)
    several: tuple[AdapterSpec, ...] = ()
    if isinstance(top.get("adapter"), list):
        several = _parse_several(top, uplink, policy, where)
        adapter = several[0]
    else:
        adapter = _parse_adapter(top.table("adapter", _ADAPTER_KEYS))
    adapters = several or (adapter,)
    guests = _parse_guests(top, adapters, bool(several))
    harness = _parse_harness(top, adapters, where)
    _check_ownership(guests, adapters, where, harness)
    return Topology(source=source, adapter=adapter, uplink=uplink, policy=policy,
                    pf_driver=PfDriverSpec(where), guests=tuple(g for g, _ in guests),
                    harness=harness, adapters=several)


def _parse_several(top: Table, uplink: UplinkSpec, policy: PolicyConfig,
                   where: str) -> tuple[AdapterSpec, ...]:
    """`[[adapter]]`: each adapter named, with its own policy (the top-level `[policy]`
    with its `[adapter.policy]` keys over it), uplink and adapter driver's place."""
    out: list[AdapterSpec] = []
    names: dict[str, str] = {}
    taps: dict[str, str] = {}
    macs: dict[bytes, str] = {}
    items = top.tables("adapter")
    if not items:
        raise Invalid("adapter", "an empty array: give at least one [[adapter]] table")
    for i, (path, item) in enumerate(items):
        t = Table(item, path, _SEVERAL_KEYS, "adapter")
        name = t.string("name", f"nic{i}")
        if not _GUEST_NAME.fullmatch(name) or name in _RESERVED_ADAPTER_NAMES or \
                _VF_NAME.fullmatch(name):
            raise Invalid(t.key("name"), f"{show(name)} is not an adapter name "
                                         "([a-z][a-z0-9-]{0,15}, not \"adapter\", \"host\", "
                                         "\"pf\" or a VF's name)")
        if name in names:
            raise Invalid(t.key("name"), f"duplicate adapter name {show(name)} "
                                         f"(also {names[name]})")
        names[name] = t.key("name")
        default_mac = (int.from_bytes(DEFAULT_BASE_MAC, "big") + i * _ADAPTER_MAC_STEP
                       ).to_bytes(6, "big")
        spec = _parse_adapter(t, default_mac, macs, name)
        up = _parse_uplink(_sub(t, "uplink", ("kind", "tap_name")),
                           UplinkSpec(uplink.kind, _nth_tap(uplink.tap_name, i)))
        if up.tap_name in taps:
            raise Invalid(t.key("uplink") + ".tap_name",
                          f"{show(up.tap_name)} is already the uplink of adapter "
                          f"{show(taps[up.tap_name])}; each adapter has its own")
        taps[up.tap_name] = name
        pol = _parse_policy(_sub(t, "policy", _POLICY_KEYS), policy)
        pf_where = _sub(t, "pf_driver", ("where",)).string("where", where)
        if (pf_where == HOST) != (where == HOST):
            raise Invalid(t.key("pf_driver") + ".where",
                          'every adapter driver runs on the host (harness mode) or none '
                          f'does: pf_driver.where is {show(where)}')
        out.append(dataclasses.replace(spec, name=name, policy=pol, uplink=up,
                                       pf_driver=pf_where))
    return tuple(out)


def _sub(t: Table, name: str, allowed: Sequence[str]) -> Table:
    """A sub-table of one of several adapters, read with its top-level twin's limits."""
    value = t.get(name)
    return Table({} if value is None else value, t.key(name), allowed, name)


def _nth_tap(name: str, i: int) -> str:
    """Adapter i's default TAP name: the number at the end of `name` counted up by i."""
    m = re.fullmatch(r"(.*?)(\d*)", name)
    assert m is not None
    return name if i == 0 else f"{m.group(1)}{int(m.group(2) or 0) + i}"


def _parse_adapter(t: Table, default_mac: bytes = DEFAULT_BASE_MAC,
                   macs: dict[bytes, str] | None = None, adapter: str = "") -> AdapterSpec:
    total: int = t.limited("total_vfs")
    enabled = t.integer("enabled_vfs", total, 0, total)
    timing: TimingName = "spec" if t.choice("timing", "fast", tuple(_TIMINGS)) == "spec" \
        else "fast"
    raw_mac = t.get("base_mac")
    base_mac = default_mac if raw_mac is None else mac_of(t.key("base_mac"), raw_mac)
    base = int.from_bytes(base_mac, "big")
    if base + total >= 1 << 48 or (base + total) >> 40 != base >> 40:
        raise Invalid(t.key("base_mac"), f"base_mac + {total} (the last VF's default MAC) "
                                          "must not change the first octet")
    given: dict[int, tuple[str, VfConfig]] = {}

    def add(path: str, index: int, vt: Table) -> None:
        if index >= enabled:
            raise Invalid(path, f"configures vf{index}, but "
                                f"{_enabled_range(enabled, t.path)}")
        if index in given:
            raise Invalid(path, f"vf{index} is configured twice (also at {given[index][0]})")
        mac = vt.get("mac")
        spoof = vt.get("anti_spoof")
        given[index] = (path, VfConfig(
            index=index,
            mac=None if mac is None else mac_of(vt.key("mac"), mac),
            vlan=vt.limited("vlan"),
            mtu=vt.limited("mtu"),
            anti_spoof=None if spoof is None else vt.flag("anti_spoof", False),
        ))

    by_key = t.get("vf")
    if by_key is not None:
        if not isinstance(by_key, dict):
            raise Invalid(t.key("vf"), "must be tables [adapter.vf.<n>], one per VF, "
                                        f"not {kind_of(by_key)}")
        for name, item in by_key.items():
            path = join_key(t.key("vf"), name)
            if not _INDEX.fullmatch(name):
                raise Invalid(path, "must be a VF number: [adapter.vf.<n>], e.g. [adapter.vf.0]")
            add(path, int(name), Table(item, path, _VF_KEYS, "adapter.vf.<n>"))
    for path, item in t.tables("vfs"):
        vt = Table(item, path, ("index", *_VF_KEYS), "adapter.vf.<n>")
        add(path, vt.integer("index", None, 0), vt)

    _check_macs(t, base_mac, total, given, {} if macs is None else macs, adapter)
    vfs = tuple(cfg for _, (_, cfg) in sorted(given.items()))
    return AdapterSpec(total, enabled, timing, base_mac, vfs)


def _check_macs(t: Table, base_mac: bytes, total: int,
                given: dict[int, tuple[str, VfConfig]], owners: dict[bytes, str],
                name: str) -> None:
    """Every function's MAC distinct, across adapters too (`owners`: the MACs of the
    adapters before this one, what holds each; this one's are added)."""
    base = int.from_bytes(base_mac, "big")
    of = f"{name}." if name else ""
    mine: dict[bytes, str] = {base_mac: f"the {of}PF's MAC ({t.path}.base_mac)"}
    for i in range(total):  # defaults of VFs not enabled yet too: they may be enabled later
        if i not in given or given[i][1].mac is None:
            mine.setdefault((base + 1 + i).to_bytes(6, "big"),
                            f"{of}vf{i}'s default MAC ({t.path}.base_mac + {1 + i})")
    clash = next((m for m in mine if m in owners), None)
    if clash is not None:
        raise Invalid(t.key("base_mac"), f"{format_mac(clash)} would be {mine[clash]} and "
                                         f"is already {owners[clash]}; give each adapter "
                                         "its own base_mac")
    owners.update(mine)
    for i, (path, cfg) in sorted(given.items()):
        if cfg.mac is None:
            continue
        if cfg.mac in owners:
            raise Invalid(f"{path}.mac", f"{format_mac(cfg.mac)} is already "
                                          f"{owners[cfg.mac]}; each function needs its own")
        owners[cfg.mac] = f"{of}vf{i}'s MAC ({path}.mac)"


def _parse_uplink(t: Table, base: UplinkSpec | None = None) -> UplinkSpec:
    """`base`: the defaults (an adapter's of several: the top-level `[uplink]`'s)."""
    base = base or UplinkSpec()
    raw = t.choice("kind", base.kind, _UPLINK_KINDS)
    kind: UplinkKind = "tap" if raw == "tap" else "queue" if raw == "queue" else "auto"
    name = t.string("tap_name", base.tap_name)
    if (not name or len(name) >= _IFNAMSIZ or name in (".", "..")
            or any(c in name for c in "/:%") or any(c.isspace() for c in name)):
        raise Invalid(t.key("tap_name"), f"{show(name)} is not a valid interface name "
                                          f"(1..{_IFNAMSIZ - 1} characters, none of '/', ':', "
                                          "'%' or white space, not '.' or '..')")
    return UplinkSpec(kind, name)


def _parse_policy(t: Table, base: PolicyConfig | None = None) -> PolicyConfig:
    """`base`: the defaults (an adapter's of several: the top-level `[policy]`)."""
    if base is None:
        return PolicyConfig(
            max_freezes=t.limited("max_freezes"),
            window_s=t.limited("window_s"),
            retry_hint_ms=t.limited("retry_hint_ms"),
            max_reset_failures=t.limited("max_reset_failures"),
            errinjct=t.flag("errinjct", PolicyConfig.errinjct),
            adapter_driver_deadline_ms=t.limited("adapter_driver_deadline_ms"),
            on_adapter_driver_lost=OnDriverLost(t.choice(
                "on_adapter_driver_lost", PolicyConfig.on_adapter_driver_lost,
                [o.value for o in OnDriverLost])))
    return PolicyConfig(
        max_freezes=t.limited("max_freezes", base.max_freezes),
        window_s=t.limited("window_s", base.window_s),
        retry_hint_ms=t.limited("retry_hint_ms", base.retry_hint_ms),
        max_reset_failures=t.limited("max_reset_failures", base.max_reset_failures),
        errinjct=t.flag("errinjct", base.errinjct),
        adapter_driver_deadline_ms=t.limited("adapter_driver_deadline_ms",
                                             base.adapter_driver_deadline_ms),
        on_adapter_driver_lost=OnDriverLost(t.choice(
            "on_adapter_driver_lost", base.on_adapter_driver_lost,
            [o.value for o in OnDriverLost])))


def _parse_function(key: str, value: object, adapters: tuple[AdapterSpec, ...],
                    several: bool) -> str:
    if not isinstance(value, str):
        what = '"nic0.pf" or "nic0.vfN"' if several else '"pf" or "vfN"'
        raise Invalid(key, f"must be a function name ({what}), not {kind_of(value)}")
    name, local = split(value)
    where = "adapter"
    if several:
        names = [a.name for a in adapters]
        if name not in names:
            raise Invalid(key, f"unknown function {show(value)}: with several adapters a "
                               f"function names its adapter ({', '.join(names)}), e.g. "
                               f'"{names[-1]}.pf" or "{names[-1]}.vf0"')
        i = names.index(name)
        adapter, where = adapters[i], f"adapter[{i}]"
    elif name:
        raise Invalid(key, f'unknown function {show(value)}: functions are "pf" and '
                           f'"vf0".."vf{adapters[0].total_vfs - 1}"')
    else:
        adapter = adapters[0]
    if local == PF:
        return value
    m = _VF_NAME.fullmatch(local)
    if m is None:
        raise Invalid(key, f'unknown function {show(value)}: functions are '
                           f'"{qualify(name, "pf")}" and "{qualify(name, "vf0")}".."'
                           f'{qualify(name, f"vf{adapter.total_vfs - 1}")}"')
    n = int(m.group(1))
    if n >= adapter.total_vfs:
        raise Invalid(key, f"{value} does not exist: the adapter has {adapter.total_vfs} VFs "
                           f"({where}.total_vfs)")
    if n >= adapter.enabled_vfs:
        raise Invalid(key, f"{value} is not enabled: "
                           f"{_enabled_range(adapter.enabled_vfs, where)}")
    return value


def _parse_guests(top: Table, adapters: tuple[AdapterSpec, ...],
                  several: bool) -> list[tuple[GuestSpec, str]]:
    guests: list[tuple[GuestSpec, str]] = []
    names: dict[str, str] = {}
    holders: dict[str, tuple[str, str]] = {}  # function -> (guest, the key that gave it)
    for path, item in top.tables("guests"):
        t = Table(item, path, _GUEST_KEYS, "guests[<i>]")
        name = t.string("name", None)
        if not _GUEST_NAME.fullmatch(name):
            raise Invalid(t.key("name"), f"{show(name)} is not a guest name "
                                          "([a-z][a-z0-9-]{0,15})")
        if name == HOST:
            raise Invalid(t.key("name"), '"host" is reserved (pf_driver.where = "host" '
                                          "means the host)")
        if name in names:
            raise Invalid(t.key("name"), f"duplicate guest name {show(name)} "
                                          f"(also {names[name]})")
        names[name] = t.key("name")
        raw = t.get("functions")
        if raw is None:
            raise Invalid(t.key("functions"), 'required: a non-empty array such as ["vf0"]')
        if not isinstance(raw, list):
            raise Invalid(t.key("functions"), f"must be an array of function names, "
                                               f"not {kind_of(raw)}")
        if not raw:
            raise Invalid(t.key("functions"), "must name at least one function")
        functions: list[str] = []
        for j, value in enumerate(raw):
            fkey = f"{t.key('functions')}[{j}]"
            function = _parse_function(fkey, value, adapters, several)
            if function in holders:
                other, okey = holders[function]
                raise Invalid(fkey, f"{function} is already given to guest {show(other)} "
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


def _parse_harness(top: Table, adapters: tuple[AdapterSpec, ...],
                   where: str) -> HarnessSpec | None:
    if where != HOST:
        if top.get("harness") is not None:
            raise Invalid("harness", 'only for harness mode (pf_driver.where = "host"); '
                                     f"here the adapter driver runs in guest {show(where)}")
        return None
    t = top.table("harness", ("vf_drivers",))
    fewest = min(a.enabled_vfs for a in adapters)  # of each adapter's VFs, the same count
    return HarnessSpec(t.integer("vf_drivers", fewest, 0, fewest))


def _check_ownership(guests: list[tuple[GuestSpec, str]], adapters: tuple[AdapterSpec, ...],
                     where: str, harness: HarnessSpec | None) -> None:
    def key_of(path: str, g: GuestSpec, function: str) -> str:
        return f"{path}.functions[{g.functions.index(function)}]"

    if harness is not None:
        for g, path in guests:
            for function in g.functions:
                name, local = split(function)
                if local == PF:
                    raise Invalid(key_of(path, g, function),
                                  f'"{function}" belongs to the host: pf_driver.where = "host"')
                n = int(local[2:])
                if n < harness.vf_drivers:
                    raise Invalid(key_of(path, g, function),
                                  f"{function} is driven by the host: harness.vf_drivers = "
                                  f"{harness.vf_drivers} runs drivers for "
                                  f"{qualify(name, 'vf0')}..vf{harness.vf_drivers - 1}")
        return
    if not guests:
        raise Invalid("guests", 'no guests; give "pf" to one, or set pf_driver.where = "host" '
                                "for harness mode")
    names = [g.name for g, _ in guests]
    for i, a in enumerate(adapters):
        pf = qualify(a.name, PF)
        mine = a.pf_driver if a.pf_driver is not None else where
        key = "pf_driver.where" if a.pf_driver in (None, where) \
            else f"adapter[{i}].pf_driver.where"
        if mine not in names:
            raise Invalid(key, f"no guest named {show(mine)} (guests: "
                               f"{', '.join(names)}); name one, or \"host\"")
        holder = next((g.name for g, _ in guests if pf in g.functions), None)
        if holder is None:
            raise Invalid(key, f'guest {show(mine)} does not hold "{pf}", and no '
                               f'guest does: add "{pf}" to its functions, or set '
                               'where = "host"')
        if holder != mine:
            raise Invalid(key, f'guest {show(mine)} does not hold "{pf}" '
                               f"(guest {show(holder)} does); the adapter driver "
                               f'runs where "{pf}" is')
