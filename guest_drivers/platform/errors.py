"""Exceptions of the driver platform layer; errno is translated once, here."""

from __future__ import annotations

import errno


class PlatformError(Exception):
    """Root of every exception raised by guest_drivers.platform."""


class DeviceNotFound(PlatformError, LookupError):
    """No present PCI function matches (a LookupError, as pyudev's lookup errors are)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"no PCI function matches {what}")
        self.what = what


class AccessError(PlatformError):
    """An OS call on a function's sysfs files or on DMA memory failed."""

    def __init__(self, op: str, path: str, err: int) -> None:
        super().__init__(f"{op} {path}: {_ERRNO_MEANING.get(err, errno.errorcode.get(err, err))}")
        self.op = op
        self.path = path
        self.errno = err


_ERRNO_MEANING = {
    errno.EACCES: "permission denied (root is needed for BARs, config space and pagemap)",
    errno.EPERM: "operation not permitted (root is needed)",
    errno.ENOENT: "no such file (function removed, or BAR absent)",
    errno.ENODEV: "no such device (function removed)",
    errno.EIO: "I/O error (function not responding)",
    errno.EINVAL: "invalid argument (offset or size outside the resource)",
    errno.ENOMEM: "out of memory (locked-memory limit?)",
}


def translate(op: str, path: str, e: OSError) -> AccessError:
    return AccessError(op, path, e.errno or errno.EIO)
