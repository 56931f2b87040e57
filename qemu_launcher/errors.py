"""Exceptions of the VM layer: one root, data-carrying subclasses."""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class VmError(Exception):
    """Root of every exception raised by qemu_launcher."""


class StateError(VmError):
    """An operation was asked of an object in a state that does not allow it."""

    def __init__(self, owner: str, operation: str, state: Enum,
                 required: tuple[Enum, ...]) -> None:
        allowed = " or ".join(r.name for r in required)
        super().__init__(f"{owner}: {operation} needs state {allowed}, "
                         f"but the state is {state.name}")
        self.owner = owner
        self.operation = operation
        self.state = state
        self.required = required


class AssetError(VmError):
    """A root fs, kernel, initramfs or QEMU binary could not be built or found."""


class QemuNotFound(AssetError):
    """No QEMU >= the minimum version with the vfio-user-pci device is available."""


class GuestError(VmError):
    """A guest failed to boot or run; carries the evidence a user needs to see why."""

    def __init__(self, message: str, run_dir: Path, console_tail: list[str]) -> None:
        tail = "\n".join(f"  | {line}" for line in console_tail) or "  | (console empty)"
        super().__init__(
            f"{message}\n  artifacts: {run_dir}\n  last console lines:\n{tail}"
        )
        self.run_dir = run_dir
        self.console_tail = console_tail


class BootTimeout(GuestError):
    """The guest did not print its readiness marker in time."""


class GuestTimeout(GuestError):
    """The guest command did not finish in time (a hung guest)."""


class QemuExited(GuestError):
    """QEMU exited before the guest finished (crash, bad argument, kernel panic)."""

    def __init__(
        self, message: str, run_dir: Path, console_tail: list[str],
        returncode: int | None = None,
    ) -> None:
        super().__init__(message, run_dir, console_tail)
        self.returncode = returncode


class UnplugRefused(VmError):
    """device_del of this function would make this QEMU abort, killing the guest."""

    def __init__(self, device: str, qemu_version: str, why: str = "") -> None:
        super().__init__(
            f"not removing {device}: QEMU {qemu_version}'s vfio-user-pci aborts when a "
            "device with MSI-X is removed (vfio_user_msix_teardown assertion) and the guest "
            "would die with it; a QEMU with the fix is needed (set "
            "EEH_QEMU_FIXES=vfio-user-msix-teardown if the host's QEMU was built with it)"
            + (f": {why}" if why else ""))
        self.device = device
        self.qemu_version = qemu_version
        self.why = why

