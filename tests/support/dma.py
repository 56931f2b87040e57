"""A DMA page source for driver tests that need no device: pages of one anonymous mmap,
bus address = offset (`guest_drivers.platform.base.DmaAllocator` over it)."""

from __future__ import annotations

import mmap

from guest_drivers.platform.base import PAGE, Backing


class MmapPages:
    """A DmaAllocator page source over one anonymous mmap; page 0 is never handed out."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self._next = PAGE

    def _take(self, size: int) -> tuple[Backing, int, int]:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        off, self._next = self._next, self._next + size
        if self._next > len(self.mm):
            raise MemoryError("fake RAM used up")
        return self.mm, off, off

    def page(self) -> tuple[Backing, int, int]:
        return self._take(PAGE)

    def contiguous(self, size: int) -> tuple[Backing, int, int]:
        return self._take(size)
