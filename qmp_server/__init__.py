"""A QMP server (the protocol QEMU's monitor speaks), generic: the stock `qmp-shell` and
`qemu.qmp` clients drive it.

The caller gives it a table of commands (`CommandTable` of `Command`s, arguments checked
QAPI-style with `qmp_server.args`) and a source of events (`EventSource`); it serves them
on a socket of its own and, in front of each guest's QEMU (`QemuTarget`), on one socket
per guest that passes every other command and QEMU's events through. Framing, limits and
error wording follow QEMU (framing.py, session.py). It imports nothing of eeh-sriov.
"""

from qmp_server.commands import Command, CommandTable
from qmp_server.errors import (
    COMMAND_NOT_FOUND,
    GENERIC_ERROR,
    QmpError,
    QmpServerError,
    ServerError,
)
from qmp_server.framing import MAX_MESSAGE
from qmp_server.server import EventCallback, EventSource, Server
from qmp_server.session import Exchange
from qmp_server.target import QemuTarget

__all__ = [
    "COMMAND_NOT_FOUND",
    "GENERIC_ERROR",
    "MAX_MESSAGE",
    "Command",
    "CommandTable",
    "EventCallback",
    "EventSource",
    "Exchange",
    "QemuTarget",
    "QmpError",
    "QmpServerError",
    "Server",
    "ServerError",
]
