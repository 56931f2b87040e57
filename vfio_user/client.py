"""A synchronous vfio-user client (the harness's stand-in for QEMU).

    with Client.open(path) as dev, GuestRam(64 << 20) as ram:   # connect + VERSION
        dev.map_ram(ram)                        # guest memory the device can DMA into
        bar0 = dev.region_read(0, 0x10, 4)
        dev.region_write(0, 0x10, b"\\1\\0\\0\\0", posted=True)
        fds = dev.enable_msix(4)                # one eventfd per vector
        dev.wait_irq(2, 0, timeout=1.0)         # MSI-X vector 0 fired?

One request is in flight at a time (a lock serialises threads); replies must match the
request's id and command, else the stream is out of step and the connection is closed.
Error replies raise `CommandFailed` (errno, command); broken streams `ProtocolViolation`.
"""

from __future__ import annotations

import array
import mmap
import os
import select
import socket
import struct
import threading
from collections.abc import Sequence
from enum import Enum
from pathlib import Path
from types import TracebackType

from vfio_user import codec as c
from vfio_user.contract import IrqFlag, IrqIndex, RegionFlag
from vfio_user.contract import IrqInfo as FunctionIrqInfo
from vfio_user.contract import RegionInfo as FunctionRegionInfo
from vfio_user.errors import (
    CommandFailed,
    ConnectionClosed,
    Malformed,
    NegotiationFailed,
    ProtocolViolation,
    ReplyTimeout,
    VfioUserError,
)
from vfio_user.framing import ancillary_fds, ancillary_space, close_fds

_RECV_SIZE = 1 << 16
_ALL_CAPS = ("max_msg_fds", "max_data_xfer_size", "pgsizes", "max_dma_maps",
             "write_multiple")


class GuestRam:
    """A memfd standing in for guest RAM in harness mode: the fd to share with the
    server (DMA_MAP) and this process's own view of the same pages."""

    def __init__(self, size: int, name: str = "guest-ram") -> None:
        self.size = size
        self.fd = os.memfd_create(name, os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, size)
            self.view = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise

    def read(self, addr: int, length: int) -> bytes:
        if addr < 0 or length < 0 or addr + length > self.size:
            raise ValueError(f"{addr:#x}+{length:#x} outside {self.size:#x} bytes of RAM")
        return self.view[addr:addr + length]

    def write(self, addr: int, data: bytes) -> None:
        if addr < 0 or addr + len(data) > self.size:
            raise ValueError(f"{addr:#x}+{len(data):#x} outside {self.size:#x} bytes of RAM")
        self.view[addr:addr + len(data)] = data

    def close(self) -> None:
        if not self.view.closed:
            self.view.close()
            os.close(self.fd)

    def __enter__(self) -> GuestRam:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ClientState(Enum):
    CONNECTED = "connected"  # socket open, VERSION not yet done
    READY = "ready"
    CLOSED = "closed"


