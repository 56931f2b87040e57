"""The device model's exceptions: one root, data-carrying subclasses.

Frozen and permanently failed are *states* of a PE, never exceptions. Exceptions here are
for programming errors and for bad input at the model's boundary (a DMA outside every map,
an overlapping DMA_MAP): the model itself catches those that a guest can cause, records
them and, like a PHB, freezes the PE; it never lets them escape into its caller's loop.
"""

from __future__ import annotations


class DeviceModelError(Exception):
    """Root of every exception the device model raises."""


class DmaError(DeviceModelError):
    """A DMA touched guest memory that no map covers (or covers read-only)."""

    def __init__(self, addr: int, length: int, reason: str) -> None:
        super().__init__(f"DMA {reason}: addr=0x{addr:x} length={length}")
        self.addr = addr
        self.length = length
        self.reason = reason


class MapError(DeviceModelError):
    """A DMA map request that cannot be honoured (overlap, zero size, wrap, unknown range)."""

    def __init__(self, addr: int, size: int, reason: str) -> None:
        super().__init__(f"DMA map {reason}: addr=0x{addr:x} size=0x{size:x}")
        self.addr = addr
        self.size = size
        self.reason = reason
