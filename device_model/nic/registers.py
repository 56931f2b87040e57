"""BAR0 (NIC registers) and BAR3 (MSI-X table and PBA) of each function, declared.

docs/registers.md is the driver writer's view of these declarations; a unit test checks
that every register declared here appears there at its offset.
"""

from __future__ import annotations

import enum
from functools import cache

from device_model.pci.caps import MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET
from device_model.regs import Field, Layout, Register, Window, hw, reg, rw, rw1c, sc

PF_BAR0_SIZE = 0x4000
VF_BAR0_SIZE = 0x1000
MSIX_BAR = 3
MSIX_BAR_SIZE = 0x1000
MSIX_VECTORS = 4
MAX_VFS = 64
RING_MAX = 4096
MTU_DEFAULT = 1500
MTU_MIN = 68
MTU_MAX = 9216


class Cause(enum.IntFlag):
    """ICR/IMR bits."""

    RX = 1 << 0
    TX = 1 << 1
    MAILBOX = 1 << 2
    LINK = 1 << 3
    ERROR = 1 << 4
    RESET_DONE = 1 << 5
    VFLR = 1 << 6  # PF only
    ADAPTER = 1 << 7  # PF only


class Vector(enum.IntEnum):
    """MSI-X vectors and the causes that raise them."""

    RX = 0
    TX = 1
    OTHER = 2
    ERROR = 3


VECTOR_CAUSES = {
    Vector.RX: Cause.RX,
    Vector.TX: Cause.TX,
    Vector.OTHER: Cause.MAILBOX | Cause.LINK | Cause.RESET_DONE | Cause.VFLR,
    Vector.ERROR: Cause.ERROR | Cause.ADAPTER,
}

# Offsets.
CTRL, STATUS, MAC_LO, MAC_HI, MTU, VLAN = 0x000, 0x004, 0x008, 0x00C, 0x010, 0x014
ICR, IMR = 0x020, 0x024
TX_BASE_LO, TX_BASE_HI, TX_LEN, TX_HEAD, TX_TAIL = 0x100, 0x104, 0x108, 0x10C, 0x110
RX_BASE_LO, RX_BASE_HI, RX_LEN, RX_HEAD, RX_TAIL = 0x120, 0x124, 0x128, 0x12C, 0x130
STATS = 0x200
STAT_NAMES = ("TX_PACKETS", "TX_BYTES", "TX_ERRORS", "TX_DROPPED",
              "RX_PACKETS", "RX_BYTES", "RX_MISSED", "RX_ERRORS")
VF_MBX, VF_MBX_MEM, MBX_MEM_SIZE = 0x400, 0x440, 0x40
ADAPTER_CTRL, ADAPTER_STATUS, ADAPTER_ERR, ERR_ADDR = 0x1000, 0x1004, 0x1008, 0x1010
VF_ERR, VF_TXEN, VF_RXEN, VFLR, MBX_REQ, MBX_ACK = 0x1018, 0x1020, 0x1028, 0x1030, 0x1038, 0x1040
SWITCH_CTRL, UPLINK_STATUS = 0x1048, 0x104C
SW_UPLINK_TX, SW_UPLINK_RX, SW_DROPPED = 0x1050, 0x1058, 0x1060
VFCFG, VFCFG_STRIDE = 0x1100, 0x10
PF_MBX = 0x2000
PF_MBX_MEM = 0x3000


class Mbx(enum.IntFlag):
    """VF_MBX bits (VF side of the mailbox)."""

    REQ = 1 << 0  # SC: message for the PF is in the buffer
    ACK = 1 << 1  # SC: VF has read the PF's message
    PFSTS = 1 << 4  # RW1C: the PF sent a message
    PFACK = 1 << 5  # RW1C: the PF read the VF's message
    RSTD = 1 << 6  # HW: PF reset done
    RSTI = 1 << 7  # HW: PF reset in progress


class PfMbx(enum.IntFlag):
    """PF_MBX[n] bits (PF side of VF n's mailbox)."""

    STS = 1 << 0  # SC: message for the VF is in the buffer
    ACK = 1 << 1  # SC: PF has read the VF's message
    VFREQ = 1 << 4  # RW1C: the VF sent a message
    VFACK = 1 << 5  # RW1C: the VF read the PF's message


