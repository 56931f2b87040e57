"""The emulated SR-IOV Ethernet adapter as a driver sees it: IDs, config-space offsets,
BAR0 register offsets, named bits, the ring descriptor and the MSI-X layout.

Standard library only (guest python3 and host alike). The device model declares its
registers (widths, access rules, reset values) from these numbers, and a unit test checks
that every flag here names a declared field at the same bit. docs/registers.md describes
what the registers do.

Offsets are in bytes; registers are little-endian. Config-space offsets are absolute.
"""

from __future__ import annotations

import enum
import struct

# ---- identity
VENDOR_ID = 0x1B36
PF_DEVICE_ID = 0x10EE
VF_DEVICE_ID = 0x10EF
CLASS_CODE = 0x020000  # network controller, Ethernet
REVISION = 0x01
MAX_VFS = 64

# ---- config space (absolute offsets)
CFG_COMMAND = 0x04


class Command(enum.IntFlag):
    """Command register bits a driver sets."""

    MEMORY = 1 << 1  # memory space decode (BAR0, BAR3)
    BUS_MASTER = 1 << 2  # DMA and MSI-X messages


PCIE_CAP = 0x40  # PCI Express capability
PCIE_DEVCTL = PCIE_CAP + 0x08  # Device Control (16 bits)


class DevCtl(enum.IntFlag):
    """PCI Express Device Control bits a driver uses."""

    INITIATE_FLR = 1 << 15  # Function Level Reset


MSIX_CAP = 0x80  # MSI-X capability
MSIX_MSGCTL = MSIX_CAP + 0x02  # Message Control (16 bits)


class MsixMsgCtl(enum.IntFlag):
    FUNCTION_MASK = 1 << 14
    ENABLE = 1 << 15


AER_CAP = 0x100  # AER extended capability
AER_UNCOR_STATUS = AER_CAP + 0x04

SRIOV_CAP = 0x140  # SR-IOV extended capability (PF only)
SRIOV_CTRL = SRIOV_CAP + 0x08  # 16 bits
SRIOV_TOTAL_VFS = SRIOV_CAP + 0x0E
SRIOV_NUM_VFS = SRIOV_CAP + 0x10  # writable only while VF Enable is 0
SRIOV_FIRST_VF_OFFSET = SRIOV_CAP + 0x14
SRIOV_VF_STRIDE = SRIOV_CAP + 0x16
SRIOV_VF_DEVICE_ID = SRIOV_CAP + 0x1A


class SriovCtrl(enum.IntFlag):
    VF_ENABLE = 1 << 0
    VF_MSE = 1 << 3  # VF memory space enable


# ---- BARs
BAR0 = 0  # NIC registers
PF_BAR0_SIZE = 0x4000
VF_BAR0_SIZE = 0x1000

MSIX_BAR = 3  # MSI-X table and PBA
MSIX_BAR_SIZE = 0x1000
MSIX_TABLE_OFFSET = 0x000
MSIX_PBA_OFFSET = 0x800
MSIX_VECTORS = 4
MSIX_ENTRY_SIZE = 16  # vector n at MSIX_TABLE_OFFSET + 16 * n
MSIX_ENTRY_ADDR_LO, MSIX_ENTRY_ADDR_HI, MSIX_ENTRY_DATA, MSIX_ENTRY_CTRL = 0x0, 0x4, 0x8, 0xC


class MsixVectorCtrl(enum.IntFlag):
    MASKED = 1 << 0  # set at reset


# ---- BAR0, every function
CTRL, STATUS, MAC_LO, MAC_HI, MTU, VLAN = 0x000, 0x004, 0x008, 0x00C, 0x010, 0x014
ICR, IMR = 0x020, 0x024
RESET_COUNT = 0x028  # resets of this function since power-on; read-only, kept across them
TX_BASE_LO, TX_BASE_HI, TX_LEN, TX_HEAD, TX_TAIL = 0x100, 0x104, 0x108, 0x10C, 0x110
RX_BASE_LO, RX_BASE_HI, RX_LEN, RX_HEAD, RX_TAIL = 0x120, 0x124, 0x128, 0x12C, 0x130
# a ring's registers relative to its BASE_LO
RING_BASE_LO, RING_BASE_HI, RING_LEN, RING_HEAD, RING_TAIL = 0x0, 0x4, 0x8, 0xC, 0x10
STATS = 0x200  # 64-bit counters, in this order
STAT_NAMES = ("TX_PACKETS", "TX_BYTES", "TX_ERRORS", "TX_DROPPED",
              "RX_PACKETS", "RX_BYTES", "RX_MISSED", "RX_ERRORS")


