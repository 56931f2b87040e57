"""eeh_abi.nic (what drivers use) and the model's declarations cannot drift apart.

Every named bit of eeh_abi.nic must be a declared one-bit field of that name at that bit,
in every register it describes; every one-bit field of those NIC registers must have a
name there; every declared register sits at the offset eeh_abi.nic gives it.
"""

from __future__ import annotations

import ast
import enum
import re
import sys
from pathlib import Path

import pytest

from device_model import Adapter, AdapterConfig
from device_model.nic import descriptor
from device_model.nic import registers as R
from device_model.pci.layouts import pf_config_layout, vf_config_layout
from device_model.regs import Layout, Register
from eeh_abi import nic

_C = AdapterConfig(total_vfs=nic.MAX_VFS)  # the adapter fully provisioned
PF_CFG = pf_config_layout(vendor_id=_C.vendor_id, device_id=_C.device_id,
                          vf_device_id=_C.vf_device_id, total_vfs=_C.total_vfs,
                          first_vf_offset=_C.first_vf_offset, vf_stride=_C.vf_stride)
VF_CFG = vf_config_layout(vendor_id=_C.vendor_id, vf_device_id=_C.vf_device_id)
PF, VF, MSIX = R.pf_layout(), R.vf_layout(), R.msix_layout()


def _every(layout: Layout, pattern: str) -> list[Register]:
    regs = [r for r in layout.registers if re.fullmatch(pattern, r.name)]
    assert regs, f"{layout.name} has no register matching {pattern}"
    return regs


# flag class -> (registers it describes, whether it names *every* one-bit field of them)
FLAG_REGISTERS: dict[type[enum.IntFlag], tuple[list[Register], bool]] = {
    nic.Ctrl: ([PF["CTRL"], VF["CTRL"]], True),
    nic.Status: ([PF["STATUS"], VF["STATUS"]], True),
    nic.MacHi: ([PF["MAC_HI"], VF["MAC_HI"]], True),
    nic.Vlan: ([PF["VLAN"], VF["VLAN"]], True),
    nic.Cause: ([PF["ICR"], PF["IMR"]], True),
    nic.Mbx: ([VF["MBX"]], True),
    nic.PfMbx: (_every(PF, r"PF_MBX\d+"), True),
    nic.AdapterCtrl: ([PF["ADAPTER_CTRL"]], True),
    nic.AdapterStatus: ([PF["ADAPTER_STATUS"]], True),
    nic.AdapterErr: ([PF["ADAPTER_ERR"]], True),
    nic.SwitchCtrl: ([PF["SWITCH_CTRL"]], True),
    nic.UplinkStatus: ([PF["UPLINK_STATUS"]], True),
    nic.VfcfgMacHi: (_every(PF, r"VFCFG\d+_MAC_HI"), True),
    nic.VfcfgVlan: (_every(PF, r"VFCFG\d+_VLAN"), True),
    nic.VfcfgFlags: (_every(PF, r"VFCFG\d+_FLAGS"), True),
    nic.MsixVectorCtrl: (_every(MSIX, r"MSIX\d+_CTRL"), True),
    # config space: only the bits a driver uses are named
    nic.Command: ([PF_CFG["command"], VF_CFG["command"]], False),
    nic.DevCtl: ([PF_CFG["pcie.devctl"], VF_CFG["pcie.devctl"]], False),
    nic.MsixMsgCtl: ([PF_CFG["msix.msgctl"], VF_CFG["msix.msgctl"]], False),
    nic.SriovCtrl: ([PF_CFG["sriov.ctrl"]], False),
}

# multi-bit fields eeh_abi.nic gives a mask for
FIELD_MASKS = [
    (PF["MAC_HI"], "addr", nic.MAC_HI_ADDR), (VF["MAC_HI"], "addr", nic.MAC_HI_ADDR),
    (PF["VLAN"], "vid", nic.VLAN_VID), (VF["VLAN"], "vid", nic.VLAN_VID),
    (PF["VFCFG0_MAC_HI"], "addr", nic.MAC_HI_ADDR), (PF["VFCFG0_VLAN"], "vid", nic.VLAN_VID),
    (PF["ADAPTER_STATUS"], "num_vfs", nic.ADAPTER_STATUS_NUM_VFS),
    (PF["ADAPTER_STATUS"], "total_vfs", nic.ADAPTER_STATUS_TOTAL_VFS),
]


