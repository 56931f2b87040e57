"""PAPR / RTAS numbers for EEH, and Linux's names for the driver side.

Sources: LoPAR (RTAS chapter, EEH appendix) and Linux `arch/powerpc/include/asm/eeh.h`,
`include/linux/pci.h` (pci_ers_result). See ../shared/reference/eeh-facts.md.
"""

from __future__ import annotations

import enum


class PeState(enum.IntEnum):
    """PE states as ibm,read-slot-reset-state2 returns them (there is no 3)."""

    NORMAL = 0  # MMIO and DMA enabled
    RESET = 1  # reset asserted
    FROZEN = 2  # MMIO and DMA stopped
    DMA_STOPPED = 4  # MMIO (load/store) enabled, DMA stopped
    UNAVAILABLE = 5  # temporarily unavailable; retry hint in ms, 0 = permanent


class Status(enum.IntEnum):
    """RTAS call statuses."""

    SUCCESS = 0
    HW_ERROR = -1
    BUSY = -2  # "busy, retry": the VF PE is locked out; the reply carries retry_ms
    PARAM_ERROR = -3  # also: a PE outside the caller's partition
    UNEXPECTED_STATE = -7
    NOT_SUPPORTED = -8  # fundamental reset not supported


class EehOption(enum.IntEnum):
    """ibm,set-eeh-option functions."""

    DISABLE = 0
    ENABLE = 1
    THAW_MMIO = 2  # state 2 -> 4
    THAW_DMA = 3  # state 4 -> 0


class SlotReset(enum.IntEnum):
    """ibm,set-slot-reset functions."""

    DEACTIVATE = 0
    HOT = 1  # FLR for a VF PE
    FUNDAMENTAL = 3


class ErrorFunction(enum.IntEnum):
    """ibm,errinjct "ioa-bus-error(-64)" function codes."""

    LOAD_MEM_ADDR = 0
    LOAD_MEM_DATA = 1
    LOAD_IO_ADDR = 2
    LOAD_IO_DATA = 3
    LOAD_CFG_ADDR = 4
    LOAD_CFG_DATA = 5
    STORE_MEM_ADDR = 6
    STORE_MEM_DATA = 7
    STORE_IO_ADDR = 8
    STORE_IO_DATA = 9
    STORE_CFG_ADDR = 10
    STORE_CFG_DATA = 11
    DMA_READ_ADDR = 12
    DMA_READ_DATA = 13
    DMA_READ_MASTER_ABORT = 14
    DMA_READ_TARGET_ABORT = 15
    DMA_WRITE_ADDR = 16
    DMA_WRITE_DATA = 17
    DMA_WRITE_MASTER_ABORT = 18
    DMA_WRITE_TARGET_ABORT = 19


class SharingMode(enum.IntEnum):
    """ibm,get-config-addr-info2 function 1."""

    NONE = 0
    NOT_SHARED = 1
    SHARED = 2


class ErsResult(enum.IntEnum):
    """Linux pci_ers_result values returned by the driver callbacks."""

    NONE = 1
    CAN_RECOVER = 2
    NEED_RESET = 3
    DISCONNECT = 4
    RECOVERED = 5
    NO_AER_DRIVER = 6


# Linux EEH (arch/powerpc/kernel/eeh_driver.c) merges the drivers' answers by priority.
_PRIORITY = {ErsResult.NONE: 1, ErsResult.NO_AER_DRIVER: 2, ErsResult.RECOVERED: 3,
             ErsResult.CAN_RECOVER: 4, ErsResult.DISCONNECT: 5, ErsResult.NEED_RESET: 6}


def merge_result(old: ErsResult, new: ErsResult) -> ErsResult:
    """How the results of several drivers of one PE combine (the higher priority wins)."""
    return new if _PRIORITY[new] > _PRIORITY[old] else old


class ChannelState(enum.Enum):
    """pci_channel_state passed to error_detected."""

    NORMAL = "io_normal"
    FROZEN = "io_frozen"
    PERM_FAILURE = "io_perm_failure"


# Linux EEH state flag bits (eeh_ops->get_state) and PE software flags.
STATE_UNAVAILABLE = 0x1
STATE_NOT_SUPPORT = 0x2
STATE_RESET_ACTIVE = 0x4
STATE_MMIO_ACTIVE = 0x8
STATE_DMA_ACTIVE = 0x10
STATE_MMIO_ENABLED = 0x20
STATE_DMA_ENABLED = 0x40
PE_ISOLATED = 0x1
PE_RECOVERING = 0x2
PE_CFG_BLOCKED = 0x4
PE_RESET = 0x8
PE_REMOVED = 0x400

# PAPR recovery-info word (this project numbers bits LSB-first: bit 31 is 1 << 31).
RECOVERY_RESET = 1 << 31
RECOVERY_SIDE_EFFECT = 1 << 30
RECOVERY_KIND_SHIFT = 28

# Linux policy defaults.
MAX_FREEZES = 5  # eeh_max_freezes: the 6th freeze within the window is permanent
FREEZE_WINDOW_S = 3600.0
RETRY_HINT_MS = 1000  # PAPR's usual "unavailable, retry in" hint
MAX_RESET_TRIES = 3


def linux_state_flags(code: PeState) -> int:
    """eeh_ops->get_state() flags for a PAPR state code."""
    return {
        PeState.NORMAL: STATE_MMIO_ACTIVE | STATE_DMA_ACTIVE | STATE_MMIO_ENABLED
        | STATE_DMA_ENABLED,
        PeState.RESET: STATE_RESET_ACTIVE,
        PeState.FROZEN: 0,
        PeState.DMA_STOPPED: STATE_MMIO_ACTIVE | STATE_MMIO_ENABLED,
        PeState.UNAVAILABLE: STATE_UNAVAILABLE,
    }[code]
