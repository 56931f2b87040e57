"""The adapter's configuration: how many VFs, its IDs, routing, timing, MACs, link."""

from __future__ import annotations

from dataclasses import dataclass

from device_model.errors import ConfigurationError
from device_model.reset import ResetTiming
from eeh_abi import nic


@dataclass(frozen=True)
class AdapterConfig:
    total_vfs: int = nic.MAX_VFS
    vendor_id: int = nic.VENDOR_ID
    device_id: int = nic.PF_DEVICE_ID
    vf_device_id: int = nic.VF_DEVICE_ID
    bus: int = 1  # the PF is bus:00.0; PE addresses are config addresses (bus<<16|devfn<<8)
    first_vf_offset: int = 0x80
    vf_stride: int = 1
    timing: ResetTiming = ResetTiming.FAST
    base_mac: bytes = bytes.fromhex("02ee00000000")  # function n gets base + n (PF: n = 0)
    link_up: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.total_vfs <= nic.MAX_VFS:
            raise ConfigurationError("total_vfs", f"must be 0..{nic.MAX_VFS}")
        if self.vf_stride < 1 or self.first_vf_offset < 1:
            raise ConfigurationError("first_vf_offset/vf_stride", "must be >= 1")
        if self.first_vf_offset + max(0, self.total_vfs - 1) * self.vf_stride > 0xFF:
            raise ConfigurationError("first_vf_offset", "VF routing IDs must stay on the bus")
        if not 0 <= self.bus <= 0xFF:
            raise ConfigurationError("bus", "must be 0..255")
        for name in ("vendor_id", "device_id", "vf_device_id"):
            if not 0 <= getattr(self, name) < 0xFFFF:
                raise ConfigurationError(name, "must be a 16-bit ID other than 0xffff")
        if len(self.base_mac) != 6 or self.base_mac[0] & 1:
            raise ConfigurationError("base_mac", "must be 6 bytes, unicast")

    def rid(self, vf: int | None) -> int:
        """Routing ID (bus << 8 | devfn) of the PF (None) or VF `vf`."""
        base = self.bus << 8
        return base if vf is None else base + self.first_vf_offset + vf * self.vf_stride

    def mac(self, n: int) -> bytes:
        return (int.from_bytes(self.base_mac, "big") + n).to_bytes(6, "big")