def test_every_flag_class_is_checked() -> None:
    classes = {v for v in vars(nic).values()
               if isinstance(v, type) and issubclass(v, enum.IntFlag) and v is not enum.IntFlag}
    assert classes == set(FLAG_REGISTERS) | {nic.DescStatus}


@pytest.mark.parametrize("flags", list(FLAG_REGISTERS), ids=lambda f: f.__name__)
def test_flags_are_the_declared_fields(flags: type[enum.IntFlag]) -> None:
    registers, complete = FLAG_REGISTERS[flags]
    for r in registers:
        fields = {f.name: f for f in r.fields}
        for bit in flags:
            f = fields.get((bit.name or "").lower())
            assert f is not None, f"{r.name} declares no field {bit.name}"
            assert (f.width, f.mask) == (1, int(bit)), f"{r.name}.{f.name} vs {flags.__name__}"
        if complete:
            named = {(b.name or "").lower() for b in flags}
            ones = {f.name for f in r.fields if f.width == 1}
            assert ones <= named, f"{r.name}: {sorted(ones - named)} have no name in eeh_abi.nic"


def test_vf_causes_are_the_pf_ones_less_the_pf_only() -> None:
    pf_only = nic.Cause.VFLR | nic.Cause.ADAPTER
    for name in ("ICR", "IMR"):
        declared = sum(f.mask for f in VF[name].fields)
        assert declared == int(~pf_only & sum(nic.Cause))


@pytest.mark.parametrize("r,field,mask", FIELD_MASKS, ids=lambda x: getattr(x, "name", None))
def test_field_masks(r: Register, field: str, mask: int) -> None:
    assert r.field(field).mask == mask


def _abi_offset(name: str) -> int:
    """Where eeh_abi.nic puts a register the model declares."""
    if name in nic.STAT_NAMES:
        return nic.stat_offset(name)
    if m := re.fullmatch(r"VFCFG(\d+)_(\w+)", name):
        return nic.vfcfg(int(m[1])) + int(getattr(nic, f"VFCFG_{m[2]}"))
    if m := re.fullmatch(r"PF_MBX(\d+)", name):
        return nic.pf_mbx(int(m[1]))
    if m := re.fullmatch(r"MSIX(\d+)_(\w+)", name):
        return (nic.MSIX_TABLE_OFFSET + nic.MSIX_ENTRY_SIZE * int(m[1])
                + int(getattr(nic, f"MSIX_ENTRY_{m[2]}")))
    ring = re.fullmatch(r"(TX|RX)_(BASE_LO|BASE_HI|LEN|HEAD|TAIL)", name)
    if ring:
        assert getattr(nic, name) == getattr(nic, f"{ring[1]}_BASE_LO") + getattr(
            nic, f"RING_{ring[2]}")
    renamed = {"MBX": "VF_MBX", "PBA": "MSIX_PBA_OFFSET"}
    return int(getattr(nic, renamed.get(name, name)))


@pytest.mark.parametrize("layout", [PF, VF, MSIX], ids=lambda la: la.name)
def test_every_register_at_its_abi_offset(layout: Layout) -> None:
    for r in layout.registers:
        assert r.offset == _abi_offset(r.name), r.name
    sizes = {"pf-bar0": nic.PF_BAR0_SIZE, "vf-bar0": nic.VF_BAR0_SIZE,
             "msix-bar3": nic.MSIX_BAR_SIZE}
    assert layout.size == sizes[layout.name]
    windows = {w.name: (w.offset, w.size) for w in layout.windows}
    assert windows == {
        "pf-bar0": {"PF_MBX_MEM": (nic.PF_MBX_MEM, nic.MBX_MEM_SIZE * nic.MAX_VFS)},
        "vf-bar0": {"MBX_MEM": (nic.VF_MBX_MEM, nic.MBX_MEM_SIZE)},
        "msix-bar3": {},
    }[layout.name]
    assert nic.pf_mbx_mem(1) == nic.PF_MBX_MEM + nic.MBX_MEM_SIZE


