"""The operator's QMP console (the stock `qmp-shell` drives it): the generic
`qmp_server.Server` with the PE commands (pe_commands.py: `eeh-inject`, `eeh-reset-pe`,
`query-pes`, ...) on the `Platform` facade and the platform's events.

`Console` owns one unix socket per guest (QEMU's commands and events passed through,
plus the PE commands and platform events) and a "platform" socket (PE commands and
platform events only). A guest's QEMU is a `qmp_server.QemuTarget`, which
`qemu_launcher.machine.Machine` satisfies.
"""

from hypervisor_shim.console.console import PLATFORM, PLATFORM_VERSION, Console, PlatformEvents
from hypervisor_shim.console.pe_commands import (
    DOWNSTREAM_PREFIX,
    PE_COMMANDS,
    pe_command_names,
    pe_commands,
)

__all__ = [
    "DOWNSTREAM_PREFIX",
    "PE_COMMANDS",
    "PLATFORM",
    "PLATFORM_VERSION",
    "Console",
    "PlatformEvents",
    "pe_command_names",
    "pe_commands",
]
