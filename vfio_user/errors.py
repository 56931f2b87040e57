"""Exceptions of the vfio-user transport: one root, data-carrying subclasses.

The errno a peer sees is chosen in one place, `errno_for`, through one table
(`FAULT_ERRNO`): handlers raise `Refused` with a `Fault` (what is wrong, in words), the
server's message boundary turns any exception into an errno. Guest memory's exceptions
(`MapError`, `DmaError`, raised by `memory.GuestMemory`) and the OS's (`OSError`) go
through the same function.
"""

from __future__ import annotations

import errno as _errno
from enum import Enum

from vfio_user.commands import command_name


class VfioUserError(Exception):
    """Root of every exception of the vfio-user package."""


class DmaError(VfioUserError):
    """A DMA touched guest memory that no map covers (or covers read-only)."""

    def __init__(self, addr: int, length: int, reason: str) -> None:
        super().__init__(f"DMA {reason}: addr=0x{addr:x} length={length}")
        self.addr = addr
        self.length = length
        self.reason = reason


class MapError(VfioUserError):
    """A DMA map request that cannot be honoured (overlap, zero size, wrap, unknown range)."""

    def __init__(self, addr: int, size: int, reason: str) -> None:
        super().__init__(f"DMA map {reason}: addr=0x{addr:x} size=0x{size:x}")
        self.addr = addr
        self.size = size
        self.reason = reason


class Fault(Enum):
    """Why a request is refused; the errno is looked up in `FAULT_ERRNO`."""

    INVALID = "invalid argument"
    TOO_BIG = "too big"
    NO_SPACE = "no space"
    NOT_FOUND = "not found"
    EXISTS = "already exists"
    BAD_ADDRESS = "bad address"
    UNSUPPORTED = "not supported"
    NO_SUCH_COMMAND = "no such command"
    IO = "i/o error"


FAULT_ERRNO: dict[Fault, int] = {
    Fault.INVALID: _errno.EINVAL,
    Fault.TOO_BIG: _errno.E2BIG,
    Fault.NO_SPACE: _errno.ENOSPC,
    Fault.NOT_FOUND: _errno.ENOENT,
    Fault.EXISTS: _errno.EEXIST,
    Fault.BAD_ADDRESS: _errno.EFAULT,
    Fault.UNSUPPORTED: _errno.EOPNOTSUPP,
    Fault.NO_SUCH_COMMAND: _errno.ENOSYS,
    Fault.IO: _errno.EIO,
}


class Refused(VfioUserError):
    """Server side: a request is refused; the peer gets an error reply, nothing else."""

    def __init__(self, fault: Fault, reason: str) -> None:
        super().__init__(f"{fault.value}: {reason}")
        self.fault = fault
        self.reason = reason


class Malformed(Refused):
    """A message whose fields cannot be decoded (short, long, bad JSON): EINVAL."""

    def __init__(self, reason: str) -> None:
        super().__init__(Fault.INVALID, reason)


class FramingError(VfioUserError):
    """The byte stream cannot be framed (bad size or type): the connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot frame message: {reason}")
        self.reason = reason


class ProtocolViolation(VfioUserError):
    """Client side: the server broke the protocol (bad reply); the connection is closed."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"protocol violation: {reason}")
        self.reason = reason


class ConnectionClosed(VfioUserError):
    """The peer closed the socket (or it was closed locally)."""


class NegotiationFailed(VfioUserError):
    """VERSION negotiation failed (incompatible version or capabilities)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"version negotiation failed: {reason}")
        self.reason = reason


class CommandFailed(VfioUserError):
    """Client side: the server answered a command with an error reply."""

    def __init__(self, command: int, errno: int) -> None:
        super().__init__(f"{command_name(command)} failed: errno {errno} "
                         f"({_errno.errorcode.get(errno, '?')})")
        self.command = command
        self.errno = errno

    @property
    def fault(self) -> Fault | None:
        """The `Fault` whose errno this is, when the server used the same table."""
        for fault, number in FAULT_ERRNO.items():
            if number == self.errno:
                return fault
        return None


class ReplyTimeout(VfioUserError):
    """Client side: no reply within the timeout; the connection is no longer usable."""

    def __init__(self, command: int, timeout: float) -> None:
        super().__init__(f"no reply to {command_name(command)} within {timeout}s")
        self.command = command
        self.timeout = timeout


def errno_for(exc: BaseException) -> int:
    """The errno a peer sees for `exc`: the one table of the package's boundary."""
    if isinstance(exc, Refused):
        return FAULT_ERRNO[exc.fault]
    if isinstance(exc, MapError):
        return _errno.EINVAL
    if isinstance(exc, DmaError):
        return _errno.EFAULT
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO
