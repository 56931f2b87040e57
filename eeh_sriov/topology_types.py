"""The parsed topology: frozen dataclasses, as `eeh_sriov.topology` builds them from a TOML
file (its docstring explains every key), and the platform's configuration they give
(`Topology.platform_config`)."""

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
from hypervisor_shim.pe import PolicyConfig
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
class AdapterSpec:
    total_vfs: int = DEFAULT_TOTAL_VFS
    enabled_vfs: int = DEFAULT_TOTAL_VFS  # every VF
    timing: TimingName = "fast"
    base_mac: bytes = DEFAULT_BASE_MAC
    vfs: tuple[VfConfig, ...] = ()  # as given in the file, by index

    @property
    def reset_timing(self) -> ResetTiming:
        """`ResetTiming.FAST` or `ResetTiming.SPEC` (see also `Topology.reset_timing`)."""
        return _TIMINGS[self.timing]

    def mac(self, n: int) -> bytes:
        """The default MAC of function n (PF: 0, VF i: 1 + i), as `AdapterConfig.mac`."""
        return (int.from_bytes(self.base_mac, "big") + n).to_bytes(6, "big")


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
    adapter: AdapterSpec
    uplink: UplinkSpec
    policy: PolicyConfig
    pf_driver: PfDriverSpec
    guests: tuple[GuestSpec, ...] = ()
    harness: HarnessSpec | None = None  # set exactly in harness mode

    @property
    def harness_mode(self) -> bool:
        """The adapter driver runs on the host (pf_driver.where = "host")."""
        return self.pf_driver.where == HOST

    @property
    def reset_timing(self) -> ResetTiming:
        """The adapter's reset timing with the policy's retry hint."""
        return dataclasses.replace(self.adapter.reset_timing,
                                   retry_hint_ms=self.policy.retry_hint_ms)

    @property
    def all_functions(self) -> tuple[str, ...]:
        """The functions that exist at start: "pf", then vf0..vf(enabled_vfs - 1)."""
        return (PF, *(f"vf{i}" for i in range(self.adapter.enabled_vfs)))

    @property
    def guest_pes(self) -> frozenset[str]:
        """The PEs whose drivers run in guests ("adapter" for "pf"): the drivers a run waits
        for (hypervisor_shim.readiness)."""
        return frozenset(pe_of(f) for g in self.guests for f in g.functions)

    def guest(self, name: str) -> GuestSpec:
        for g in self.guests:
            if g.name == name:
                return g
        raise ValueError(f"no guest named {name!r}")

    def owner_of(self, function: str) -> str | None:
        """The guest holding `function`, HOST for functions driven on the host, None for
        a function nobody holds (also a VF not enabled at start)."""
        n = self._vf_number(function)
        if n is None:
            return self.pf_driver.where
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
            return (PF, *(f"vf{i}" for i in range(self.harness.vf_drivers)))
        return self.guest(guest).functions

    def vf_config(self, n: int) -> VfConfig:
        """The effective configuration of VF n: the file's values, else the defaults (MAC
        base_mac + 1 + n, no VLAN, MTU 1500, no anti-spoofing)."""
        if not 0 <= n < self.adapter.total_vfs:
            raise ValueError(f"vf{n} does not exist (total_vfs = {self.adapter.total_vfs})")
        given = next((c for c in self.adapter.vfs if c.index == n), VfConfig(n))
        return VfConfig(
            index=n,
            mac=given.mac if given.mac is not None else self.adapter.mac(1 + n),
            vlan=given.vlan,
            mtu=given.mtu if given.mtu is not None else MTU_DEFAULT,
            anti_spoof=bool(given.anti_spoof),
        )

    def platform_config(self, **changes: Any) -> PlatformConfig:
        """The platform's configuration for this topology (`changes` override fields)."""
        owners = {}
        for fn in self.all_functions:
            owner = self.owner_of(fn)
            if owner is not None:
                owners[fn] = owner
        vfs = {}
        for n in range(self.adapter.enabled_vfs):
            c = self.vf_config(n)
            assert c.mac is not None and c.mtu is not None
            vfs[n] = VfSettings(format_mac(c.mac), c.vlan, c.mtu, bool(c.anti_spoof))
        cfg = PlatformConfig(
            total_vfs=self.adapter.total_vfs, enabled_vfs=self.adapter.enabled_vfs,
            timing=self.reset_timing, owners=owners, policy=self.policy,
            vf_settings=vfs, handlers={g.name: g.handlers for g in self.guests},
            uplink=self.uplink.resolved_kind(), tap_name=self.uplink.tap_name)
        return dataclasses.replace(cfg, **changes)

    def _vf_number(self, function: str) -> int | None:
        if function == PF:
            return None
        m = _VF_NAME.fullmatch(function)
        if m is None or int(m.group(1)) >= self.adapter.total_vfs:
            raise ValueError(f"no function named {function!r}")
        return int(m.group(1))
