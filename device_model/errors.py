"""The device model's exceptions: one root, data-carrying subclasses.

Frozen and permanently failed are *states* of a PE, never exceptions. Exceptions here are
for programming errors and for bad input at the model's boundary. Guest memory's own
exceptions (`vfio_user.errors.DmaError`, `MapError`) come from the transport's
`GuestMemory`: the model catches those that a guest can cause (a DMA outside every map),
records them and, like a PHB, freezes the PE; it never lets them escape into its caller's
loop.
"""

from __future__ import annotations


class DeviceModelError(Exception):
    """Root of every exception the device model raises."""


class ConfigurationError(DeviceModelError):
    """An `AdapterConfig` (or a declaration) that cannot describe a real adapter."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"bad configuration {what}: {reason}")
        self.what = what
        self.reason = reason


class LayoutError(DeviceModelError):
    """A register or capability declaration that overlaps, overflows or repeats a name."""

    def __init__(self, layout: str, reason: str) -> None:
        super().__init__(f"layout {layout}: {reason}")
        self.layout = layout
        self.reason = reason


class UnknownPeError(DeviceModelError):
    """A PE address (or VF index) that names no PE of this adapter."""

    def __init__(self, address: int) -> None:
        super().__init__(f"no PE at address 0x{address:x}")
        self.address = address


class InjectionError(DeviceModelError):
    """An error-injection request with an invalid function code or arguments."""

    def __init__(self, function: int, reason: str) -> None:
        super().__init__(f"error injection function {function}: {reason}")
        self.function = function
        self.reason = reason
