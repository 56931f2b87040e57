"""A virtual function: a NIC function whose existence and policy the PF controls."""

from __future__ import annotations

from typing import Protocol

from device_model.adapter_config import AdapterConfig
from device_model.function import Function, FunctionHost
from device_model.nic import registers as R
from device_model.nic.mailbox import Mailbox
from device_model.pci.layouts import vf_config_layout
from device_model.pe import Pe
from device_model.pf import PfFunction
from device_model.reset import FunctionReset

# plain ints for the per-frame paths (IntFlag arithmetic is slow)
_ADMIN_MAC = int(R.VfcfgMacHi.ADMIN)
_ADMIN_VLAN = int(R.VfcfgVlan.EN)
_ANTI_SPOOF = int(R.VfcfgFlags.ANTI_SPOOF)


class VfHost(FunctionHost, Protocol):
    """What a VF needs beyond a function's share: the PF learns of its FLRs."""

    def vf_flr_done(self, vf: VfFunction) -> None:
        """VF `vf` completed an FLR (or a VFIO device reset)."""
        ...


class VfFunction(Function):
    """VF n exists (answers at all) only while the PF has VF Enable set and NumVFs > n.

    Its policy is the PF's: VF_TXEN/VF_RXEN bit n, and VF n's VFCFG registers.
    """

    def __init__(self, host: VfHost, index: int, pe: Pe, pf: PfFunction,
                 config: AdapterConfig) -> None:
        super().__init__(host, f"vf{index}", pe,
                         vf_config_layout(vendor_id=config.vendor_id,
                                          vf_device_id=config.vf_device_id),
                         R.vf_layout(), flr_time=config.timing.flr)
        self._vf_host = host
        self._pf = pf
        self.index = index
        self._bit = 1 << index
        self._cfg = R.vfcfg_names(index)
        self.mailbox = Mailbox(index, host.events)

    def present(self) -> bool:
        pf = self._pf
        return pf.sriov_enabled and self.index < pf.num_vfs

    def _decode_extra(self) -> bool:
        return self._pf.vf_mse

    def port_enabled(self, tx: bool) -> bool:
        return bool(self._pf.bar0.stored("VF_TXEN" if tx else "VF_RXEN") & self._bit)

    def admin_mac(self) -> bytes | None:
        regs = self._pf.bar0
        hi = regs.stored(self._cfg[1])
        if not hi & _ADMIN_MAC:
            return None
        return (regs.stored(self._cfg[0]).to_bytes(4, "little")
                + (hi & R.MAC_HI_ADDR).to_bytes(2, "little"))

    def admin_vlan(self) -> int | None:
        v = self._pf.bar0.stored(self._cfg[2])
        return v & R.VLAN_VID if v & _ADMIN_VLAN else None

    def anti_spoof(self) -> bool:
        return bool(self._pf.bar0.stored(self._cfg[3]) & _ANTI_SPOOF)

    def _after_reset(self, kind: FunctionReset) -> None:
        self.mailbox.restore_vf_bits()

    def _reset_finished(self, kind: FunctionReset) -> None:
        super()._reset_finished(kind)
        if kind in (FunctionReset.FLR, FunctionReset.DEVICE):
            self._vf_host.vf_flr_done(self)
