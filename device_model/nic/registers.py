"""BAR0 (NIC registers) and BAR3 (MSI-X table and PBA) of each function, declared.

The numbers (offsets, sizes, bit positions) come from `eeh_abi.nic`, the driver's view of
the adapter; these declarations add what only the model needs: field widths, access rules,
reset values and documentation. Unit tests check that every named bit of `eeh_abi.nic` is
a declared field at the same position, and that docs/registers.md (generated from these
declarations) lists every register at its offset.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from functools import cache
from typing import Any

from device_model.regs import Field, Layout, Register, Window, hw, reg, rw, rw1c, sc
from eeh_abi.nic import (
    ADAPTER_CTRL,
    ADAPTER_ERR,
    ADAPTER_STATUS,
    ADAPTER_STATUS_NUM_VFS,
    ADAPTER_STATUS_TOTAL_VFS,
    CTRL,
    ERR_ADDR,
    ICR,
    IMR,
    MAC_HI,
    MAC_HI_ADDR,
    MAC_LO,
    MAX_VFS,
    MBX_ACK,
    MBX_MEM_SIZE,
    MBX_REQ,
    MSIX_BAR,
    MSIX_BAR_SIZE,
    MSIX_ENTRY_ADDR_HI,
    MSIX_ENTRY_ADDR_LO,
    MSIX_ENTRY_CTRL,
    MSIX_ENTRY_DATA,
    MSIX_ENTRY_SIZE,
    MSIX_PBA_OFFSET,
    MSIX_TABLE_OFFSET,
    MSIX_VECTORS,
    MTU,
    MTU_DEFAULT,
    MTU_MAX,
    MTU_MIN,
    PF_BAR0_SIZE,
    PF_MBX,
    PF_MBX_MEM,
    RESET_COUNT,
    RING_ALIGN,
    RING_BASE_HI,
    RING_BASE_LO,
    RING_HEAD,
    RING_LEN,
    RING_MAX,
    RING_MIN,
    RING_TAIL,
    RX_BASE_HI,
    RX_BASE_LO,
    RX_HEAD,
    RX_LEN,
    RX_TAIL,
    STAT_NAMES,
    STATS,
    STATUS,
    SW_DROPPED,
    SW_UPLINK_RX,
    SW_UPLINK_TX,
    SWITCH_CTRL,
    TX_BASE_HI,
    TX_BASE_LO,
    TX_HEAD,
    TX_LEN,
    TX_TAIL,
    UPLINK_STATUS,
    VECTOR_CAUSES,
    VF_BAR0_SIZE,
    VF_ERR,
    VF_MBX,
    VF_MBX_MEM,
    VF_RXEN,
    VF_TXEN,
    VFCFG,
    VFCFG_FLAGS,
    VFCFG_MAC_HI,
    VFCFG_MAC_LO,
    VFCFG_STRIDE,
    VFCFG_VLAN,
    VFLR,
    VLAN,
    VLAN_VID,
    AdapterCtrl,
    AdapterErr,
    AdapterStatus,
    Cause,
    Ctrl,
    MacHi,
    Mbx,
    MsixVectorCtrl,
    PfMbx,
    Status,
    SwitchCtrl,
    UplinkStatus,
    Vector,
    VfcfgFlags,
    VfcfgMacHi,
    VfcfgVlan,
    Vlan,
    pf_mbx,
    stat_offset,
    vfcfg,
)

__all__ = [
    "ADAPTER_CTRL", "ADAPTER_ERR", "ADAPTER_STATUS", "ADAPTER_STATUS_NUM_VFS",
    "ADAPTER_STATUS_TOTAL_VFS", "CTRL", "ERR_ADDR", "ICR", "IMR", "MAC_HI", "MAC_HI_ADDR",
    "MAC_LO", "MAX_VFS", "MBX_ACK", "MBX_MEM_SIZE", "MBX_REQ", "MSIX_BAR", "MSIX_BAR_SIZE",
    "MSIX_PBA_OFFSET", "MSIX_TABLE_OFFSET", "MSIX_VECTORS", "MTU", "MTU_DEFAULT", "MTU_MAX",
    "MTU_MIN", "PF_BAR0_SIZE", "PF_MBX", "PF_MBX_MEM", "RESET_COUNT", "RING_MAX", "RING_MIN",
    "RX_BASE_HI",
    "RX_BASE_LO", "RX_HEAD", "RX_LEN", "RX_TAIL", "STATS", "STATUS", "STAT_NAMES", "SWITCH_CTRL",
    "SW_DROPPED", "SW_UPLINK_RX", "SW_UPLINK_TX", "TX_BASE_HI", "TX_BASE_LO", "TX_HEAD", "TX_LEN",
    "TX_TAIL", "UPLINK_STATUS", "VECTOR_CAUSES", "VFCFG", "VFCFG_STRIDE", "VFLR", "VF_BAR0_SIZE",
    "VF_ERR", "VF_MBX", "VF_MBX_MEM", "VF_RXEN", "VF_TXEN", "VLAN", "VLAN_VID", "AdapterCtrl",
    "AdapterErr", "AdapterStatus", "Cause", "Ctrl", "MacHi", "Mbx", "MsixVectorCtrl", "PfMbx",
    "Status", "SwitchCtrl", "UplinkStatus", "Vector", "VfcfgFlags", "VfcfgMacHi", "VfcfgVlan",
    "Vlan", "msix_layout", "pf_layout", "stat_offset", "vf_layout", "vfcfg_names",
]

RING_INDEX_BITS = RING_MAX.bit_length()  # LEN, HEAD and TAIL hold 0..RING_MAX


def _bit(make: Callable[..., Field], flag: enum.IntFlag, **kw: Any) -> Field:
    """The one-bit field `flag` names (name and position from eeh_abi.nic)."""
    return make((flag.name or "").lower(), flag.bit_length() - 1, **kw)


def _span(make: Callable[..., Field], name: str, mask: int, **kw: Any) -> Field:
    """The multi-bit field covering `mask` (a contiguous run of ones)."""
    lsb = (mask & -mask).bit_length() - 1
    return make(name, lsb, (mask >> lsb).bit_length(), **kw)


def _causes(pf: bool, kind: str) -> tuple[Field, ...]:
    make = rw1c if kind == "cause" else rw
    return tuple(_bit(make, c) for c in Cause if pf or c not in (Cause.VFLR, Cause.ADAPTER))


def _ring(prefix: str, base: int) -> list[Register]:
    index = RING_INDEX_BITS
    return [
        reg(f"{prefix}_BASE_LO", base + RING_BASE_LO, 4,
            _span(rw, "addr", 0xFFFFFFFF & -RING_ALIGN),
            doc=f"ring base bits 31:4 ({RING_ALIGN}-byte aligned)"),
        reg(f"{prefix}_BASE_HI", base + RING_BASE_HI, 4, rw("addr", 0, 32),
            doc="ring base bits 63:32"),
        reg(f"{prefix}_LEN", base + RING_LEN, 4, rw("count", 0, index),
            doc=f"descriptors; usable if {RING_MIN}..{RING_MAX}; "
                "writing BASE/LEN empties the ring"),
        reg(f"{prefix}_HEAD", base + RING_HEAD, 4, hw("head", 0, index),
            doc="next descriptor hardware uses"),
        reg(f"{prefix}_TAIL", base + RING_TAIL, 4, rw("tail", 0, index),
            doc="doorbell: one past the last descriptor handed to hardware"),
    ]


def _common(pf: bool) -> list[Register]:
    regs = [
        reg("CTRL", CTRL, 4, _bit(sc, Ctrl.RST, doc="reset this function's NIC state"),
            _bit(rw, Ctrl.TXEN), _bit(rw, Ctrl.RXEN),
            _bit(rw, Ctrl.PROMISC, doc="receive unknown unicast")),
        reg("STATUS", STATUS, 4, _bit(hw, Status.LINK_UP), _bit(rw1c, Status.RESET_DONE),
            _bit(hw, Status.ADAPTER_FAILED)),
        reg("MAC_LO", MAC_LO, 4, rw("addr", 0, 32), doc="MAC bytes 0-3 (byte 0 in bits 7:0)"),
        reg("MAC_HI", MAC_HI, 4, _span(rw, "addr", MAC_HI_ADDR), _bit(rw, MacHi.VALID),
            doc="MAC bytes 4-5; valid: the switch forwards to this address"),
        reg("MTU", MTU, 4, rw("mtu", 0, 16, MTU_DEFAULT),
            doc=f"bytes of payload; used clamped to {MTU_MIN}..{MTU_MAX}"),
        reg("VLAN", VLAN, 4, _span(rw, "vid", VLAN_VID), _bit(rw, Vlan.EN),
            doc="port VLAN of this function"),
        Register("ICR", ICR, 4, _causes(pf, "cause"), doc="interrupt cause"),
        Register("IMR", IMR, 4, _causes(pf, "mask"), doc="interrupt enable (1 = enabled)"),
        reg("RESET_COUNT", RESET_COUNT, 4, hw("count", 0, 32),
            doc="resets of this function since power-on (FLR, device reset, PE hot or "
                "fundamental reset, a VF appearing or vanishing with VF Enable; not "
                "CTRL.RST), kept across them: a driver that reads a value it did not "
                "expect was reset behind its back"),
        *_ring("TX", TX_BASE_LO),
        *_ring("RX", RX_BASE_LO),
    ]
    for name in STAT_NAMES:
        regs.append(reg(name, stat_offset(name), 8, hw("count", 0, 64),
                        doc="since the function's last reset"))
    return regs


@cache
def vf_layout() -> Layout:
    regs = _common(pf=False)
    regs.append(reg("MBX", VF_MBX, 4, _bit(sc, Mbx.REQ), _bit(sc, Mbx.ACK),
                    _bit(rw1c, Mbx.PFSTS), _bit(rw1c, Mbx.PFACK), _bit(hw, Mbx.RSTD),
                    _bit(hw, Mbx.RSTI, reset=1)))
    return Layout("vf-bar0", VF_BAR0_SIZE, regs,
                  [Window("MBX_MEM", VF_MBX_MEM, MBX_MEM_SIZE, "mailbox buffer, 16 dwords")])


def _bitmap(name: str, offset: int, writable: bool = False, doc: str = "") -> Register:
    fields = (rw("vf", 0, MAX_VFS) if writable else rw1c("vf", 0, MAX_VFS),)
    return Register(name, offset, 8, fields, doc + " (bit n: VF n)")


@cache
def pf_layout() -> Layout:
    regs = _common(pf=True)
    regs += [
        reg("ADAPTER_CTRL", ADAPTER_CTRL, 4, _bit(
            sc, AdapterCtrl.PF_RESET_DONE, doc="tell every VF mailbox the PF reset is done")),
        reg("ADAPTER_STATUS", ADAPTER_STATUS, 4, _bit(hw, AdapterStatus.READY, reset=1),
            _bit(hw, AdapterStatus.RESET_IN_PROGRESS, reset=1), _bit(hw, AdapterStatus.FATAL),
            _span(hw, "num_vfs", ADAPTER_STATUS_NUM_VFS),
            _span(hw, "total_vfs", ADAPTER_STATUS_TOTAL_VFS)),
        reg("ADAPTER_ERR", ADAPTER_ERR, 4, *(_bit(rw1c, bit) for bit in AdapterErr)),
        reg("ERR_ADDR", ERR_ADDR, 8, hw("addr", 0, 64), doc="address of the last error"),
        _bitmap("VF_ERR", VF_ERR, doc="VFs that had an error (RW1C)"),
        _bitmap("VF_TXEN", VF_TXEN, True, doc="VFs allowed to transmit"),
        _bitmap("VF_RXEN", VF_RXEN, True, doc="VFs allowed to receive"),
        _bitmap("VFLR", VFLR, doc="VFs that went through an FLR (RW1C)"),
        _bitmap("MBX_REQ", MBX_REQ, doc="VFs with a message for the PF (RW1C)"),
        _bitmap("MBX_ACK", MBX_ACK, doc="VFs that read the PF's message (RW1C)"),
        reg("SWITCH_CTRL", SWITCH_CTRL, 4,
            _bit(rw, SwitchCtrl.LOOPBACK, reset=1, doc="forward between functions"),
            _bit(rw, SwitchCtrl.UPLINK, reset=1, doc="forward to and from the uplink")),
        reg("UPLINK_STATUS", UPLINK_STATUS, 4, _bit(hw, UplinkStatus.LINK_UP)),
        reg("SW_UPLINK_TX", SW_UPLINK_TX, 8, hw("count", 0, 64), doc="frames sent on the uplink"),
        reg("SW_UPLINK_RX", SW_UPLINK_RX, 8, hw("count", 0, 64), doc="frames from the uplink"),
        reg("SW_DROPPED", SW_DROPPED, 8, hw("count", 0, 64), doc="frames the switch dropped"),
    ]
    for n in range(MAX_VFS):
        base = vfcfg(n)
        regs += [
            reg(f"VFCFG{n}_MAC_LO", base + VFCFG_MAC_LO, 4, rw("addr", 0, 32)),
            reg(f"VFCFG{n}_MAC_HI", base + VFCFG_MAC_HI, 4, _span(rw, "addr", MAC_HI_ADDR),
                _bit(rw, VfcfgMacHi.ADMIN, doc="force this MAC on the VF")),
            reg(f"VFCFG{n}_VLAN", base + VFCFG_VLAN, 4, _span(rw, "vid", VLAN_VID),
                _bit(rw, VfcfgVlan.EN, doc="force this port VLAN on the VF")),
            reg(f"VFCFG{n}_FLAGS", base + VFCFG_FLAGS, 4, _bit(
                rw, VfcfgFlags.ANTI_SPOOF, doc="drop TX frames whose source MAC is not the VF's")),
        ]
        regs.append(reg(f"PF_MBX{n}", pf_mbx(n), 4, _bit(sc, PfMbx.STS), _bit(sc, PfMbx.ACK),
                        _bit(rw1c, PfMbx.VFREQ), _bit(rw1c, PfMbx.VFACK)))
    return Layout("pf-bar0", PF_BAR0_SIZE, regs,
                  [Window("PF_MBX_MEM", PF_MBX_MEM, MBX_MEM_SIZE * MAX_VFS,
                          f"VF n's mailbox buffer at +{MBX_MEM_SIZE:#x}*n")])


@cache
def msix_layout() -> Layout:
    regs: list[Register] = []
    for v in range(MSIX_VECTORS):
        base = MSIX_TABLE_OFFSET + MSIX_ENTRY_SIZE * v
        regs += [
            reg(f"MSIX{v}_ADDR_LO", base + MSIX_ENTRY_ADDR_LO, 4, rw("addr", 2, 30)),
            reg(f"MSIX{v}_ADDR_HI", base + MSIX_ENTRY_ADDR_HI, 4, rw("addr", 0, 32)),
            reg(f"MSIX{v}_DATA", base + MSIX_ENTRY_DATA, 4, rw("data", 0, 32)),
            reg(f"MSIX{v}_CTRL", base + MSIX_ENTRY_CTRL, 4,
                _bit(rw, MsixVectorCtrl.MASKED, reset=1)),
        ]
    regs.append(reg("PBA", MSIX_PBA_OFFSET, 8, hw("pending", 0, MSIX_VECTORS),
                    doc="vectors latched while no interrupt sink was attached"))
    return Layout("msix-bar3", MSIX_BAR_SIZE, regs)


def vfcfg_names(n: int) -> tuple[str, str, str, str]:
    return (f"VFCFG{n}_MAC_LO", f"VFCFG{n}_MAC_HI", f"VFCFG{n}_VLAN", f"VFCFG{n}_FLAGS")
