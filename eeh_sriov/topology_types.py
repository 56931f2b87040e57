"""The parsed topology: frozen dataclasses, as `eeh_sriov.topology` builds them from a TOML
file (its docstring explains every key), and the platform's configuration they give
(`Topology.platform_config`).

One adapter (`[adapter]`): `Topology.adapter`, unnamed, `adapters` empty; names are
"pf", "vf3" (PEs "adapter", "vf3"). Several (`[[adapter]]`): `adapters` holds each, named
("nic0", ...), `adapter` is the first; names are "nic1.pf", "nic1.vf3" (PEs "nic1",
"nic1.vf3": hypervisor_shim.pe.names). `all_adapters` is either."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from device_model.adapter_config import DEFAULT_BASE_MAC, DEFAULT_TOTAL_VFS
from device_model.nic.registers import MTU_DEFAULT
from device_model.reset import ResetTiming
from eeh_abi.limits import limit
from eeh_abi.vf_settings import VfSettings, format_mac
from hypervisor_shim.adapter_host import DEFAULT_TAP_NAME
from hypervisor_shim.adapters import FIRST_BUS, AdapterPlan
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.pe.names import qualify, split
from hypervisor_shim.platform import PlatformConfig
from hypervisor_shim.readiness import pe_of
from qemu_launcher.config import MachineConfig

HOST = "host"  # pf_driver.where for harness mode; the owner of host-run functions
PF = "pf"

TimingName = Literal["fast", "spec"]
UplinkKind = Literal["auto", "tap", "queue"]

_TIMINGS: dict[str, ResetTiming] = {"fast": ResetTiming.FAST, "spec": ResetTiming.SPEC}
_VF_NAME = re.compile(r"vf(0|[1-9][0-9]*)")


# ---- the parsed topology


@dataclass(frozen=True)
class VfConfig:
    """VF configuration the adapter driver applies. From `[adapter.vf.<n>]`, fields the file
    leaves out are None; from `Topology.vf_config`, everything is effective."""

    index: int
    mac: bytes | None = None
    vlan: int | None = None  # None: untagged (no port VLAN)
    mtu: int | None = None
    anti_spoof: bool | None = None


@dataclass(frozen=True)
class UplinkSpec:
    kind: UplinkKind = "auto"
    tap_name: str = DEFAULT_TAP_NAME

    def resolved_kind(self, euid: int | None = None) -> Literal["tap", "queue"]:
        """"tap" or "queue"; "auto" is a TAP when running as root (`euid`, default ours)."""
        if self.kind != "auto":
            return self.kind
        return "tap" if (os.geteuid() if euid is None else euid) == 0 else "queue"


@dataclass(frozen=True)
class AdapterSpec:
    total_vfs: int = DEFAULT_TOTAL_VFS
    enabled_vfs: int = DEFAULT_TOTAL_VFS  # every VF
    timing: TimingName = "fast"
    base_mac: bytes = DEFAULT_BASE_MAC
    vfs: tuple[VfConfig, ...] = ()  # as given in the file, by index
    # Several adapters ([[adapter]]): its name, and its own policy, uplink and adapter
    # driver's place (None: the topology's; the parser fills them in for every adapter
    # of several)
    name: str = ""
    policy: PolicyConfig | None = None
    uplink: UplinkSpec | None = None
    pf_driver: str | None = None

    @property
    def reset_timing(self) -> ResetTiming:
        """`ResetTiming.FAST` or `ResetTiming.SPEC` (see also `Topology.reset_timing`)."""
        return _TIMINGS[self.timing]

    def mac(self, n: int) -> bytes:
        """The default MAC of function n (PF: 0, VF i: 1 + i), as `AdapterConfig.mac`."""
        return (int.from_bytes(self.base_mac, "big") + n).to_bytes(6, "big")


@dataclass(frozen=True)
class PfDriverSpec:
    where: str  # a guest's name, or HOST


@dataclass(frozen=True)
class HarnessSpec:
    vf_drivers: int  # host-run VF drivers for vf0..vf(vf_drivers - 1)


@dataclass(frozen=True)
class GuestSpec:
    name: str
    functions: tuple[str, ...]
    memory_mib: int = field(default=MachineConfig.memory_mib, metadata=limit(256, 65536))
    cpus: int = field(default=MachineConfig.cpus, metadata=limit(1, 16))
    handlers: bool = True


@dataclass(frozen=True)
class Topology:
    source: str
    adapter: AdapterSpec  # the only adapter; of several, the first
    uplink: UplinkSpec
    policy: PolicyConfig
    pf_driver: PfDriverSpec
    guests: tuple[GuestSpec, ...] = ()
    harness: HarnessSpec | None = None  # set exactly in harness mode
    adapters: tuple[AdapterSpec, ...] = ()  # several adapters, each named; else empty

    @property
    def harness_mode(self) -> bool:
        """The adapter drivers run on the host (pf_driver.where = "host")."""
        return self.pf_driver.where == HOST

    @property
    def all_adapters(self) -> tuple[AdapterSpec, ...]:
        """Every adapter: the several, or the one (unnamed)."""
        return self.adapters or (self.adapter,)

    def adapter_named(self, name: str) -> AdapterSpec:
        for a in self.all_adapters:
            if a.name == name:
                return a
        raise ValueError(f"no adapter named {name!r}")

    def with_timing(self, timing: TimingName) -> Topology:
        """This topology with every adapter's reset timing `timing` (replacing `adapter`
        alone would leave the others of several as they were)."""
        adapters = tuple(dataclasses.replace(a, timing=timing) for a in self.adapters)
        first = adapters[0] if adapters else dataclasses.replace(self.adapter, timing=timing)
        return dataclasses.replace(self, adapter=first, adapters=adapters)

    def policy_of(self, a: AdapterSpec) -> PolicyConfig:
        return a.policy if a.policy is not None else self.policy

    def uplink_of(self, a: AdapterSpec) -> UplinkSpec:
        return a.uplink if a.uplink is not None else self.uplink

    def pf_driver_of(self, a: AdapterSpec) -> str:
        """Where adapter `a`'s driver runs: a guest's name, or HOST."""
        return a.pf_driver if a.pf_driver is not None else self.pf_driver.where

    @property
    def reset_timing(self) -> ResetTiming:
        """The (first) adapter's reset timing with the policy's retry hint."""
        return self._timing(self.adapter)

    def _timing(self, a: AdapterSpec) -> ResetTiming:
        return dataclasses.replace(a.reset_timing, retry_hint_ms=self.policy_of(a).retry_hint_ms)

    @property
    def all_functions(self) -> tuple[str, ...]:
        """The functions that exist at start, adapter by adapter: "pf", then
        vf0..vf(enabled_vfs - 1) ("nic1.pf", "nic1.vf0"... of several)."""
        return tuple(qualify(a.name, f) for a in self.all_adapters
                     for f in (PF, *(f"vf{i}" for i in range(a.enabled_vfs))))

    @property
    def guest_pes(self) -> frozenset[str]:
        """The PEs whose drivers run in guests ("adapter" or "nic1" for a PF): the drivers
        a run waits for (hypervisor_shim.readiness)."""
        return frozenset(pe_of(f) for g in self.guests for f in g.functions)

    def guest(self, name: str) -> GuestSpec:
        for g in self.guests:
            if g.name == name:
                return g
        raise ValueError(f"no guest named {name!r}")

    def owner_of(self, function: str) -> str | None:
        """The guest holding `function`, HOST for functions driven on the host, None for
        a function nobody holds (also a VF not enabled at start)."""
        a, n = self._function(function)
        if n is None:
            return self.pf_driver_of(a)
        if self.harness is not None and n < self.harness.vf_drivers:
            return HOST
        for g in self.guests:
            if function in g.functions:
                return g.name
        return None

    def functions_of(self, guest: str) -> tuple[str, ...]:
        """The functions a guest holds, in the file's order; for HOST, the host-run ones."""
        if guest == HOST:
            if self.harness is None:
                return ()
            return tuple(qualify(a.name, f) for a in self.all_adapters for f in
                         (PF, *(f"vf{i}" for i in range(self.harness.vf_drivers))))
        return self.guest(guest).functions

    def vf_config(self, n: int | str, adapter: str = "") -> VfConfig:
        """The effective configuration of VF n (of `adapter`; or of the function named
        `n`: "vf3", "nic1.vf3"): the file's values, else the defaults (MAC base_mac + 1 +
        n, no VLAN, MTU 1500, no anti-spoofing)."""
        if isinstance(n, str):
            a, index = self._function(n)
            if index is None:
                raise ValueError(f"{n} is not a VF")
        else:
            a, index = self.adapter_named(adapter), n
        if not 0 <= index < a.total_vfs:
            raise ValueError(f"vf{index} does not exist (total_vfs = {a.total_vfs})")
        given = next((c for c in a.vfs if c.index == index), VfConfig(index))
        return VfConfig(
            index=index,
            mac=given.mac if given.mac is not None else a.mac(1 + index),
            vlan=given.vlan,
            mtu=given.mtu if given.mtu is not None else MTU_DEFAULT,
            anti_spoof=bool(given.anti_spoof),
        )

    @property
    def adapter_pes(self) -> tuple[str, ...]:
        """Every adapter's PE: ("adapter",) for one, ("nic0", "nic1") for several."""
        return tuple(pe_of(qualify(a.name, PF)) for a in self.all_adapters)

    def claim_args(self, adapter_pe: str) -> tuple[str, dict[str, str]]:
        """(the PF's owner, VF -> owner of the VFs held) of the adapter whose PE is
        `adapter_pe`: what hypervisor_shim.claim.check_claim checks for it."""
        a = next((a for a in self.all_adapters if pe_of(qualify(a.name, PF)) == adapter_pe),
                 None)
        if a is None:
            raise ValueError(f"no adapter PE named {adapter_pe!r}")
        vfs = {fn: owner for i in range(a.enabled_vfs)
               if (owner := self.owner_of(fn := qualify(a.name, f"vf{i}"))) is not None}
        return self.pf_driver_of(a), vfs

    def _plan(self, a: AdapterSpec, bus: int, owners: dict[str, str]) -> AdapterPlan:
        vfs = {}
        for n in range(a.enabled_vfs):
            c = self.vf_config(n, a.name)
            assert c.mac is not None and c.mtu is not None
            vfs[n] = VfSettings(format_mac(c.mac), c.vlan, c.mtu, bool(c.anti_spoof))
        uplink = self.uplink_of(a)
        return AdapterPlan(a.name, bus, a.total_vfs, a.enabled_vfs, self._timing(a),
                           {split(f)[1]: o for f, o in owners.items()
                            if split(f)[0] == a.name},
                           self.policy_of(a), vfs, uplink.resolved_kind(), uplink.tap_name,
                           a.base_mac if self.adapters else DEFAULT_BASE_MAC)

    def platform_config(self, **changes: Any) -> PlatformConfig:
        """The platform's configuration for this topology (`changes` override fields):
        several adapters each on its own bus (FIRST_BUS, FIRST_BUS + 1, ...)."""
        owners = {}
        for fn in self.all_functions:
            owner = self.owner_of(fn)
            if owner is not None:
                owners[fn] = owner
        plans = [self._plan(a, FIRST_BUS + i, owners) for i, a in enumerate(self.all_adapters)]
        first = plans[0]
        cfg = PlatformConfig(
            total_vfs=first.total_vfs, enabled_vfs=first.enabled_vfs, timing=first.timing,
            owners=owners, policy=first.policy, vf_settings=first.vf_settings,
            handlers={g.name: g.handlers for g in self.guests}, uplink=first.uplink,
            tap_name=first.tap_name, adapters=tuple(plans) if self.adapters else ())
        return dataclasses.replace(cfg, **changes)

    def _function(self, function: str) -> tuple[AdapterSpec, int | None]:
        """(its adapter, its VF number or None for the PF) of a function's name."""
        name, local = split(function)
        try:
            a = self.adapter_named(name)
        except ValueError:
            raise ValueError(f"no function named {function!r}") from None
        if local == PF:
            return a, None
        m = _VF_NAME.fullmatch(local)
        if m is None or int(m.group(1)) >= a.total_vfs:
            raise ValueError(f"no function named {function!r}")
        return a, int(m.group(1))