def stat_offset(name: str) -> int:
    """BAR0 offset of the 64-bit counter `name` (one of STAT_NAMES)."""
    return STATS + 8 * STAT_NAMES.index(name)


class Ctrl(enum.IntFlag):
    RST = 1 << 0  # write 1: reset this function's NIC state
    TXEN = 1 << 1
    RXEN = 1 << 2
    PROMISC = 1 << 3  # receive unknown unicast


class Status(enum.IntFlag):
    LINK_UP = 1 << 0
    RESET_DONE = 1 << 1  # RW1C
    ADAPTER_FAILED = 1 << 2


class MacHi(enum.IntFlag):
    VALID = 1 << 31  # the switch forwards to this address


MAC_HI_ADDR = 0xFFFF  # MAC bytes 4-5 (MAC_LO holds bytes 0-3, byte 0 in bits 7:0)


class Vlan(enum.IntFlag):
    EN = 1 << 15  # put the function in port VLAN `vid`


VLAN_VID = 0x0FFF
MTU_DEFAULT = 1500
MTU_MIN = 68  # the value used is MTU clamped to MTU_MIN..MTU_MAX
MTU_MAX = 9216
RING_MIN = 2  # a ring is usable with RING_MIN..RING_MAX descriptors
RING_MAX = 4096
RING_ALIGN = 16  # ring base alignment (BASE_LO bits 3:0 read 0)


class Cause(enum.IntFlag):
    """ICR (RW1C) and IMR (1 = enabled) bits."""

    RX = 1 << 0
    TX = 1 << 1
    MAILBOX = 1 << 2
    LINK = 1 << 3
    ERROR = 1 << 4
    RESET_DONE = 1 << 5
    VFLR = 1 << 6  # PF only
    ADAPTER = 1 << 7  # PF only


class Vector(enum.IntEnum):
    """MSI-X vectors."""

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

# ---- BAR0, VF only: mailbox
VF_MBX, VF_MBX_MEM, MBX_MEM_SIZE = 0x400, 0x440, 0x40


class Mbx(enum.IntFlag):
    """VF MBX bits (VF side of the mailbox)."""

    REQ = 1 << 0  # write 1: message for the PF is in the buffer
    ACK = 1 << 1  # write 1: VF has read the PF's message
    PFSTS = 1 << 4  # RW1C: the PF sent a message
    PFACK = 1 << 5  # RW1C: the PF read the VF's message
    RSTD = 1 << 6  # PF reset done
    RSTI = 1 << 7  # PF reset in progress


# ---- BAR0, PF only: adapter registers
ADAPTER_CTRL, ADAPTER_STATUS, ADAPTER_ERR, ERR_ADDR = 0x1000, 0x1004, 0x1008, 0x1010
VF_ERR, VF_TXEN, VF_RXEN, VFLR, MBX_REQ, MBX_ACK = 0x1018, 0x1020, 0x1028, 0x1030, 0x1038, 0x1040
SWITCH_CTRL, UPLINK_STATUS = 0x1048, 0x104C
SW_UPLINK_TX, SW_UPLINK_RX, SW_DROPPED = 0x1050, 0x1058, 0x1060
VFCFG, VFCFG_STRIDE = 0x1100, 0x10  # VF n's configuration at VFCFG + VFCFG_STRIDE * n
VFCFG_MAC_LO, VFCFG_MAC_HI, VFCFG_VLAN, VFCFG_FLAGS = 0x0, 0x4, 0x8, 0xC
PF_MBX, PF_MBX_STRIDE = 0x2000, 4  # PF side of VF n's mailbox
PF_MBX_MEM = 0x3000  # VF n's mailbox buffer at PF_MBX_MEM + MBX_MEM_SIZE * n


