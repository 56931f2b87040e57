"""The platform's end of a platform-call channel, raw, for the channel's own tests: a
`Channel` on one end of a socket pair and, on the other, a peer that reads the lines the
channel wrote (one recv at a time: what one write brought), answers requests and pushes
events as the platform would. The channel's contract against the real platform is
tested elsewhere (tests/harness); this peer shows what goes on the wire, write by write."""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from eeh_abi.hcall import Channel
from eeh_abi.vocabulary import Kind


class RawPeer:
    """The platform's end: reads lines, answers each request that is not quiet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buf = b""

    def readable(self, timeout: float = 0.0) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def read_lines(self) -> list[dict[str, Any]]:
        """What one recv brings (at least one whole line)."""
        while True:
            self._buf += self.sock.recv(1 << 16)
            *lines, self._buf = self._buf.split(b"\n")
            if lines:
                return [json.loads(x) for x in lines]

    def answer(self, msgs: list[dict[str, Any]]) -> None:
        out = b"".join(b'{"v":1,"id":%d,"status":0}\n' % int(m["id"]) for m in msgs
                       if not m.get("quiet"))
        if out:
            self.sock.sendall(out)

    def lift(self, *pes: int) -> None:
        """One batched `lockout-lifted` line for `pes` (as the platform pushes it)."""
        line = {"v": 1, "event": Kind.LOCKOUT_LIFTED.value, "pe": pes[0],
                "data": {"pes": list(pes)}, "t": 1.0}
        self.sock.sendall(json.dumps(line).encode() + b"\n")


@contextmanager
def channel() -> Iterator[tuple[Channel, RawPeer]]:
    """A channel and its raw peer, both closed at the end."""
    a, b = socket.socketpair()
    ch = Channel(a.fileno(), close=a.close, timeout=10)
    try:
        yield ch, RawPeer(b)
    finally:
        ch.close()
        b.close()
