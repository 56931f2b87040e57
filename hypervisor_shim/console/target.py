"""What the console needs from a guest's QEMU: `QemuTarget`.

`qemu_launcher.machine.Machine` satisfies it as it is: `execute()` sends one QMP
command to QEMU and returns its `return` value, raising `qemu.qmp.ExecuteError` for an
error reply (the console passes its class and desc on unchanged); `qmp_client` is the
connected `qemu.qmp.QMPClient`, on which the console registers an event listener to
pass QEMU's events on, and whose greeting gives the version the guest's socket announces.
"""

from __future__ import annotations

from typing import Protocol

from qemu.qmp import QMPClient


class QemuTarget(Protocol):
    @property
    def qmp_client(self) -> QMPClient: ...

    async def execute(self, cmd: str, args: dict[str, object] | None) -> object: ...