class Client:
    def __init__(self, path: str | Path, *, timeout: float = 5.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.state = ClientState.CLOSED
        self.server_caps = c.Capabilities()
        self.server_version = (0, 0)
        self._sock: socket.socket | None = None
        self._rbuf = b""  # received, not yet taken
        self._lock = threading.RLock()
        self._next_id = 0
        self._irq_fds: dict[tuple[int, int], int] = {}
        self._anc = ancillary_space(4)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(cls, path: str | Path, *, timeout: float = 5.0,
             caps: c.Capabilities | None = None) -> Client:
        client = cls(path, timeout=timeout)
        client.connect()
        try:
            client.negotiate(caps)
        except BaseException:
            client.close()
            raise
        return client

    def connect(self) -> None:
        if self.state is not ClientState.CLOSED:
            raise VfioUserError(f"client is {self.state.value}")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Kernel timeouts on a blocking socket rather than Python's settimeout, whose
            # poll() before every receive makes each reply's wake-up several times dearer.
            tv = struct.pack("ll", int(self.timeout), int(self.timeout % 1 * 1e6))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._rbuf = b""
        self.state = ClientState.CONNECTED

    def negotiate(self, caps: c.Capabilities | None = None) -> c.Capabilities:
        """VERSION: offer `caps` (default: QEMU-like), check and keep the server's."""
        if caps is None:
            caps = c.Capabilities(c.LIMIT_MAX_MSG_FDS, c.DEFAULT_MAX_DATA_XFER, c.PAGE_SIZE,
                                  c.LIMIT_MAX_DMA_MAPS, True, present=frozenset(_ALL_CAPS))
        try:
            payload = c.encode_version(c.MAJOR, c.MINOR, caps.to_json())
            # like QEMU: the reply may not be longer than the request
            reply = self.request(c.Command.VERSION, payload,
                                 capacity=c.HEADER_SIZE + len(payload))
            version, server_caps = c.decode_version(reply)
        except CommandFailed as e:
            raise NegotiationFailed(f"server refused VERSION (errno {e.errno})") from e
        except Malformed as e:
            raise NegotiationFailed(f"bad VERSION reply: {e.reason}") from e
        if version.major != c.MAJOR or version.minor > c.MINOR:
            raise NegotiationFailed(f"server speaks {version.major}.{version.minor}")
        bad = server_caps.limit_violations()
        if bad or server_caps.migration:
            raise NegotiationFailed("; ".join(bad) or "migration offered")
        self.server_caps = server_caps
        self.server_version = (version.major, version.minor)
        self.state = ClientState.READY
        return server_caps

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            close_fds(list(self._irq_fds.values()))
            self._irq_fds.clear()
            self.state = ClientState.CLOSED

    def __enter__(self) -> Client:
        return self

    def __exit__(self, t: type[BaseException] | None, v: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ messages

    def send_raw(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send bytes as they are (tests use this for malformed messages)."""
        sock = self._require_socket()
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, bytes(_int_array(fds)))] if fds else []
        try:
            sent = sock.sendmsg([data], anc)
            if sent < len(data):
                sock.sendall(data[sent:])
        except BlockingIOError as e:  # SO_SNDTIMEO: the server stopped reading
            self._broken()
            raise ConnectionClosed(f"send timed out after {self.timeout}s") from e
        except OSError as e:
            self._broken()
            raise ConnectionClosed(f"send failed: {e}") from e

    def recv_message(self, capacity: int = 1 << 27) -> tuple[c.Header, bytes]:
        """Read one whole message (any fds that come with it are closed). Raises
        TimeoutError when nothing arrives within the timeout."""
        while len(self._rbuf) < c.HEADER_SIZE:
            self._fill()
        header = c.Header.unpack(self._rbuf)
        if not c.HEADER_SIZE <= header.size <= capacity:
            self._broken()
            raise ProtocolViolation(f"message size {header.size} (capacity {capacity})")
        while len(self._rbuf) < header.size:
            self._fill()
        body, self._rbuf = self._rbuf[c.HEADER_SIZE:header.size], self._rbuf[header.size:]
        return header, body

    def _fill(self) -> None:
        sock = self._require_socket()
        try:
            data, anc, _, _ = sock.recvmsg(_RECV_SIZE, self._anc)
        except BlockingIOError:  # SO_RCVTIMEO expired
            raise TimeoutError(f"nothing received within {self.timeout}s") from None
        except OSError as e:
            self._broken()
            raise ConnectionClosed(f"receive failed: {e}") from e
        if anc:
            close_fds(ancillary_fds(anc))
        if not data:
            self._broken()
            raise ConnectionClosed("server closed the socket")
        self._rbuf = self._rbuf + data if self._rbuf else data

    def request(self, command: int, payload: bytes = b"", fds: Sequence[int] = (), *,
                posted: bool = False, capacity: int | None = None) -> bytes:
        """Send one command; return the reply payload (b"" when posted)."""
        with self._lock:
            msg_id = self._next_id
            self._next_id = (self._next_id + 1) & 0xFFFF
            flags = c.NO_REPLY if posted else 0
            self.send_raw(c.pack_message(msg_id, command, flags, payload), fds)
            if posted:
                return b""
            try:
                header, body = self.recv_message(
                    capacity if capacity is not None else
                    c.HEADER_SIZE + c.RegionAccess.SIZE + self.server_caps.max_data_xfer_size
                    + len(payload))
            except TimeoutError:
                self._broken()
                raise ReplyTimeout(command, self.timeout) from None
            if header.flags & c.TYPE_MASK != c.TYPE_REPLY or header.id != msg_id or \
                    header.command != command:
                self._broken()
                raise ProtocolViolation(
                    f"expected reply {msg_id} to {c.command_name(command)}, got id "
                    f"{header.id} {c.command_name(header.command)} flags {header.flags:#x}")
            if header.flags & c.ERROR:
                raise CommandFailed(command, header.error)
            return body

    def _require_socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionClosed("client is not connected")
        return self._sock

    def _broken(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.state = ClientState.CLOSED

    def _reply(self, layout: type[c.W], body: bytes) -> c.W:
        try:
            return layout.unpack(body)
        except Malformed as e:
            self._broken()
            raise ProtocolViolation(e.reason) from None

    # ------------------------------------------------------------------ DMA

    def map_dma(self, addr: int, size: int, fd: int | None = None, *, offset: int = 0,
                readable: bool = True, writable: bool = True) -> None:
        flags = (c.DmaMapFlag.READ if readable else 0) | (c.DmaMapFlag.WRITE if writable else 0)
        req = c.DmaMap(c.DmaMap.SIZE, flags, offset, addr, size)
        self.request(c.Command.DMA_MAP, req.pack(), () if fd is None else (fd,))

    def map_ram(self, ram: GuestRam, addr: int = 0) -> None:
        """Map all of `ram` at guest address `addr` (fd offset 0), read and write."""
        self.map_dma(addr, ram.size, ram.fd)

    def unmap_dma(self, addr: int, size: int) -> None:
        self.request(c.Command.DMA_UNMAP, c.DmaUnmap(c.DmaUnmap.SIZE, 0, addr, size).pack())

    def unmap_all_dma(self) -> None:
        self.request(c.Command.DMA_UNMAP,
                     c.DmaUnmap(c.DmaUnmap.SIZE, c.DmaUnmapFlag.ALL, 0, 0).pack())

    # ------------------------------------------------------------------ info

    def device_info(self) -> c.DeviceInfo:
        body = self.request(c.Command.DEVICE_GET_INFO, c.DeviceInfo(c.DeviceInfo.SIZE, 0, 0,
                                                                    0).pack())
        return self._reply(c.DeviceInfo, body)

    def region_info(self, index: int) -> FunctionRegionInfo:
        body = self.request(c.Command.DEVICE_GET_REGION_INFO,
                            c.RegionInfo(c.RegionInfo.SIZE, 0, index, 0, 0, 0).pack())
        r = self._reply(c.RegionInfo, body)
        return FunctionRegionInfo(r.index, r.size, RegionFlag(r.flags))

    def irq_info(self, index: int) -> FunctionIrqInfo:
        body = self.request(c.Command.DEVICE_GET_IRQ_INFO,
                            c.IrqInfo(c.IrqInfo.SIZE, 0, index, 0).pack())
        r = self._reply(c.IrqInfo, body)
        return FunctionIrqInfo(r.index, r.count, IrqFlag(r.flags))

    # ------------------------------------------------------------------ regions

    def region_read(self, index: int, offset: int, count: int) -> bytes:
        req = c.RegionAccess(offset, index, count)
        body = self.request(c.Command.REGION_READ, req.pack(),
                            capacity=c.HEADER_SIZE + c.RegionAccess.SIZE + count)
        r = self._reply(c.RegionAccess, body)
        data = body[c.RegionAccess.SIZE:]
        if r.count != count or len(data) != count:
            self._broken()
            raise ProtocolViolation(f"read of {count} bytes returned {len(data)}")
        return data

    def region_write(self, index: int, offset: int, data: bytes, *,
                     posted: bool = False) -> None:
        req = c.RegionAccess(offset, index, len(data))
        self.request(c.Command.REGION_WRITE, req.pack() + data, posted=posted)

    def region_write_multi(self, writes: Sequence[tuple[int, int, bytes]], *,
                           posted: bool = True) -> None:
        """Up to 200 writes of at most 8 bytes each: (region, offset, data)."""
        body = c.WriteMultiHead(len(writes)).pack() + b"".join(
            c.WriteOne(off, region, len(data), data).pack() for region, off, data in writes)
        self.request(c.Command.REGION_WRITE_MULTI, body, posted=posted)

    def reset(self) -> None:
        self.request(c.Command.DEVICE_RESET)

    # ------------------------------------------------------------------ interrupts

    def set_irqs(self, index: int, start: int, count: int, flags: int, *,
                 fds: Sequence[int] = (), bools: bytes = b"") -> None:
        """One SET_IRQS message as it is (no chunking)."""
        req = c.IrqSet(c.IrqSet.SIZE + len(bools), flags, index, start, count)
        self.request(c.Command.DEVICE_SET_IRQS, req.pack() + bools, fds)

    def set_eventfds(self, index: int, start: int, fds: Sequence[int | None]) -> None:
        """Assign eventfds (None: de-assign) in runs of at most the server's max_msg_fds,
        the way QEMU sends them."""
        flags = c.IrqSetFlag.DATA_EVENTFD | c.IrqSetFlag.ACTION_TRIGGER
        limit = max(1, self.server_caps.max_msg_fds)
        i = 0
        while i < len(fds):
            assigned = fds[i] is not None
            n = 1
            while n < limit and i + n < len(fds) and (fds[i + n] is not None) == assigned:
                n += 1
            chunk = [fd for fd in fds[i:i + n] if fd is not None]
            self.set_irqs(index, start + i, n, flags, fds=chunk)
            i += n

    def disable_irqs(self, index: int) -> None:
        self.set_irqs(index, 0, 0, c.IrqSetFlag.DATA_NONE | c.IrqSetFlag.ACTION_TRIGGER)

    def enable_irqs(self, index: int, count: int, start: int = 0) -> list[int]:
        """Create eventfds (owned by this client) for vectors start..; returns them."""
        fds = [os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC) for _ in range(count)]
        try:
            self.set_eventfds(index, start, fds)
        except BaseException:
            close_fds(fds)
            raise
        for i, fd in enumerate(fds):
            old = self._irq_fds.pop((index, start + i), None)
            if old is not None:
                os.close(old)
            self._irq_fds[(index, start + i)] = fd
        return fds

    def enable_msix(self, count: int) -> list[int]:
        return self.enable_irqs(IrqIndex.MSIX, count)

    def wait_irq(self, index: int, vector: int, timeout: float) -> int:
        """Wait for an interrupt on an eventfd from `enable_irqs`; returns how many
        triggers it counted (0: timed out). Consumes them."""
        fd = self._irq_fds.get((index, vector))
        if fd is None:
            raise VfioUserError(f"no eventfd for irq {index}/{vector} from enable_irqs")
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, int(timeout * 1000))):
            return 0
        try:
            return os.eventfd_read(fd)
        except BlockingIOError:
            return 0


def _int_array(fds: Sequence[int]) -> bytes:
    return array.array("i", fds).tobytes()
