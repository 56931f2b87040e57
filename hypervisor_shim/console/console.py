"""The operator's QMP console: a `qmp_server.Server` with the PE commands and the
platform's events, its own socket named "platform".

    console = Console(directory, platform)         # hypervisor_shim.platform.Platform
    await console.start()                          # <directory>/platform.qmp
    path = await console.add_guest("g1", machine)  # <directory>/g1.qmp
    ...                                            # qmp-shell <path>
    await console.remove_guest("g1")
    await console.stop()                           # clients closed, sockets removed

Every socket adds the PE commands (pe_commands.py) and every platform event
(`Platform.add_listener`: each `PlatformEvent` as its QMP event, `name` and
`to_json()`); a guest's socket passes everything else to that guest's QEMU.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypervisor_shim.console.hmp import hmp_commands
from hypervisor_shim.console.pe_commands import pe_commands
from hypervisor_shim.platform import Platform
from hypervisor_shim.platform_api import PlatformEvent
from qmp_server import MAX_MESSAGE, Server
from qmp_server.server import HISTORY, EventCallback

PLATFORM = "platform"
# The platform socket's greeting and query-version: the shape QEMU uses (clients such as
# qmp-shell read version.qemu), the numbers of eeh-sriov.
PLATFORM_VERSION = {"qemu": {"major": 0, "minor": 1, "micro": 0},
                    "package": "eeh-sriov platform console"}


class PlatformEvents:
    """The platform's events as a `qmp_server.EventSource`: (QMP event name, data)."""

    def __init__(self, plat: Platform) -> None:
        self.plat = plat

    def add_listener(self, callback: EventCallback) -> None:
        def forward(ev: PlatformEvent) -> None:  # on the model's loop thread
            callback(ev.name, ev.to_json())  # the server hands it to its own loop
        self.plat.add_listener(forward)


class Console(Server):
    def __init__(self, directory: str | os.PathLike[str], platform: Platform, *,
                 history_size: int = HISTORY, limit: int = MAX_MESSAGE) -> None:
        super().__init__(directory, pe_commands(platform), PlatformEvents(platform),
                         local=PLATFORM, version=PLATFORM_VERSION,
                         history_size=history_size, limit=limit,
                         local_commands=hmp_commands(platform))
        self.platform = platform

    @property
    def platform_path(self) -> Path:
        return self.local_path