def test_config_space_where_a_driver_looks() -> None:
    for cfg in (PF_CFG, VF_CFG):
        at = {r.name: r for r in cfg.registers}
        assert at["command"].offset == nic.CFG_COMMAND
        assert at["pcie.cap_id"].offset == nic.PCIE_CAP
        assert at["pcie.devctl"].offset == nic.PCIE_DEVCTL
        assert at["msix.cap_id"].offset == nic.MSIX_CAP
        assert at["msix.msgctl"].offset == nic.MSIX_MSGCTL
        assert at["msix.msgctl"].field("table_size").reset == nic.MSIX_VECTORS - 1
        for name in ("msix.table", "msix.pba"):
            assert at[name].field("bir").reset == nic.MSIX_BAR
        assert at["msix.table"].field("offset").reset << 3 == nic.MSIX_TABLE_OFFSET
        assert at["msix.pba"].field("offset").reset << 3 == nic.MSIX_PBA_OFFSET
        assert at["aer.header"].offset == nic.AER_CAP
        assert at["aer.uncor_status"].offset == nic.AER_UNCOR_STATUS
        assert at["vendor_id"].reset == nic.VENDOR_ID
        assert at["revision"].reset == nic.REVISION
        class_code = sum(at[n].reset << s for n, s in (("base_class", 16), ("subclass", 8),
                                                        ("prog_if", 0)))
        assert class_code == nic.CLASS_CODE
    assert PF_CFG["device_id"].reset == nic.PF_DEVICE_ID
    assert VF_CFG["device_id"].reset == nic.VF_DEVICE_ID
    assert PF_CFG["sriov.header"].offset == nic.SRIOV_CAP
    for name, offset in (("ctrl", nic.SRIOV_CTRL), ("total_vfs", nic.SRIOV_TOTAL_VFS),
                         ("num_vfs", nic.SRIOV_NUM_VFS),
                         ("first_vf_offset", nic.SRIOV_FIRST_VF_OFFSET),
                         ("vf_stride", nic.SRIOV_VF_STRIDE),
                         ("vf_device_id", nic.SRIOV_VF_DEVICE_ID)):
        assert PF_CFG[f"sriov.{name}"].offset == offset, name
    assert PF_CFG["sriov.vf_device_id"].reset == nic.VF_DEVICE_ID
    assert PF_CFG["sriov.total_vfs"].reset == nic.MAX_VFS


def test_regions_and_limits() -> None:
    a = Adapter(AdapterConfig(total_vfs=1))
    for fn, bar0 in ((a.pf, nic.PF_BAR0_SIZE), (a.vf(0), nic.VF_BAR0_SIZE)):
        sizes = {r.index: r.size for r in fn.regions()}
        assert (sizes[nic.BAR0], sizes[nic.MSIX_BAR]) == (bar0, nic.MSIX_BAR_SIZE)
        assert fn.irqs()[2].count == nic.MSIX_VECTORS  # VFIO_PCI_MSIX_IRQ_INDEX
    assert PF["MTU"].field("mtu").reset == nic.MTU_DEFAULT
    assert PF["MTU"].field("mtu").mask >= nic.MTU_MAX
    for name in ("TX_LEN", "TX_HEAD", "TX_TAIL", "RX_LEN", "RX_HEAD", "RX_TAIL"):
        assert (PF[name].fields[0].mask >> PF[name].fields[0].lsb) >= nic.RING_MAX, name
    assert PF["TX_BASE_LO"].field("addr").lsb == nic.RING_ALIGN.bit_length() - 1
    assert len(nic.VECTOR_CAUSES) == nic.MSIX_VECTORS
    assert int(sum(nic.VECTOR_CAUSES.values())) == int(sum(nic.Cause))  # each cause once


def test_descriptor_record_is_the_abi_format() -> None:
    d = descriptor.DESCRIPTOR
    assert d.struct.format == nic.DESC_FORMAT and d.size == nic.DESC_SIZE == 16
    assert d.offsets == {"addr": nic.DESC_ADDR, "length": nic.DESC_LENGTH,
                         "flags": nic.DESC_FLAGS, "status": nic.DESC_STATUS,
                         "vlan": nic.DESC_VLAN}
    assert (descriptor.DD, descriptor.ERR) == (nic.DescStatus.DD, nic.DescStatus.ERR)
    raw = nic.DESC.pack(0x1122334455667788, 60, 0, nic.error_status(nic.DescError.SPOOFED), 7)
    assert d.unpack(raw) == (0x1122334455667788, 60, 0, 0x0203, 7)


def test_eeh_abi_nic_imports_the_standard_library_only() -> None:
    tree = ast.parse(Path(nic.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0
            imported.add((node.module or "").split(".")[0])
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
