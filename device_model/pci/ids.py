"""Numbers from the PCI, PCI Express and SR-IOV specifications that the model uses."""

from __future__ import annotations

import enum

from eeh_abi import nic

CONFIG_SIZE = 4096
EXT_CAP_START = 0x100

# Capability IDs (standard, 8-bit) and extended capability IDs (16-bit).
CAP_ID_PCIE = 0x10
CAP_ID_MSIX = 0x11
EXT_CAP_ID_AER = 0x0001
EXT_CAP_ID_SRIOV = 0x0010

# Command register bits (the ones a driver sets are eeh_abi.nic's).
CMD_MEMORY = int(nic.Command.MEMORY)
CMD_BUS_MASTER = int(nic.Command.BUS_MASTER)

# Status register bits (RW1C ones).
STS_MASTER_DATA_PARITY = 1 << 8
STS_SIG_TARGET_ABORT = 1 << 11
STS_RCV_TARGET_ABORT = 1 << 12
STS_RCV_MASTER_ABORT = 1 << 13
STS_SIG_SYSTEM_ERROR = 1 << 14
STS_DETECTED_PARITY = 1 << 15

# PCI Express Device Status bits.
DEVSTA_CED = 1 << 0
DEVSTA_NFED = 1 << 1
DEVSTA_FED = 1 << 2
DEVSTA_URD = 1 << 3

# Device Control: Initiate Function Level Reset.
DEVCTL_BCR_FLR = int(nic.DevCtl.INITIATE_FLR)


class AerUncorrectable(enum.IntFlag):
    """AER Uncorrectable Error Status/Mask/Severity bits (endpoint subset)."""

    DATA_LINK_PROTOCOL = 1 << 4
    POISONED_TLP = 1 << 12
    FLOW_CONTROL_PROTOCOL = 1 << 13
    COMPLETION_TIMEOUT = 1 << 14
    COMPLETER_ABORT = 1 << 15
    UNEXPECTED_COMPLETION = 1 << 16
    RECEIVER_OVERFLOW = 1 << 17
    MALFORMED_TLP = 1 << 18
    ECRC = 1 << 19
    UNSUPPORTED_REQUEST = 1 << 20
    ACS_VIOLATION = 1 << 21
    INTERNAL = 1 << 22


class AerCorrectable(enum.IntFlag):
    RECEIVER = 1 << 0
    BAD_TLP = 1 << 6
    BAD_DLLP = 1 << 7
    REPLAY_ROLLOVER = 1 << 8
    REPLAY_TIMEOUT = 1 << 12
    ADVISORY_NON_FATAL = 1 << 13
    CORRECTED_INTERNAL = 1 << 14
    HEADER_LOG_OVERFLOW = 1 << 15


# Spec defaults: severity (fatal) for DLP, FCP, receiver overflow, malformed TLP, internal;
# masked by default: uncorrectable internal; correctable advisory, internal, log overflow.
AER_UNCOR_SEVERITY_DEFAULT = int(
    AerUncorrectable.DATA_LINK_PROTOCOL | AerUncorrectable.FLOW_CONTROL_PROTOCOL
    | AerUncorrectable.RECEIVER_OVERFLOW | AerUncorrectable.MALFORMED_TLP
    | AerUncorrectable.INTERNAL
)
AER_UNCOR_MASK_DEFAULT = int(AerUncorrectable.INTERNAL)
AER_COR_MASK_DEFAULT = int(
    AerCorrectable.ADVISORY_NON_FATAL | AerCorrectable.CORRECTED_INTERNAL
    | AerCorrectable.HEADER_LOG_OVERFLOW
)

CLASS_ETHERNET = nic.CLASS_CODE
