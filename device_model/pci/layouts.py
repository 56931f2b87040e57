"""The config-space layouts of this adapter's PF and VFs.

Both present a full type 0 header, because each VF is served to its guest as a standalone
vfio-user device (QEMU refuses to build SR-IOV VFs for vfio-user): a VF's Vendor ID,
Device ID, Command decode bits and BARs are shown the way Linux's vfio-pci virtualizes them
for an assigned VF.

  0x000  header (BAR0 NIC registers, BAR3 MSI-X table and PBA)
  0x040  PCI Express capability (endpoint, FLR)      -> 0x080
  0x080  MSI-X capability (4 vectors, BAR3)          -> end
  0x100  AER extended capability                     -> 0x140 on the PF, end on a VF
  0x140  SR-IOV extended capability (PF only)        -> end

The offsets and IDs are `eeh_abi.nic`'s; a unit test checks the registers a driver uses
sit where `eeh_abi.nic` says.
"""

from __future__ import annotations

from functools import cache

from device_model.pci import caps, ids
from device_model.pci.config import build_layout
from device_model.pci.header import type0_header
from device_model.regs import Layout
from eeh_abi.nic import (
    AER_CAP,
    MSIX_BAR,
    MSIX_BAR_SIZE,
    MSIX_CAP,
    MSIX_VECTORS,
    PCIE_CAP,
    PF_BAR0_SIZE,
    REVISION,
    SRIOV_CAP,
    VF_BAR0_SIZE,
)

__all__ = ["AER_CAP", "MSIX_CAP", "PCIE_CAP", "REVISION", "SRIOV_CAP", "pf_config_layout",
           "vf_config_layout"]


@cache
def pf_config_layout(*, vendor_id: int, device_id: int, vf_device_id: int, total_vfs: int,
                     first_vf_offset: int, vf_stride: int) -> Layout:
    header = type0_header(vendor_id=vendor_id, device_id=device_id, revision=REVISION,
                          class_code=ids.CLASS_ETHERNET, subsys_vendor=vendor_id,
                          subsys_id=device_id, bars={0: PF_BAR0_SIZE, MSIX_BAR: MSIX_BAR_SIZE},
                          cap_ptr=PCIE_CAP)
    sriov = caps.sriov(total_vfs=total_vfs, first_vf_offset=first_vf_offset,
                       vf_stride=vf_stride, vf_device_id=vf_device_id,
                       vf_bars={0: VF_BAR0_SIZE, MSIX_BAR: MSIX_BAR_SIZE})
    return build_layout("pf-config", header, _standard_caps(),
                        [(AER_CAP, caps.aer()), (SRIOV_CAP, sriov)])


@cache
def vf_config_layout(*, vendor_id: int, vf_device_id: int) -> Layout:
    header = type0_header(vendor_id=vendor_id, device_id=vf_device_id, revision=REVISION,
                          class_code=ids.CLASS_ETHERNET, subsys_vendor=vendor_id,
                          subsys_id=vf_device_id, bars={0: VF_BAR0_SIZE, MSIX_BAR: MSIX_BAR_SIZE},
                          cap_ptr=PCIE_CAP)
    return build_layout("vf-config", header, _standard_caps(), [(AER_CAP, caps.aer())])


def _standard_caps() -> list[tuple[int, caps.Capability]]:
    return [(PCIE_CAP, caps.pcie_endpoint()), (MSIX_CAP, caps.msix(MSIX_VECTORS, MSIX_BAR))]
