"""What the server needs from a guest's QEMU: `QemuTarget`.

`execute()` sends one QMP command to QEMU and returns its `return` value, raising
`qemu.qmp.ExecuteError` for an error reply (the server passes its class and desc on
unchanged); `qmp_client` is the connected `qemu.qmp.QMPClient`, on which the server
registers an event listener to pass QEMU's events on, and whose greeting gives the
version the guest's socket announces. (eeh-sriov's `qemu_launcher.machine.Machine` is
one as it is.)
"""

from __future__ import annotations

from typing import Protocol

from qemu.qmp import QMPClient


class QemuTarget(Protocol):
    @property
    def qmp_client(self) -> QMPClient: ...

    async def execute(self, cmd: str, args: dict[str, object] | None) -> object: ...
