"""The adapter's uplink on the host: a Linux TAP interface, and the host's side of it.

    up = TapUplink("eehup0", loop)      # the device model's end (an `Uplink`)
    port = TapHostPort("eehup0")        # the host's end: scapy/tcpdump see the same frames

Frames the adapter's switch sends to the uplink are written to the TAP's fd: the host
kernel receives them on `eehup0` (so `tcpdump -i eehup0` shows them and an AF_PACKET
socket reads them). Frames the host transmits on `eehup0` are read from the fd on the
device model's loop and handed to the switch. The interface exists while the uplink is
open (not persistent): closing it removes it. IPv6 is disabled on it so that the kernel
sends no router solicitations or MLD reports into the adapter. Needs root (CAP_NET_ADMIN).

`QueueHostPort` is the same host side for the in-process `QueueUplink`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import re
import socket
import struct
from collections.abc import Callable
from typing import Protocol

from device_model import QueueUplink
from hypervisor_shim.errors import ShimError

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 9216 + 18 + 4


class UplinkError(ShimError):
    """The uplink interface cannot be created or used."""

    def __init__(self, name: str, reason: str, err: int = 0) -> None:
        super().__init__(f"uplink {name}: {reason}")
        self.name = name
        self.reason = reason
        self.errno = err


def _ifreq(name: str, flags: int) -> bytes:
    return struct.pack("16sH22x", name.encode(), flags)


class TapUplink:
    """`device_model.Uplink` on a TAP interface; reads run on `loop` (the model's)."""

    @classmethod
    def first_free(cls, name: str, loop: asyncio.AbstractEventLoop,
                   tries: int = 16) -> TapUplink:
        """A TAP named `name`, or, when another run holds it, the next free name with the
        number at its end counted up (eehup0 -> eehup1 ...): runs on one machine do not
        collide. `.name` says which."""
        m = re.fullmatch(r"(.*?)(\d*)", name)
        assert m is not None
        stem, num = m.group(1), int(m.group(2) or 0)
        for i in range(tries):
            candidate = f"{stem}{num + i}" if m.group(2) or i else name
            try:
                return cls(candidate, loop)
            except UplinkError as e:
                if e.errno != errno.EBUSY or len(f"{stem}{num + i + 1}") > 15:
                    raise
        raise UplinkError(name, f"the name and the next {tries - 1} are all in use")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self._loop = loop
        self._deliver: Callable[[bytes], None] | None = None
        self.sent = self.received = self.send_errors = 0
        try:
            self._fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            raise UplinkError(name, f"cannot open /dev/net/tun: {e.strerror}") from None
        try:
            fcntl.ioctl(self._fd, TUNSETIFF, _ifreq(name, IFF_TAP | IFF_NO_PI))
            with contextlib.suppress(OSError):
                with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
                    f.write("1")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS,
                                                             _ifreq(name, 0)))[1]
                fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(name, flags | IFF_UP))
        except OSError as e:
            os.close(self._fd)
            raise UplinkError(name, f"cannot create the TAP interface: {e.strerror} "
                                    "(root is needed; or the name is in use)",
                              e.errno or 0) from None

    def send(self, frame: bytes) -> None:
        try:
            os.write(self._fd, frame)
            self.sent += 1
        except OSError:  # the kernel's queue is full or the interface is down: lost
            self.send_errors += 1

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver
        self._loop.add_reader(self._fd, self._readable)

    def detach(self) -> None:
        self._deliver = None
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)

    def _readable(self) -> None:
        for _ in range(64):  # bounded work per wake-up
            try:
                frame = os.read(self._fd, MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.received += 1
            if self._deliver is not None:
                self._deliver(frame)

    def close(self) -> None:
        self.detach()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class HostPort(Protocol):
    """The host's end of the uplink, for the traffic generator."""

    def send(self, frames: list[bytes]) -> None: ...
    def receive(self) -> list[bytes]: ...
    def close(self) -> None: ...


class TapHostPort:
    """Transmit on and receive from the TAP interface with an AF_PACKET socket."""

    def __init__(self, name: str) -> None:
        self.name = name
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW,
                                       socket.htons(ETH_P_ALL))
            self._sock.bind((name, 0))
        except OSError as e:
            raise UplinkError(name, f"cannot open a packet socket: {e.strerror}") from None
        self._sock.setblocking(False)

    def send(self, frames: list[bytes]) -> None:
        for f in frames:
            with contextlib.suppress(BlockingIOError):
                self._sock.send(f)

    def receive(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                data, addr = self._sock.recvfrom(MAX_FRAME)
            except (BlockingIOError, InterruptedError):
                return out
            if addr[2] != PACKET_OUTGOING:  # what the adapter sent, not our own
                out.append(data)

    def close(self) -> None:
        self._sock.close()


class QueueHostPort:
    """The host's end of an in-process `QueueUplink` (calls run on the model's thread)."""

    def __init__(self, uplink: QueueUplink, call: Callable[[Callable[[], object]], object]
                 ) -> None:
        self._uplink = uplink
        self._call = call

    def send(self, frames: list[bytes]) -> None:
        def put() -> None:
            for f in frames:
                self._uplink.inject(f)
        self._call(put)

    def receive(self) -> list[bytes]:
        got = self._call(self._uplink.take)
        return list(got) if isinstance(got, list) else []

    def close(self) -> None:
        pass