def _causes(pf: bool, kind: str) -> tuple[Field, ...]:
    make = rw1c if kind == "cause" else rw
    names = [c for c in Cause if pf or c not in (Cause.VFLR, Cause.ADAPTER)]
    return tuple(make((c.name or "").lower(), c.bit_length() - 1) for c in names)


def _ring(prefix: str, base: int) -> list[Register]:
    return [
        reg(f"{prefix}_BASE_LO", base, 4, rw("addr", 4, 28),
            doc="ring base bits 31:4 (16-byte aligned)"),
        reg(f"{prefix}_BASE_HI", base + 4, 4, rw("addr", 0, 32), doc="ring base bits 63:32"),
        reg(f"{prefix}_LEN", base + 8, 4, rw("count", 0, 13),
            doc=f"descriptors; usable if 2..{RING_MAX}; writing BASE/LEN empties the ring"),
        reg(f"{prefix}_HEAD", base + 12, 4, hw("head", 0, 13), doc="next descriptor hardware uses"),
        reg(f"{prefix}_TAIL", base + 16, 4, rw("tail", 0, 13),
            doc="doorbell: one past the last descriptor handed to hardware"),
    ]


def _common(pf: bool) -> list[Register]:
    regs = [
        reg("CTRL", CTRL, 4, sc("rst", 0, doc="reset this function's NIC state"),
            rw("txen", 1), rw("rxen", 2), rw("promisc", 3, doc="receive unknown unicast")),
        reg("STATUS", STATUS, 4, hw("link_up", 0), rw1c("reset_done", 1),
            hw("adapter_failed", 2)),
        reg("MAC_LO", MAC_LO, 4, rw("addr", 0, 32), doc="MAC bytes 0-3 (byte 0 in bits 7:0)"),
        reg("MAC_HI", MAC_HI, 4, rw("addr", 0, 16), rw("valid", 31),
            doc="MAC bytes 4-5; valid: the switch forwards to this address"),
        reg("MTU", MTU, 4, rw("mtu", 0, 16, MTU_DEFAULT),
            doc=f"bytes of payload; used clamped to {MTU_MIN}..{MTU_MAX}"),
        reg("VLAN", VLAN, 4, rw("vid", 0, 12), rw("en", 15), doc="port VLAN of this function"),
        Register("ICR", ICR, 4, _causes(pf, "cause"), doc="interrupt cause"),
        Register("IMR", IMR, 4, _causes(pf, "mask"), doc="interrupt enable (1 = enabled)"),
        *_ring("TX", TX_BASE_LO),
        *_ring("RX", RX_BASE_LO),
    ]
    for i, name in enumerate(STAT_NAMES):
        regs.append(reg(name, STATS + 8 * i, 8, hw("count", 0, 64),
                        doc="since the function's last reset"))
    return regs


@cache
def vf_layout() -> Layout:
    regs = _common(pf=False)
    regs.append(reg("MBX", VF_MBX, 4, sc("req", 0), sc("ack", 1), rw1c("pfsts", 4),
                    rw1c("pfack", 5), hw("rstd", 6), hw("rsti", 7, reset=1)))
    return Layout("vf-bar0", VF_BAR0_SIZE, regs,
                  [Window("MBX_MEM", VF_MBX_MEM, MBX_MEM_SIZE, "mailbox buffer, 16 dwords")])


def _bitmap(name: str, offset: int, writable: bool = False, doc: str = "") -> Register:
    fields = (rw("vf", 0, MAX_VFS) if writable else rw1c("vf", 0, MAX_VFS),)
    return Register(name, offset, 8, fields, doc + " (bit n: VF n)")


