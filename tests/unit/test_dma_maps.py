"""DMA_MAP rules the device depends on: direction flags and exact overlap bounds.

- A map without the READ flag is not readable by the device (a read-only map refusing
  device writes is tested in tests/unit/vfio_user).
- A map overlapping its upper (or lower) neighbour by a single byte is refused, with an fd
  and without one, and refusing it changes nothing; touching maps are fine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from device_model import Adapter, AdapterConfig, ErrorSource, PeStateCode
from eeh_abi import nic
from vfio_user import DmaError, GuestMemory, MapError, Refused, RegionIndex
from vfio_user import DmaMap as MemoryMap
from vfio_user.codec import DmaMap, DmaMapFlag
from vfio_user.dma import DmaSpace
from vfio_user.errors import Fault

PAGE = 0x1000
READ, WRITE = int(DmaMapFlag.READ), int(DmaMapFlag.WRITE)


@pytest.fixture
def memfd() -> Iterator[int]:
    fd = os.memfd_create("dma-maps-test")
    os.ftruncate(fd, 16 * PAGE)
    yield fd
    os.close(fd)


@pytest.fixture
def space() -> Iterator[DmaSpace]:
    s = DmaSpace(GuestMemory(), max_maps=16)
    yield s
    s.unmap_all()


def _req(addr: int, size: int, flags: int = READ | WRITE, offset: int = 0) -> DmaMap:
    return DmaMap(DmaMap.SIZE, flags, offset, addr, size)


def test_write_only_map_is_not_readable(space: DmaSpace, memfd: int) -> None:
    space.map(_req(0x10000, PAGE, WRITE), memfd)
    with pytest.raises(DmaError):
        space.memory.read(0x10000, 4)
    with pytest.raises(DmaError):
        space.memory.read(0x10FFF, 1)  # the last byte too
    space.memory.write(0x10000, b"\x5a\x5a")  # the allowed direction works
    assert os.pread(memfd, 2, 0) == b"\x5a\x5a"


def test_write_only_map_is_not_readable_by_the_device(space: DmaSpace, memfd: int) -> None:
    os.pwrite(memfd, b"secret", 0x40)
    space.map(_req(0x10000, PAGE, WRITE), memfd)
    adapter = Adapter(AdapterConfig(total_vfs=0))
    pf = adapter.pf
    pf.attach(space.memory, _NoIrqs())
    pf.region_write(RegionIndex.CONFIG, nic.CFG_COMMAND,
                    int(nic.Command.MEMORY | nic.Command.BUS_MASTER).to_bytes(2, "little"))
    assert pf.dma_read(0x10040, 6) is None  # not b"secret"
    (entry,) = adapter.pes.adapter.error_log()
    assert entry.source is ErrorSource.DMA_FAULT and entry.address == 0x10040
    assert adapter.pes.adapter.status().code is PeStateCode.FROZEN


class _NoIrqs:
    def trigger(self, index: int, vector: int) -> None:
        pass


@pytest.mark.parametrize("with_fd", [True, False], ids=["fd", "fd-less"])
@pytest.mark.parametrize("new", [(0x10000 - PAGE, PAGE + 1), (0x10000 + 2 * PAGE - 1, PAGE)],
                         ids=["into-upper-neighbour", "into-lower-neighbour"])
def test_one_byte_overlap_is_refused(space: DmaSpace, memfd: int, with_fd: bool,
                                     new: tuple[int, int]) -> None:
    fd = memfd if with_fd else None
    space.map(_req(0x10000, 2 * PAGE), fd)  # the neighbour: [0x10000, 0x12000)
    before = [(r.addr, r.size) for r in space.records()]
    mapped = list(space.memory)
    addr, size = new
    with pytest.raises(Refused) as refused:
        space.map(_req(addr, size, offset=4 * PAGE), fd)
    assert refused.value.fault is Fault.EXISTS
    assert [(r.addr, r.size) for r in space.records()] == before
    assert list(space.memory) == mapped
    # touching is not overlapping: one byte less is accepted
    lo = addr if addr < 0x10000 else addr + 1
    space.map(_req(lo, size - 1, offset=4 * PAGE), fd)
    assert len(space) == 2


def test_guest_memory_refuses_a_one_byte_overlap() -> None:
    mem = GuestMemory()
    mem.map(MemoryMap(0x10000, PAGE, bytearray(PAGE)))
    with pytest.raises(MapError):
        mem.map(MemoryMap(0x10000 - PAGE, PAGE + 1, bytearray(PAGE + 1)))  # upper neighbour
    with pytest.raises(MapError):
        mem.map(MemoryMap(0x10000 + PAGE - 1, PAGE, bytearray(PAGE)))  # lower neighbour
    assert [(m.addr, m.size) for m in mem] == [(0x10000, PAGE)]
    mem.map(MemoryMap(0x10000 - PAGE, PAGE, bytearray(PAGE)))
    mem.map(MemoryMap(0x10000 + PAGE, PAGE, bytearray(PAGE)))
    assert len(mem) == 3
