"""The operator's QMP console (the stock `qmp-shell` drives it).

`Console` owns one unix socket per guest (QEMU's commands and events passed through,
plus the PE commands and platform events) and a "platform" socket (PE commands and
platform events only). The PE side is a `PlatformApi` (backend.py); a guest's QEMU is a
`QemuTarget` (target.py), which `qemu_launcher.machine.Machine` satisfies.
"""

from hypervisor_shim.console.backend import (
    EVENT_LOCKOUT_LIFTED,
    EVENT_PE_PERMANENT_FAILURE,
    EVENT_PE_STATE_CHANGED,
    EVENT_RECOVERY_STEP,
    INJECT_KINDS,
    PE_FLAGS,
    RESET_KINDS,
    PlatformApi,
    PlatformApiError,
    PlatformListener,
)
from hypervisor_shim.console.commands import DOWNSTREAM_PREFIX, PE_COMMANDS, pe_command_names
from hypervisor_shim.console.console import PLATFORM, Console
from hypervisor_shim.console.errors import ConsoleError, QmpError
from hypervisor_shim.console.framing import MAX_MESSAGE
from hypervisor_shim.console.session import Exchange
from hypervisor_shim.console.target import QemuTarget

__all__ = [
    "DOWNSTREAM_PREFIX",
    "EVENT_LOCKOUT_LIFTED",
    "EVENT_PE_PERMANENT_FAILURE",
    "EVENT_PE_STATE_CHANGED",
    "EVENT_RECOVERY_STEP",
    "INJECT_KINDS",
    "MAX_MESSAGE",
    "PE_COMMANDS",
    "PE_FLAGS",
    "PLATFORM",
    "RESET_KINDS",
    "Console",
    "ConsoleError",
    "Exchange",
    "PlatformApi",
    "PlatformApiError",
    "PlatformListener",
    "QemuTarget",
    "QmpError",
    "pe_command_names",
]
