"""A minimal writer for the "newc" cpio format the Linux kernel unpacks as an initramfs."""

from __future__ import annotations

import stat
from typing import BinaryIO

_MAGIC = b"070701"
_TRAILER = "TRAILER!!!"


class CpioWriter:
    """Appends directories, files and symlinks; call `close()` to write the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 1
        self._written = 0

    def _pad(self) -> None:
        rem = self._written % 4
        if rem:
            self._write(b"\0" * (4 - rem))

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1,
               mtime: int = 0) -> None:
        encoded = name.lstrip("/").encode() + b"\0"
        fields = [
            self._ino, mode, 0, 0, nlink, mtime, len(data), 0, 0, 0, 0, len(encoded), 0,
        ]
        self._ino += 1
        self._write(_MAGIC + b"".join(b"%08X" % f for f in fields))
        self._write(encoded)
        self._pad()
        self._write(data)
        self._pad()

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644, mtime: int = 0) -> None:
        """`mtime` (seconds): kept by the kernel's unpacking (a .pyc names its .py's)."""
        self._entry(name, stat.S_IFREG | perm, data, mtime=mtime)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def close(self) -> None:
        self._entry(_TRAILER, 0, nlink=1)
        self._pad()