def vfcfg(n: int) -> int:
    """BAR0 offset of VF n's configuration block (add VFCFG_MAC_LO ... VFCFG_FLAGS)."""
    return VFCFG + VFCFG_STRIDE * n


def pf_mbx(n: int) -> int:
    return PF_MBX + PF_MBX_STRIDE * n


def pf_mbx_mem(n: int) -> int:
    return PF_MBX_MEM + MBX_MEM_SIZE * n


class AdapterCtrl(enum.IntFlag):
    PF_RESET_DONE = 1 << 0  # write 1: every VF mailbox shows "PF reset done"


class AdapterStatus(enum.IntFlag):
    READY = 1 << 0
    RESET_IN_PROGRESS = 1 << 1
    FATAL = 1 << 2


ADAPTER_STATUS_NUM_VFS = 0xFF << 16  # VFs that exist
ADAPTER_STATUS_TOTAL_VFS = 0xFF << 24


class AdapterErr(enum.IntFlag):
    """ADAPTER_ERR bits (RW1C)."""

    INTERNAL = 1 << 0  # adapter fatal error
    DMA_FAULT = 1 << 1  # a PF DMA fault
    VF_ERROR = 1 << 2  # an error on a VF (see VF_ERR)
    INJECTED = 1 << 3  # an error injected on the adapter PE


class SwitchCtrl(enum.IntFlag):
    LOOPBACK = 1 << 0  # forward between functions
    UPLINK = 1 << 1  # forward to and from the uplink


class UplinkStatus(enum.IntFlag):
    LINK_UP = 1 << 0


class VfcfgMacHi(enum.IntFlag):
    ADMIN = 1 << 31  # force this MAC (VFCFG MAC_LO, MAC_HI bits 15:0) on the VF


class VfcfgVlan(enum.IntFlag):
    EN = 1 << 15  # force port VLAN VLAN_VID bits on the VF


class VfcfgFlags(enum.IntFlag):
    ANTI_SPOOF = 1 << 0  # TX frames whose source MAC is not the VF's complete with SPOOFED


class PfMbx(enum.IntFlag):
    """PF_MBX n bits (PF side of VF n's mailbox)."""

    STS = 1 << 0  # write 1: message for the VF is in the buffer
    ACK = 1 << 1  # write 1: PF has read the VF's message
    VFREQ = 1 << 4  # RW1C: the VF sent a message
    VFACK = 1 << 5  # RW1C: the VF read the PF's message


# ---- ring descriptor: 16 bytes, little-endian, TX and RX
DESC_FORMAT = "<QHHHH"  # addr, length, flags, status, vlan
DESC = struct.Struct(DESC_FORMAT)
DESC_SIZE = DESC.size
DESC_ADDR, DESC_LENGTH, DESC_FLAGS, DESC_STATUS, DESC_VLAN = 0, 8, 10, 12, 14


class DescStatus(enum.IntFlag):
    DD = 1 << 0  # descriptor done (written by hardware)
    ERR = 1 << 1  # completed with the error code in bits 15:8


DESC_ERROR_SHIFT = 8


class DescError(enum.IntEnum):
    """Error codes in status bits 15:8 (with ERR set)."""

    BAD_LENGTH = 1  # TX length shorter than an Ethernet header, or above MTU + 18
    SPOOFED = 2  # TX source MAC is not the VF's and anti-spoof is on
    ADAPTER_FAILED = 3  # the adapter had a fatal error and was not reset yet
    BUFFER_TOO_SMALL = 4  # RX buffer shorter than the frame (frame counted as an RX error)


def error_status(code: DescError) -> int:
    """The status word of a descriptor completed with error `code`."""
    return int(DescStatus.DD | DescStatus.ERR) | (int(code) << DESC_ERROR_SHIFT)


ETH_HEADER = 14
VLAN_TAG = 4  # frames of up to MTU + ETH_HEADER + VLAN_TAG bytes pass
