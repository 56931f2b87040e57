"""The adapters of a platform: each one's plan (`AdapterPlan`, part of `PlatformConfig`)
and its PE tree under the platform (`AdapterTree`).

A platform serves one or several adapters. Each has its own device model (all of them
on the platform's one loop thread: hypervisor_shim.adapter_host), its own bus (so PE
addresses are unique across adapters), its own PE tree: adapter PE with its VF PEs below,
its own policy (freeze windows, lockout, reset failures), its own watch of its adapter
driver (pe.driver_watch), its own platform recovery and removal of drivers without
handlers, and its own uplink. Nothing of one adapter acts on another's PEs: every
component here is built on its adapter's `PePolicy`, whose records hold that adapter's
PEs only (a call naming another adapter's PE finds no record there).

Names (hypervisor_shim.pe.names): the only adapter of a platform configured the old way
(no `adapters`) is unnamed, its functions "pf", "vf3" and PEs "adapter", "vf3"; adapter
"nic1" has functions "nic1.pf", "nic1.vf3" and PEs "nic1", "nic1.vf3".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from device_model import Adapter, ResetTiming
from device_model.adapter_config import DEFAULT_BASE_MAC, DEFAULT_TOTAL_VFS
from eeh_abi.vf_settings import VfSettings
from hypervisor_shim.adapter_host import DEFAULT_TAP_NAME, AdapterHostConfig
from hypervisor_shim.pe import Notice, PePolicy, PeRecord, PolicyConfig
from hypervisor_shim.pe.adapter_recovery import PlatformRecovery
from hypervisor_shim.pe.driver_watch import DriverWatch
from hypervisor_shim.pe.names import qualify
from hypervisor_shim.pe.removal import NoHandlerRecovery, RemovalHooks

FIRST_BUS = 1  # the first adapter's bus; adapter i is on bus FIRST_BUS + i


@dataclass(frozen=True)
class AdapterPlan:
    """One adapter of a platform: what the platform builds it from."""

    name: str = ""  # "" only for a platform's single, unnamed adapter
    bus: int = FIRST_BUS
    total_vfs: int = DEFAULT_TOTAL_VFS
    enabled_vfs: int = DEFAULT_TOTAL_VFS
    timing: ResetTiming = ResetTiming.FAST
    owners: Mapping[str, str] = field(default_factory=dict)  # "pf"/"vfN" -> owner
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    vf_settings: Mapping[int, VfSettings] = field(default_factory=dict)
    uplink: str = "queue"  # or "tap"
    tap_name: str = DEFAULT_TAP_NAME
    base_mac: bytes = DEFAULT_BASE_MAC

    def host_config(self, host_cpus: tuple[int, ...] | None) -> AdapterHostConfig:
        return AdapterHostConfig(total_vfs=self.total_vfs, enabled_vfs=self.enabled_vfs,
                                 timing=self.timing, host_cpus=host_cpus, uplink=self.uplink,
                                 tap_name=self.tap_name, name=self.name, bus=self.bus,
                                 base_mac=self.base_mac)

    def qualified_owners(self) -> dict[str, str]:
        """The owners by platform-wide function name ("nic1.vf3")."""
        return {qualify(self.name, fn): owner for fn, owner in self.owners.items()}


@dataclass
class AdapterTree:
    """One adapter's PE tree under the platform and the parts that act on it. Lives on
    the platform's loop thread, like everything the platform owns."""

    plan: AdapterPlan
    adapter: Adapter
    policy: PePolicy
    removal: NoHandlerRecovery
    recovery: PlatformRecovery
    watch: DriverWatch

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def adapter_pe(self) -> str:
        """The adapter PE's name ("adapter" or the adapter's name)."""
        return self.policy.adapter_record.name

    def on_notice(self, n: Notice) -> None:
        """A policy notice of any adapter: each part filters its own PEs by address."""
        self.removal(n)
        self.recovery(n)
        self.watch.on_notice(n)


@dataclass(frozen=True)
class TreeHooks:
    """What an adapter's tree needs of the platform (all called on its loop thread)."""

    notify: Callable[[Notice], None]
    handlers_of: Callable[[int], bool | None]  # PE address -> its driver's handlers
    connected: Callable[[str], bool]  # owner -> it has an open platform channel
    registered: Callable[[PePolicy, str], bool]  # owner registered the adapter driver
    removal: RemovalHooks
    restart: Callable[[str], None] | None


def build_tree(plan: AdapterPlan, adapter: Adapter, hooks: TreeHooks) -> AdapterTree:
    policy = PePolicy(adapter, plan.owners, config=plan.policy, clock=adapter.clock.now,
                      notify=hooks.notify, enabled_vfs=plan.enabled_vfs, name=plan.name)

    def function_name(rec: PeRecord) -> str:
        return qualify(plan.name, adapter.function_of(rec.pe).name)

    removal = NoHandlerRecovery(policy, handlers_of=hooks.handlers_of,
                                function_name=function_name, hooks=hooks.removal)
    recovery = PlatformRecovery(policy, plan.vf_settings, clock=adapter.clock.now)
    watch = DriverWatch(policy, recovery, clock=adapter.clock.now, connected=hooks.connected,
                        registered=lambda owner: hooks.registered(policy, owner),
                        restart=hooks.restart)
    return AdapterTree(plan, adapter, policy, removal, recovery, watch)
