"""DMA memory for a userspace driver: locked pages and their physical addresses.

Locked 4 KiB pages (a `PagePool` maps and locks them BATCH_PAGES at a time; a `DmaPage`
is one on its own); the device model DMAs to each page's guest-physical address (from
/proc/self/pagemap, which needs root). Rings and buffers fit in a page, so no physical
contiguity across pages is ever assumed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
import struct

from guest_drivers.platform.base import DmaUnavailable
from guest_drivers.platform.errors import AccessError, PlatformError, translate

PAGE = mmap.PAGESIZE
_PFN_MASK = (1 << 55) - 1
_PRESENT = 1 << 63


@functools.cache
def _libc() -> ctypes.CDLL:
    # once: find_library runs `ldconfig -p`, ~40 ms under TCG, and a VF driver locks
    # about 70 pages at probe
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
    return pages_to_phys(virt - virt % PAGE, 1)[0] + virt % PAGE


def pages_to_phys(virt: int, n: int) -> list[int]:
    """The physical addresses of the `n` pages from the page-aligned `virt`, in one read
    of /proc/self/pagemap."""
    path = "/proc/self/pagemap"
    try:
        with open(path, "rb") as f:
            raw = os.pread(f.fileno(), 8 * n, (virt // PAGE) * 8)
    except OSError as e:
        raise translate("read", path, e) from e
    out = []
    for i, entry in enumerate(struct.unpack(f"<{len(raw) // 8}Q", raw)):
        pfn = entry & _PFN_MASK
        if not entry & _PRESENT or pfn == 0:
            raise PlatformError(f"page at 0x{virt + i * PAGE:x} not present or PFN hidden "
                                "(need root)")
        out.append(pfn * PAGE)
    if len(out) != n:
        raise PlatformError(f"pagemap: {len(out)} of {n} pages at 0x{virt:x}")
    return out


BATCH_PAGES = 32  # pages a PagePool maps, locks and resolves at once


def locked_pages(n: int) -> tuple[mmap.mmap, list[int]]:
    """`n` pages of locked memory in one mapping (mlock faults them all in) and each one's
    physical address: one mmap, one mlock and one pagemap read for all of them. A VF
    driver takes ~65 pages at probe: page by page that was ~65 of each, plus a pagemap
    open, a 4 KiB write and ctypes calls a page, most of a VF's probe in a TCG guest."""
    size = n * PAGE
    buf = mmap.mmap(-1, size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                    mmap.PROT_READ | mmap.PROT_WRITE)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    if _libc().mlock(ctypes.c_void_p(addr), ctypes.c_size_t(size)) != 0:
        raise AccessError("mlock", f"{n} anonymous pages", ctypes.get_errno())
    return buf, pages_to_phys(addr, n)


MAP_HUGETLB = 0x40000  # Linux; not exported by Python's mmap module
HUGE_PAGE = 2 << 20
_NR_HUGEPAGES = "/proc/sys/vm/nr_hugepages"


class HugePage:
    """One locked 2 MiB hugepage: physically contiguous, for buffers above 4 KiB."""

    def __init__(self) -> None:
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_HUGETLB
        try:
            self.buf = mmap.mmap(-1, HUGE_PAGE, flags, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise translate("mmap", "hugepage", e) from e
        self.buf[0:PAGE] = bytes(PAGE)  # fault it in
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.buf))
        if _libc().mlock(ctypes.c_void_p(addr), ctypes.c_size_t(HUGE_PAGE)) != 0:
            raise AccessError("mlock", "hugepage", ctypes.get_errno())
        self.virt = addr
        self.phys = virt_to_phys(addr)


def reserve_hugepage() -> bool:
    """Ask the kernel for one more hugepage (root); True if the pool grew."""
    try:
        with open(_NR_HUGEPAGES) as f:
            before = int(f.read().strip() or 0)
        with open(_NR_HUGEPAGES, "w") as f:
            f.write(str(before + 1))
        with open(_NR_HUGEPAGES) as f:
            return int(f.read().strip() or 0) > before
    except (OSError, ValueError):
        return False


class PagePool:
    """A DmaAllocator's page source in a guest: locked 4 KiB pages, BATCH_PAGES at a
    time (`locked_pages`; each page's own physical address: never assumed contiguous with
    each other), and 2 MiB hugepages for larger buffers."""

    def __init__(self) -> None:
        self.batches: list[mmap.mmap] = []  # kept alive: the device DMAs to them
        self._free: list[tuple[mmap.mmap, int, int]] = []  # (mapping, offset, phys)
        self.huge: list[HugePage] = []
        self._huge_fill = HUGE_PAGE

    def page(self) -> tuple[mmap.mmap, int, int]:
        if not self._free:
            buf, phys = locked_pages(BATCH_PAGES)
            self.batches.append(buf)
            self._free = [(buf, i * PAGE, p) for i, p in enumerate(phys)][::-1]
        return self._free.pop()

    def contiguous(self, size: int) -> tuple[mmap.mmap, int, int]:
        if size > HUGE_PAGE:
            raise DmaUnavailable(f"{size} bytes contiguous: more than a hugepage")
        start = (self._huge_fill + 63) & ~63
        if not self.huge or start + size > HUGE_PAGE:
            try:
                hp = HugePage()
            except PlatformError:
                if not reserve_hugepage():
                    raise DmaUnavailable("no hugepage for a buffer above 4 KiB") from None
                try:
                    hp = HugePage()
                except PlatformError as e:
                    raise DmaUnavailable(f"no hugepage: {e}") from None
            self.huge.append(hp)
            start = 0
        hp = self.huge[-1]
        self._huge_fill = start + size
        return hp.buf, start, hp.phys + start
