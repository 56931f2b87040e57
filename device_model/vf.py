"""A virtual function: a NIC function whose existence and policy the PF controls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_model.function import Function
from device_model.nic import registers as R
from device_model.nic.mailbox import Mailbox
from device_model.pci.layouts import vf_config_layout
from device_model.pe import Pe
from device_model.reset import FunctionReset

if TYPE_CHECKING:
    from device_model.adapter import Adapter


class VfFunction(Function):
    """VF n exists (answers at all) only while the PF has VF Enable set and NumVFs > n."""

    def __init__(self, adapter: Adapter, index: int, pe: Pe) -> None:
        c = adapter.config
        super().__init__(adapter, f"vf{index}", pe,
                         vf_config_layout(vendor_id=c.vendor_id, vf_device_id=c.vf_device_id),
                         R.vf_layout())
        self.index = index
        self._bit = 1 << index
        self._cfg = R.vfcfg_names(index)
        self.mailbox = Mailbox(index, adapter.events)

    def present(self) -> bool:
        pf = self._adapter.pf
        return pf.sriov_enabled and self.index < pf.num_vfs

    def _decode_extra(self) -> bool:
        return self._adapter.pf.vf_mse

    def port_enabled(self, tx: bool) -> bool:
        return bool(self._adapter.pf.bar0.stored("VF_TXEN" if tx else "VF_RXEN") & self._bit)

    def admin_mac(self) -> bytes | None:
        regs = self._adapter.pf.bar0
        hi = regs.stored(self._cfg[1])
        if not hi & (1 << 31):
            return None
        return regs.stored(self._cfg[0]).to_bytes(4, "little") + (hi & 0xFFFF).to_bytes(2, "little")

    def admin_vlan(self) -> int | None:
        v = self._adapter.pf.bar0.stored(self._cfg[2])
        return v & 0xFFF if v & (1 << 15) else None

    def anti_spoof(self) -> bool:
        return bool(self._adapter.pf.bar0.stored(self._cfg[3]) & 1)

    def _after_reset(self, kind: FunctionReset) -> None:
        self.mailbox.restore_vf_bits()

    def _reset_finished(self, kind: FunctionReset) -> None:
        super()._reset_finished(kind)
        if kind in (FunctionReset.FLR, FunctionReset.DEVICE):
            self._adapter.vf_flr_done(self)
