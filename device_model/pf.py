"""The physical function: a NIC function plus the SR-IOV capability and adapter registers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_model.function import Function
from device_model.nic import registers as R
from device_model.pci.layouts import pf_config_layout
from device_model.pe import Pe
from device_model.reset import FunctionReset

if TYPE_CHECKING:
    from device_model.adapter import Adapter

VF_ENABLE = 1 << 0
VF_MSE = 1 << 3


class PfFunction(Function):
    def __init__(self, adapter: Adapter, pe: Pe) -> None:
        c = adapter.config
        layout = pf_config_layout(vendor_id=c.vendor_id, device_id=c.device_id,
                                  vf_device_id=c.vf_device_id, total_vfs=c.total_vfs,
                                  first_vf_offset=c.first_vf_offset, vf_stride=c.vf_stride)
        super().__init__(adapter, "pf", pe, layout, R.pf_layout())
        self.total_vfs = c.total_vfs
        self.config.on_write("sriov.ctrl", self._sriov_ctrl_written)
        self.config.on_write("sriov.num_vfs", self._num_vfs_written)

    @property
    def sriov_enabled(self) -> bool:
        return bool(self.config.stored("sriov.ctrl") & VF_ENABLE)

    @property
    def vf_mse(self) -> bool:
        return bool(self.config.stored("sriov.ctrl") & VF_MSE)

    @property
    def num_vfs(self) -> int:
        return self.config.stored("sriov.num_vfs")

    def _sriov_ctrl_written(self, old: int, new: int, written: int) -> None:
        if (old ^ new) & (VF_ENABLE | VF_MSE):
            self._adapter.sync_vfs()

    def _num_vfs_written(self, old: int, new: int, written: int) -> None:
        if self.sriov_enabled or new > self.total_vfs:
            self.config.set("sriov.num_vfs", old)  # fixed while VFs are enabled; <= TotalVFs

    def _after_reset(self, kind: FunctionReset) -> None:
        self._adapter.pf_was_reset(kind)

    def _reset_finished(self, kind: FunctionReset) -> None:
        super()._reset_finished(kind)
        self._adapter.update_switch()
