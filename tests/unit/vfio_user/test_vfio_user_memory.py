"""GuestMemory: DMA only through maps, with strict bounds."""

from __future__ import annotations

import mmap

import pytest

from vfio_user.errors import DmaError, MapError
from vfio_user.memory import ADDR_LIMIT, DmaMap, GuestMemory


def two_maps() -> tuple[GuestMemory, bytearray, bytearray]:
    a, b = bytearray(range(256)) * 16, bytearray(4096)
    mem = GuestMemory()
    mem.map(DmaMap(0x1000, 0x1000, a))
    mem.map(DmaMap(0x2000, 0x800, b, offset=0x100))  # adjacent, backed at an offset
    return mem, a, b


def test_reads_and_writes_inside_and_across_maps() -> None:
    mem, a, b = two_maps()
    assert mem.read(0x1010, 4) == bytes([0x10, 0x11, 0x12, 0x13])
    mem.write(0x1FFE, b"\x01\x02\x03\x04")  # straddles both maps
    assert a[0xFFE:] == b"\x01\x02" and b[0x100:0x102] == b"\x03\x04"
    assert mem.read(0x1FFE, 4) == b"\x01\x02\x03\x04"
    assert len(mem) == 2 and [m.addr for m in mem] == [0x1000, 0x2000]


@pytest.mark.parametrize("addr,length", [(0x0FFF, 2), (0x27FF, 2), (0x3000, 1), (-1, 1),
                                         (ADDR_LIMIT - 1, 2), (0x1000, 0x1801)])
def test_out_of_map_access_raises_and_writes_nothing(addr: int, length: int) -> None:
    mem, a, b = two_maps()
    before = (bytes(a), bytes(b))
    with pytest.raises(DmaError):
        mem.read(addr, length)
    with pytest.raises(DmaError):
        mem.write(addr, b"\xee" * length)
    assert (bytes(a), bytes(b)) == before


def test_map_permissions() -> None:
    mem = GuestMemory()
    ro, wo = bytearray(16), bytearray(16)
    mem.map(DmaMap(0x100, 16, ro, writable=False))
    mem.map(DmaMap(0x200, 16, wo, readable=False))
    with pytest.raises(DmaError):
        mem.write(0x100, b"x")
    with pytest.raises(DmaError):
        mem.read(0x200, 1)
    mem.write(0x200, b"y")
    assert mem.read(0x100, 2) == b"\0\0" and wo[0:1] == b"y"


def test_map_errors_and_unmap() -> None:
    mem, _, _ = two_maps()
    with pytest.raises(MapError):
        mem.map(DmaMap(0x1800, 0x1000, bytearray(0x1000)))  # overlap
    with pytest.raises(MapError):
        mem.map(DmaMap(0x5000, 0, bytearray(1)))
    with pytest.raises(MapError):
        mem.map(DmaMap(ADDR_LIMIT - 8, 16, bytearray(16)))
    with pytest.raises(MapError):
        mem.map(DmaMap(0x5000, 32, bytearray(16)))
    with pytest.raises(MapError):
        mem.unmap(0x1000, 0x800)  # not exactly a map
    assert mem.unmap(0x2000, 0x800).offset == 0x100
    with pytest.raises(DmaError):
        mem.read(0x2000, 1)
    assert len(mem.unmap_all()) == 1 and len(mem) == 0


def test_mmap_backing() -> None:
    buf = mmap.mmap(-1, 4096)
    mem = GuestMemory()
    mem.map(DmaMap(0x9000, 4096, buf))
    mem.write(0x9010, b"abc")
    assert mem.read(0x900F, 5) == b"\0abc\0" and buf[0x10:0x13] == b"abc"
