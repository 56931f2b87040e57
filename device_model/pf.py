"""The physical function: a NIC function plus the SR-IOV capability and adapter registers."""

from __future__ import annotations

from typing import Protocol

from device_model.adapter_config import AdapterConfig
from device_model.function import Function, FunctionHost
from device_model.nic import registers as R
from device_model.pci.layouts import pf_config_layout
from device_model.pe import Pe
from device_model.reset import FunctionReset
from eeh_abi.nic import SRIOV_CTRL, SRIOV_NUM_VFS, SriovCtrl

VF_ENABLE = int(SriovCtrl.VF_ENABLE)
VF_MSE = int(SriovCtrl.VF_MSE)


class PfHost(FunctionHost, Protocol):
    """What the PF needs beyond a function's share: the adapter behind it reacts to SR-IOV
    changes and to PF resets."""

    def sync_vfs(self) -> None:
        """VF Enable, NumVFs or VF MSE changed."""
        ...

    def pf_was_reset(self, kind: FunctionReset) -> None:
        """The PF's registers were just reset: reset the adapter behind it."""
        ...

    def update_switch(self) -> None:
        """The PF's reset state changed: the switch may forward again (or not)."""
        ...


class PfFunction(Function):
    def __init__(self, host: PfHost, pe: Pe, config: AdapterConfig) -> None:
        c = config
        layout = pf_config_layout(vendor_id=c.vendor_id, device_id=c.device_id,
                                  vf_device_id=c.vf_device_id, total_vfs=c.total_vfs,
                                  first_vf_offset=c.first_vf_offset, vf_stride=c.vf_stride)
        super().__init__(host, "pf", pe, layout, R.pf_layout(), flr_time=c.timing.flr)
        self._pf_host = host
        self._kept_sriov: tuple[int, int] | None = None
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
            self._pf_host.sync_vfs()

    def _num_vfs_written(self, old: int, new: int, written: int) -> None:
        if self.sriov_enabled or new > self.total_vfs:
            self.config.set("sriov.num_vfs", old)  # fixed while VFs are enabled; <= TotalVFs

    def enable_vfs(self, n: int) -> None:
        """Platform-side SR-IOV set-up (what firmware does before handing VFs to guests):
        NumVFs = n, then VF Enable + VF MSE, through the capability as a driver would."""
        self.config.write(SRIOV_CTRL, 2, 0)
        self.config.write(SRIOV_NUM_VFS, 2, n)
        self.config.write(SRIOV_CTRL, 2, VF_ENABLE | VF_MSE)

    def reset_state(self, kind: FunctionReset, *, announce: bool = True) -> None:
        # VFIO_DEVICE_RESET (QEMU resets the PF's machine) keeps SR-IOV enablement: the
        # platform owns it, and the VFs may be in use by other guests. Every other reset
        # of the PF (FLR, adapter hot/fundamental) clears it, as the SR-IOV spec says.
        self._kept_sriov = ((self.config.stored("sriov.num_vfs"),
                             self.config.stored("sriov.ctrl"))
                            if kind is FunctionReset.DEVICE else None)
        super().reset_state(kind, announce=announce)

    def _after_reset(self, kind: FunctionReset) -> None:
        kept, self._kept_sriov = self._kept_sriov, None
        if kept is not None:
            self.config.set("sriov.num_vfs", kept[0])
            self.config.set("sriov.ctrl", kept[1])
        self._pf_host.pf_was_reset(kind)

    def _reset_finished(self, kind: FunctionReset) -> None:
        super()._reset_finished(kind)
        self._pf_host.update_switch()
