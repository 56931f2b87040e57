"""Framing of a vfio-user byte stream that also carries file descriptors.

On a Linux AF_UNIX stream socket, descriptors sent with a `sendmsg` arrive with the first
bytes of that send, and a `recvmsg` that receives descriptors stops right after the
segment carrying them. So the descriptors of one `recvmsg` belong to the message that
contains the *last byte* that call returned; `FrameReader` attributes them that way.
A hostile peer can attach descriptors anywhere: they then go to some message that does
not expect them and are refused and closed there, never leaked.
"""

from __future__ import annotations

import array
import os
import socket
from collections import deque
from dataclasses import dataclass, field

from vfio_user.codec import (
    HEADER_SIZE,
    TYPE_MASK,
    TYPE_REPLY,
    Header,
)
from vfio_user.errors import FramingError

_HEADER = Header.STRUCT


@dataclass(slots=True)
class Frame:
    """One whole message. Whoever takes a frame owns its `fds` and must close them."""

    header: Header
    payload: bytes
    fds: list[int] = field(default_factory=list)
    fds_truncated: bool = False  # the peer sent more descriptors than fit (rest dropped)


class FrameReader:
    """Cuts a byte stream into frames; validates only what framing needs (size, type)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._buf = b""  # received, not yet framed from _pos on (bytes: no copy when a
        self._pos = 0  # receive holds whole messages, the usual case)
        self._base = 0  # stream position of _buf[0]
        self._marks: deque[tuple[int, list[int], bool]] = deque()  # (last byte, fds, trunc)

    def feed(self, data: bytes, fds: list[int] | None = None, truncated: bool = False) -> None:
        if self._pos == len(self._buf):
            self._base += self._pos
            self._buf, self._pos = data, 0
        elif data:
            self._base += self._pos
            self._buf, self._pos = self._buf[self._pos:] + data, 0
        if fds or truncated:
            last = self._base + max(len(self._buf) - 1, self._pos)
            self._marks.append((last, list(fds or ()), truncated))

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos

    def next_frame(self) -> Frame | None:
        """The next whole frame, None if more bytes are needed; raises FramingError."""
        buf, start = self._buf, self._pos
        if len(buf) - start < HEADER_SIZE:
            return None
        fields = _HEADER.unpack_from(buf, start)  # the whole header is there
        header: Header = Header.from_fields(fields)
        _, _, size, flags, _ = fields
        if not HEADER_SIZE <= size <= self.max_size or flags & TYPE_MASK > TYPE_REPLY:
            raise _framing_error(header, self.max_size)
        end = start + size
        if len(buf) < end:
            return None
        self._pos = end
        frame = Frame(header, buf[start + HEADER_SIZE:end], [])
        if self._marks:
            end_abs = self._base + end
            while self._marks and self._marks[0][0] < end_abs:
                _, fds, truncated = self._marks.popleft()
                frame.fds.extend(fds)
                frame.fds_truncated |= truncated
        return frame

    def close(self) -> None:
        """Close every descriptor no frame took (the connection is going away)."""
        while self._marks:
            close_fds(self._marks.popleft()[1])


def _framing_error(header: Header, max_size: int) -> FramingError:
    if header.size < HEADER_SIZE:
        return FramingError(f"size {header.size} is smaller than the header")
    if header.size > max_size:
        return FramingError(f"size {header.size} exceeds the limit {max_size}")
    return FramingError(f"unknown message type {header.flags & TYPE_MASK}")


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()


def ancillary_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of SCM_RIGHTS control messages (others are ignored)."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def ancillary_space(max_fds: int) -> int:
    """Control buffer size for receiving up to `max_fds` descriptors."""
    return socket.CMSG_SPACE(max_fds * array.array("i").itemsize)
