"""DMA maps of one connection: the registry behind DMA_MAP/DMA_UNMAP.

A map with an fd is mmap'ed (shared) and added to the function's `GuestMemory`, so the
device reads and writes guest RAM directly. QEMU's fd offset is an offset into its RAM
block (for plain guest RAM it equals the guest-physical address); mmap offsets must be
page aligned, so the mapping starts at the page below and the `DmaMap` skips the
difference.

A map without an fd (QEMU sends BIOS, ROM and VGA ranges that way) is accepted and
recorded (so overlap checks and exact-match unmaps work), but backs nothing: it is not
added to `GuestMemory`, so device DMA there fails with `DmaError` ("no map covers"), as
it should for memory the server cannot reach. DMA through DMA_READ/DMA_WRITE messages is
deliberately not done.

Limits: an fd must be a regular file (memfd, shm, hugetlbfs) at least offset+size long,
checked when mapped. A client that *shrinks* the file afterwards makes later device
accesses fault (SIGBUS); QEMU never does, and nothing in Python can catch that.
"""

from __future__ import annotations

import bisect
import logging
import mmap
import os
import stat
from dataclasses import dataclass

from vfio_user.codec import DmaMap, DmaMapFlag
from vfio_user.errors import Fault, Refused
from vfio_user.memory import ADDR_LIMIT, GuestMemory
from vfio_user.memory import DmaMap as MemoryMap

log = logging.getLogger("vfio_user")

PAGE = mmap.ALLOCATIONGRANULARITY


@dataclass
class MapRecord:
    addr: int
    size: int
    flags: int
    mapping: mmap.mmap | None  # None: recorded without an fd, not usable for DMA

    @property
    def end(self) -> int:
        return self.addr + self.size

    @property
    def backed(self) -> bool:
        return self.mapping is not None


class DmaSpace:
    def __init__(self, memory: GuestMemory, max_maps: int) -> None:
        self.memory = memory
        self.max_maps = max_maps
        self._starts: list[int] = []
        self._records: list[MapRecord] = []

    def __len__(self) -> int:
        return len(self._records)

    def records(self) -> list[MapRecord]:
        return list(self._records)

    def map(self, req: DmaMap, fd: int | None) -> MapRecord:
        """Add a map. The caller keeps ownership of `fd` (the mmap holds its own)."""
        if req.flags & ~int(DmaMapFlag.READ | DmaMapFlag.WRITE):
            raise Refused(Fault.INVALID, f"unknown DMA_MAP flags {req.flags:#x}")
        if req.size == 0:
            raise Refused(Fault.INVALID, "DMA_MAP of size 0")
        if req.addr + req.size > ADDR_LIMIT:
            raise Refused(Fault.INVALID, f"DMA_MAP {req.addr:#x}+{req.size:#x} wraps past 2**64")
        if len(self._records) >= self.max_maps:
            raise Refused(Fault.NO_SPACE, f"already {len(self._records)} DMA maps (the limit)")
        i = bisect.bisect_right(self._starts, req.addr)
        if (i > 0 and self._records[i - 1].end > req.addr) or (
                i < len(self._records) and self._records[i].addr < req.addr + req.size):
            raise Refused(Fault.EXISTS, f"DMA_MAP {req.addr:#x}+{req.size:#x} overlaps a map")
        record = MapRecord(req.addr, req.size, req.flags, None)
        if fd is not None:
            record.mapping, delta = _mmap(fd, req)
            try:
                self.memory.map(MemoryMap(
                    req.addr, req.size, record.mapping, offset=delta,
                    readable=bool(req.flags & DmaMapFlag.READ),
                    writable=bool(req.flags & DmaMapFlag.WRITE)))
            except BaseException:
                record.mapping.close()
                raise
        else:
            log.info("DMA_MAP %#x+%#x without fd: recorded, not usable for device DMA",
                     req.addr, req.size)
        self._starts.insert(i, req.addr)
        self._records.insert(i, record)
        return record

    def unmap(self, addr: int, size: int) -> MapRecord:
        """Remove the map that is exactly [addr, addr+size)."""
        i = bisect.bisect_left(self._starts, addr)
        if i == len(self._records) or self._records[i].addr != addr or \
                self._records[i].size != size:
            raise Refused(Fault.NOT_FOUND, f"DMA_UNMAP {addr:#x}+{size:#x} matches no map")
        record = self._records.pop(i)
        self._starts.pop(i)
        self._release(record)
        return record

    def unmap_all(self) -> int:
        records, self._records, self._starts = self._records, [], []
        for record in records:
            self._release(record)
        return len(records)

    def _release(self, record: MapRecord) -> None:
        if record.mapping is None:
            return
        try:
            self.memory.unmap(record.addr, record.size)
        except Exception as e:  # the memory was cleared behind our back: still close
            log.warning("GuestMemory had no map %#x+%#x: %s", record.addr, record.size, e)
        try:
            record.mapping.close()
        except BufferError:  # someone holds a view; the mmap goes when they let go
            log.warning("DMA map %#x+%#x still exported; closed later", record.addr,
                        record.size)
        record.mapping = None


def _mmap(fd: int, req: DmaMap) -> tuple[mmap.mmap, int]:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(Fault.INVALID, "DMA_MAP fd is not a regular file (memfd, shm)")
    if req.offset + req.size > st.st_size:
        raise Refused(Fault.INVALID, f"DMA_MAP {req.offset:#x}+{req.size:#x} lies beyond the "
                                     f"end of its fd ({st.st_size:#x} bytes)")
    base = req.offset - req.offset % PAGE
    delta = req.offset - base
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if req.flags & DmaMapFlag.WRITE else 0)
    return mmap.mmap(fd, delta + req.size, flags=mmap.MAP_SHARED, prot=prot,
                     offset=base), delta
