"""Guest memory as the device sees it: a set of DMA maps with strict bounds.

A transport (the vfio-user server, or the harness) adds maps as the guest's memory
becomes known (DMA_MAP) and removes them (DMA_UNMAP, disconnect). The device model only
ever touches guest memory through `read` and `write`, which check every byte against the
maps: no access outside a map, no wrap past 2**64, no write through a read-only map.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from vfio_user.errors import DmaError, MapError

ADDR_LIMIT = 1 << 64


class Buffer(Protocol):
    """What backs a map: an mmap, a bytearray, anything sliceable and writable."""

    def __len__(self) -> int: ...
    def __getitem__(self, s: slice, /) -> bytes | bytearray: ...
    def __setitem__(self, s: slice, v: bytes, /) -> None: ...


@dataclass(frozen=True)
class DmaMap:
    """One map: guest addresses [addr, addr+size) are `buffer[offset:offset+size]`."""

    addr: int
    size: int
    buffer: Buffer
    offset: int = 0
    readable: bool = True
    writable: bool = True

    @property
    def end(self) -> int:
        return self.addr + self.size


class GuestMemory:
    """The maps of one function's DMA space (one per vfio-user connection)."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._maps: list[DmaMap] = []

    def __iter__(self) -> Iterator[DmaMap]:
        return iter(list(self._maps))

    def __len__(self) -> int:
        return len(self._maps)

    def map(self, m: DmaMap) -> None:
        """Add a map; raises MapError on zero size, wrap, overlap or a short buffer."""
        if m.size <= 0:
            raise MapError(m.addr, m.size, "zero or negative size")
        if m.addr < 0 or m.end > ADDR_LIMIT:
            raise MapError(m.addr, m.size, "range wraps past 2**64")
        if m.offset < 0 or m.offset + m.size > len(m.buffer):
            raise MapError(m.addr, m.size, "backing buffer shorter than the map")
        i = bisect.bisect_right(self._starts, m.addr)
        if i > 0 and self._maps[i - 1].end > m.addr:
            raise MapError(m.addr, m.size, "overlaps an existing map")
        if i < len(self._maps) and self._maps[i].addr < m.end:
            raise MapError(m.addr, m.size, "overlaps an existing map")
        self._starts.insert(i, m.addr)
        self._maps.insert(i, m)

    def unmap(self, addr: int, size: int) -> DmaMap:
        """Remove the map that is exactly [addr, addr+size); raises MapError otherwise."""
        i = bisect.bisect_left(self._starts, addr)
        if i < len(self._maps) and self._maps[i].addr == addr and self._maps[i].size == size:
            self._starts.pop(i)
            return self._maps.pop(i)
        raise MapError(addr, size, "matches no map")

    def unmap_all(self) -> list[DmaMap]:
        """Remove every map (a client went away); returns what was removed."""
        removed = self._maps
        self._starts, self._maps = [], []
        return removed

    def _spans(self, addr: int, length: int, *, write: bool) -> Iterator[tuple[DmaMap, int, int]]:
        """Yield (map, offset into map, length) pieces covering [addr, addr+length)."""
        if length < 0 or addr < 0 or addr + length > ADDR_LIMIT:
            raise DmaError(addr, length, "address wraps past 2**64")
        pos, left = addr, length
        pieces = []
        while left > 0:
            i = bisect.bisect_right(self._starts, pos) - 1
            if i < 0 or self._maps[i].end <= pos:
                raise DmaError(addr, length, f"no map covers 0x{pos:x}")
            m = self._maps[i]
            if write and not m.writable:
                raise DmaError(addr, length, "write through a read-only map")
            if not write and not m.readable:
                raise DmaError(addr, length, "read through a write-only map")
            n = min(left, m.end - pos)
            pieces.append((m, pos - m.addr, n))
            pos += n
            left -= n
        return iter(pieces)

    def _single(self, addr: int, length: int) -> DmaMap | None:
        """The one map holding all of [addr, addr+length), if there is one (fast path)."""
        i = bisect.bisect_right(self._starts, addr) - 1
        if i >= 0 and length > 0:
            m = self._maps[i]
            if addr + length <= m.end:
                return m
        return None

    def read(self, addr: int, length: int) -> bytes:
        """Read guest memory; raises DmaError unless every byte is mapped readable."""
        m = self._single(addr, length) if addr >= 0 else None
        if m is not None and m.readable:
            off = m.offset + addr - m.addr
            return bytes(m.buffer[off : off + length])
        parts = [
            m.buffer[m.offset + off : m.offset + off + n]
            for m, off, n in self._spans(addr, length, write=False)
        ]
        return b"".join(parts)

    def write(self, addr: int, data: bytes) -> None:
        """Write guest memory; raises DmaError (and writes nothing) unless all is mapped."""
        m = self._single(addr, len(data)) if addr >= 0 else None
        if m is not None and m.writable:
            off = m.offset + addr - m.addr
            m.buffer[off : off + len(data)] = data
            return
        pieces = list(self._spans(addr, len(data), write=True))
        pos = 0
        for m, off, n in pieces:
            m.buffer[m.offset + off : m.offset + off + n] = data[pos : pos + n]
            pos += n
