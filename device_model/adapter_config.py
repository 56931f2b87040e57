"""The adapter's configuration: how many VFs, its IDs, routing, timing, MACs, link.

The defaults and limits here are the only ones: the platform's and the adapter host's
configurations (`hypervisor_shim`) and the topology file (`eeh_sriov.topology`) take
theirs from this module (`DEFAULT_TOTAL_VFS`, `DEFAULT_BASE_MAC`, `limits(AdapterConfig)`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from device_model.errors import ConfigurationError
from device_model.reset import ResetTiming
from eeh_abi import nic
from eeh_abi.limits import limit, violation

DEFAULT_TOTAL_VFS = 8  # the adapter's TotalVFs unless configured (at most nic.MAX_VFS)
DEFAULT_BASE_MAC = bytes.fromhex("02ee00000000")  # function n gets base + n (PF: n = 0)
_ID = limit(0, 0xFFFE)  # a 16-bit ID other than 0xffff (what an absent function reads)


@dataclass(frozen=True)
class AdapterConfig:
    total_vfs: int = field(default=DEFAULT_TOTAL_VFS, metadata=limit(0, nic.MAX_VFS))
    vendor_id: int = field(default=nic.VENDOR_ID, metadata=_ID)
    device_id: int = field(default=nic.PF_DEVICE_ID, metadata=_ID)
    vf_device_id: int = field(default=nic.VF_DEVICE_ID, metadata=_ID)
    # the PF is bus:00.0; PE addresses are config addresses (bus<<16|devfn<<8)
    bus: int = field(default=1, metadata=limit(0, 0xFF))
    first_vf_offset: int = field(default=0x80, metadata=limit(1, 0xFFFF))
    vf_stride: int = field(default=1, metadata=limit(1, 0xFFFF))
    timing: ResetTiming = ResetTiming.FAST
    base_mac: bytes = DEFAULT_BASE_MAC
    link_up: bool = True

    def __post_init__(self) -> None:
        bad = violation(self)
        if bad is not None:
            raise ConfigurationError(*bad)
        if self.first_vf_offset + max(0, self.total_vfs - 1) * self.vf_stride > 0xFF:
            raise ConfigurationError("first_vf_offset", "VF routing IDs must stay on the bus")
        if len(self.base_mac) != 6 or self.base_mac[0] & 1:
            raise ConfigurationError("base_mac", "must be 6 bytes, unicast")

    def rid(self, vf: int | None) -> int:
        """Routing ID (bus << 8 | devfn) of the PF (None) or VF `vf`."""
        base = self.bus << 8
        return base if vf is None else base + self.first_vf_offset + vf * self.vf_stride

    def mac(self, n: int) -> bytes:
        return (int.from_bytes(self.base_mac, "big") + n).to_bytes(6, "big")
