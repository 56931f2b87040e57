"""guest_drivers.platform.dma.PagePool: locked pages BATCH_PAGES at a time (one mmap, one
mlock, one pagemap read), each with its own physical address. Page by page, a VF
driver's ~65 pages at probe were most of its probe's CPU in a TCG guest. Runs on the
host (the same code as in a guest): /proc/self/pagemap gives PFNs to root only."""

from __future__ import annotations

import ctypes
import os

import pytest

from guest_drivers.platform import dma

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="pagemap PFNs need root")


def test_pages_come_in_batches_each_with_its_own_physical_address() -> None:
    pool = dma.PagePool()
    n = dma.BATCH_PAGES + 3
    pages = [pool.page() for _ in range(n)]
    assert len(pool.batches) == 2  # not one mapping a page
    assert len({id(buf) for buf, _, _ in pages}) == 2
    phys = [p for _, _, p in pages]
    assert len(set(phys)) == n and all(p % dma.PAGE == 0 and p > 0 for p in phys)
    for buf, off, p in pages:
        virt = ctypes.addressof(ctypes.c_char.from_buffer(buf)) + off
        assert dma.virt_to_phys(virt) == p  # the page's own entry, looked up alone
        assert dma.virt_to_phys(virt + 100) == p + 100
        buf[off:off + 4] = b"\x01\x02\x03\x04"  # writable, and not shared with another
    assert all(buf[off:off + 4] == b"\x01\x02\x03\x04" for buf, off, _ in pages)


def test_a_dma_allocator_on_the_pool_hands_out_buffers_within_pages() -> None:
    from guest_drivers.platform.base import DmaAllocator

    alloc = DmaAllocator(dma.PagePool())
    bufs = [alloc.alloc(2048) for _ in range(6)] + [alloc.alloc(64, 64) for _ in range(10)]
    for b in bufs:
        assert b.bus // dma.PAGE == (b.bus + b.size - 1) // dma.PAGE  # never crosses
    assert len({b.bus for b in bufs}) == len(bufs)
