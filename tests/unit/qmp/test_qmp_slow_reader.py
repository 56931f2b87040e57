"""A client that does not read is never dropped for its events: they queue up to a bound,
the rest are dropped (per type, the latest wins), and when it reads again it gets one
EVENTS_DROPPED marker that counts them, the queued events, then new ones. Only replies
piling up disconnect a client, and that is logged with its numbers."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from qmp_fakes import Backend, RawClient, run_server, sock_dir

from qmp_server import Server, session

__all__ = ["sock_dir"]
BLOB = "r" * 7000  # a report's detail, as a flooding guest sends it


class Sleeper:
    """A raw client that negotiates, then reads nothing until told to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    @classmethod
    async def connect(cls, path: Path) -> Sleeper:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, str(path))
        await loop.sock_sendall(sock, b'{"execute": "qmp_capabilities"}')
        c = cls(sock)
        assert "QMP" in await c.recv()
        assert await c.recv() == {"return": {}}
        return c

    async def recv(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        while b"\r\n" not in self.buf:
            data = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 16), 10)
            if not data:
                raise EOFError("server closed the connection")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg


def _stats(server: Server, client: int) -> dict[str, Any]:
    [s] = [o for o in server.output() if o["client"] == client]
    return s


async def _settle(server: Server) -> None:
    for _ in range(3):  # let the flusher and the socket catch up
        await asyncio.sleep(0.01)


def test_a_quiet_client_stays_connected_and_learns_what_it_missed(sock_dir: Path) -> None:
    n = 3000  # ~21 MB of events, the flood of issue 20
    measured: dict[str, Any] = {}

    async def body(server: Server, be: Backend) -> None:
        reader = await RawClient.connect(server.local_path)  # client 1: reads everything
        sleeper = await Sleeper.connect(server.local_path)  # client 2: reads nothing
        peak_queue = peak_buffered = 0
        t0 = time.monotonic()
        for i in range(n):
            be.emit("EEH_RECOVERY_STEP", {"i": i, "detail": BLOB})
            ev = await reader.event()
            assert ev["data"]["i"] == i
            if i % 100 == 99:
                await _settle(server)
                st = _stats(server, 2)
                peak_queue = max(peak_queue, st["queued_events"])
                peak_buffered = max(peak_buffered, st["buffered"])
        measured["flood_s"] = time.monotonic() - t0
        await _settle(server)
        st = _stats(server, 2)
        assert server.session_count() == 2  # nobody was dropped
        assert st["queued_events"] == session.MAX_QUEUED_EVENTS
        assert peak_queue <= session.MAX_QUEUED_EVENTS
        assert peak_buffered <= session.EVENT_BUFFER + len(BLOB) + 200
        measured.update(peak_queue=peak_queue, peak_buffered=peak_buffered,
                        dropped=st["dropped_events"])

        # the sleeper reads: the events written before it stopped, the marker, the
        # queue (the latest events, in order), then new ones
        got: list[int] = []
        while True:
            m = await sleeper.recv()
            if m["event"] == session.EVENTS_DROPPED:
                marker = m
                break
            got.append(m["data"]["i"])
        assert got == list(range(len(got)))
        dropped = marker["data"]["dropped"]
        assert dropped == st["dropped_events"]
        assert len(got) + dropped + session.MAX_QUEUED_EVENTS == n
        since = marker["data"]["since"]
        assert set(since) == {"seconds", "microseconds"}
        for j in range(len(got) + dropped, n):
            m = await sleeper.recv()
            assert m["event"] == "EEH_RECOVERY_STEP" and m["data"]["i"] == j
            if j == len(got) + dropped:
                first_kept = m["timestamp"]
        assert (since["seconds"], since["microseconds"]) <= (
            first_kept["seconds"], first_kept["microseconds"])
        be.emit("AFTER", {"x": 1})
        assert (await sleeper.recv())["event"] == "AFTER"
        assert (await reader.event())["event"] == "AFTER"
        await _settle(server)
        assert _stats(server, 2)["queued_events"] == 0
        # and it can still talk
        await asyncio.get_running_loop().sock_sendall(
            sleeper.sock, b'{"execute": "ping", "id": 7}')
        assert (await sleeper.recv())["id"] == 7
        measured["delivered_before"] = len(got)
        sleeper.sock.close()
        await reader.close()

    run_server(sock_dir, body)
    print(f"\nflood of {n} events x {len(BLOB)} B: {measured}")


def test_a_flood_of_one_type_keeps_the_latest_event_of_another(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        sleeper = await Sleeper.connect(server.local_path)
        for i in range(400):  # fill the socket and start queueing
            be.emit("FLOOD", {"i": i, "detail": BLOB})
        be.emit("RARE", {"lifted": "vf0"})
        for i in range(400, 2000):
            be.emit("FLOOD", {"i": i, "detail": BLOB})
        await _settle(server)
        assert _stats(server, 1)["queued_events"] == session.MAX_QUEUED_EVENTS
        names: list[str] = []
        last = None
        while last != 1999:
            m = await sleeper.recv()
            names.append(m["event"])
            last = m["data"].get("i")
        assert names.count("RARE") == 1 and names.count(session.EVENTS_DROPPED) == 1
        assert names.index(session.EVENTS_DROPPED) < names.index("RARE")
        sleeper.sock.close()

    run_server(sock_dir, body)


def test_a_client_whose_replies_pile_up_is_disconnected_and_logged(
        sock_dir: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(session, "MAX_OUTPUT", 256 * 1024)

    async def body(server: Server, be: Backend) -> None:
        reader = await RawClient.connect(server.local_path)
        sleeper = await Sleeper.connect(server.local_path)
        big = json.dumps({"execute": "echo", "arguments": {"value": "x" * 900_000}})
        loop = asyncio.get_running_loop()
        with caplog.at_level(logging.WARNING, logger="qmp_server.session"):
            await loop.sock_sendall(sleeper.sock, big.encode())  # one reply > the limit
            for _ in range(100):
                if server.session_count() == 1:
                    break
                await asyncio.sleep(0.02)
        assert server.session_count() == 1  # the sleeper was dropped, the reader stays
        assert any("does not read its replies" in r.getMessage() and "limit 262144"
                   in r.getMessage() for r in caplog.records)
        assert "return" in await reader.command("ping")
        await reader.close()
        sleeper.sock.close()

    run_server(sock_dir, body)
