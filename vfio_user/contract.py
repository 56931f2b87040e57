"""The contract between a PCI function (a device model) and the transport that carries it.

A transport (the vfio-user server for real QEMU guests, or an in-process harness) sees a
function only through `PciFunction`: its regions, its interrupts, region accesses, reset,
and attach/detach of the guest side (DMA space and interrupt sink). The transport checks
that every access lies inside a region before calling; the function still never raises
for a guest's access: a frozen function answers all-ones, drops stores, and so on.

Numbers follow VFIO (linux/vfio.h), which vfio-user reuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import Protocol

from vfio_user.memory import GuestMemory


class RegionIndex(IntEnum):
    BAR0 = 0
    BAR1 = 1
    BAR2 = 2
    BAR3 = 3
    BAR4 = 4
    BAR5 = 5
    ROM = 6
    CONFIG = 7
    VGA = 8


NUM_REGIONS = 9


class RegionFlag(IntFlag):
    READ = 1
    WRITE = 2
    MMAP = 4  # never offered: a mapped BAR would let the guest bypass a freeze
    CAPS = 8


class IrqIndex(IntEnum):
    INTX = 0
    MSI = 1
    MSIX = 2
    ERR = 3
    REQ = 4


NUM_IRQS = 5


class IrqFlag(IntFlag):
    EVENTFD = 1
    MASKABLE = 2
    AUTOMASKED = 4
    NORESIZE = 8


@dataclass(frozen=True)
class RegionInfo:
    index: int
    size: int  # 0: the region does not exist
    flags: RegionFlag


@dataclass(frozen=True)
class IrqInfo:
    index: int
    count: int  # 0: the function has no interrupts of that kind
    flags: IrqFlag


class IrqSink(Protocol):
    """Where a function's interrupts go (eventfds in vfio-user, a list in tests)."""

    def trigger(self, index: int, vector: int) -> None: ...


class PciFunction(Protocol):
    """One PCI function (PF or VF) as a transport sees it."""

    @property
    def name(self) -> str: ...

    def regions(self) -> Sequence[RegionInfo]:
        """All NUM_REGIONS regions, in index order (size 0 for absent ones)."""
        ...

    def irqs(self) -> Sequence[IrqInfo]:
        """All NUM_IRQS interrupt indexes, in index order (count 0 for absent ones)."""
        ...

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        """Exactly `size` bytes. Frozen: all-ones. Never raises for an in-bounds access."""
        ...

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        """Frozen: dropped. Never raises for an in-bounds access."""
        ...

    def device_reset(self) -> None:
        """VFIO_DEVICE_RESET: the transport's reset (QEMU sends it at machine reset)."""
        ...

    def attach(self, memory: GuestMemory, irqs: IrqSink) -> None:
        """A client connected: this is its DMA space and its interrupt sink."""
        ...

    def detach(self) -> None:
        """The client went away: stop DMA and interrupts; keep device state."""
        ...
