"""DMA memory for a userspace driver: locked pages and their physical addresses.

Each `DmaPage` is one locked 4 KiB page; the device model DMAs to its guest-physical
address (from /proc/self/pagemap, which needs root). Rings and buffers fit in a page,
so no physical contiguity across pages is ever assumed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import struct

from guest_drivers.platform.errors import AccessError, PlatformError, translate

PAGE = mmap.PAGESIZE
_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class DmaPage:
    """One page of locked memory with a stable guest-physical address."""

    def __init__(self) -> None:
        self.buf = mmap.mmap(-1, PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.buf[0:PAGE] = bytes(PAGE)  # fault the page in
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        if _libc().mlock(ctypes.c_void_p(addr), ctypes.c_size_t(PAGE)) != 0:
            raise AccessError("mlock", "anonymous page", ctypes.get_errno())
        self.virt = addr
        self.phys = virt_to_phys(addr)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self.buf[offset:offset + length])

    def write(self, offset: int, data: bytes) -> None:
        self.buf[offset:offset + len(data)] = data


def virt_to_phys(virt: int) -> int:
    path = "/proc/self/pagemap"
    try:
        with open(path, "rb") as f:
            entry: int = struct.unpack("<Q", os.pread(f.fileno(), 8, (virt // PAGE) * 8))[0]
    except OSError as e:
        raise translate("read", path, e) from e
    pfn = entry & _PFN_MASK
    if not entry & _PRESENT or pfn == 0:
        raise PlatformError(f"page at 0x{virt:x} not present or PFN hidden (need root)")
    return pfn * PAGE + virt % PAGE