@cache
def pf_layout() -> Layout:
    regs = _common(pf=True)
    regs += [
        reg("ADAPTER_CTRL", ADAPTER_CTRL, 4,
            sc("pf_reset_done", 0, doc="tell every VF mailbox the PF reset is done")),
        reg("ADAPTER_STATUS", ADAPTER_STATUS, 4, hw("ready", 0, reset=1),
            hw("reset_in_progress", 1, reset=1), hw("fatal", 2), hw("num_vfs", 16, 8),
            hw("total_vfs", 24, 8)),
        reg("ADAPTER_ERR", ADAPTER_ERR, 4, rw1c("internal", 0), rw1c("dma_fault", 1),
            rw1c("vf_error", 2), rw1c("injected", 3)),
        reg("ERR_ADDR", ERR_ADDR, 8, hw("addr", 0, 64), doc="address of the last error"),
        _bitmap("VF_ERR", VF_ERR, doc="VFs that had an error (RW1C)"),
        _bitmap("VF_TXEN", VF_TXEN, True, doc="VFs allowed to transmit"),
        _bitmap("VF_RXEN", VF_RXEN, True, doc="VFs allowed to receive"),
        _bitmap("VFLR", VFLR, doc="VFs that went through an FLR (RW1C)"),
        _bitmap("MBX_REQ", MBX_REQ, doc="VFs with a message for the PF (RW1C)"),
        _bitmap("MBX_ACK", MBX_ACK, doc="VFs that read the PF's message (RW1C)"),
        reg("SWITCH_CTRL", SWITCH_CTRL, 4, rw("loopback", 0, 1, 1, "forward between functions"),
            rw("uplink", 1, 1, 1, "forward to and from the uplink")),
        reg("UPLINK_STATUS", UPLINK_STATUS, 4, hw("link_up", 0)),
        reg("SW_UPLINK_TX", SW_UPLINK_TX, 8, hw("count", 0, 64), doc="frames sent on the uplink"),
        reg("SW_UPLINK_RX", SW_UPLINK_RX, 8, hw("count", 0, 64), doc="frames from the uplink"),
        reg("SW_DROPPED", SW_DROPPED, 8, hw("count", 0, 64), doc="frames the switch dropped"),
    ]
    for n in range(MAX_VFS):
        base = VFCFG + VFCFG_STRIDE * n
        regs += [
            reg(f"VFCFG{n}_MAC_LO", base, 4, rw("addr", 0, 32)),
            reg(f"VFCFG{n}_MAC_HI", base + 4, 4, rw("addr", 0, 16),
                rw("admin", 31, doc="force this MAC on the VF")),
            reg(f"VFCFG{n}_VLAN", base + 8, 4, rw("vid", 0, 12),
                rw("en", 15, doc="force this port VLAN on the VF")),
            reg(f"VFCFG{n}_FLAGS", base + 12, 4,
                rw("anti_spoof", 0, doc="drop TX frames whose source MAC is not the VF's")),
        ]
        regs.append(reg(f"PF_MBX{n}", PF_MBX + 4 * n, 4, sc("sts", 0), sc("ack", 1),
                        rw1c("vfreq", 4), rw1c("vfack", 5)))
    return Layout("pf-bar0", PF_BAR0_SIZE, regs,
                  [Window("PF_MBX_MEM", PF_MBX_MEM, MBX_MEM_SIZE * MAX_VFS,
                          "VF n's mailbox buffer at +0x40*n")])


@cache
def msix_layout() -> Layout:
    regs: list[Register] = []
    for v in range(MSIX_VECTORS):
        base = MSIX_TABLE_OFFSET + 16 * v
        regs += [
            reg(f"MSIX{v}_ADDR_LO", base, 4, rw("addr", 2, 30)),
            reg(f"MSIX{v}_ADDR_HI", base + 4, 4, rw("addr", 0, 32)),
            reg(f"MSIX{v}_DATA", base + 8, 4, rw("data", 0, 32)),
            reg(f"MSIX{v}_CTRL", base + 12, 4, rw("masked", 0, 1, 1)),
        ]
    regs.append(reg("PBA", MSIX_PBA_OFFSET, 8, hw("pending", 0, MSIX_VECTORS),
                    doc="vectors latched while no interrupt sink was attached"))
    return Layout("msix-bar3", MSIX_BAR_SIZE, regs)


def stat_offset(name: str) -> int:
    return STATS + 8 * STAT_NAMES.index(name)


def vfcfg_names(n: int) -> tuple[str, str, str, str]:
    return (f"VFCFG{n}_MAC_LO", f"VFCFG{n}_MAC_HI", f"VFCFG{n}_VLAN", f"VFCFG{n}_FLAGS")

