"""The baselines of bench.vfio_user (ping-pong, asyncio echo), which bench.guest_mmio and
the server's ratio goal are judged against."""

from __future__ import annotations

import json
import select
import shutil
import socket
import tempfile
from pathlib import Path

from bench import vfio_user as vub


def test_pingpong_times_each_round_trip_with_an_echo_of_its_own() -> None:
    samples = vub.pingpong(50)
    assert len(samples) == 50 and all(0 < s < 10 for s in samples)  # 10 s: a hang, not speed


def test_the_asyncio_echo_reports_per_round_as_the_server_does() -> None:
    """Its "stats" lines give messages and wall time so far, read before and after each
    round like the server's: the ratio compares the same statistic."""
    d = Path(tempfile.mkdtemp(prefix="eeh-pp-", dir="/tmp"))
    echo = vub._spawn("--echo-asyncio", str(d / "a.sock"))
    assert echo.stdin is not None and echo.stdout is not None
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(d / "a.sock"))
            for _ in range(20):
                vub._exchange(s, bytes(vub.PING_REQ))
            echo.stdin.write("stats\n")
            echo.stdin.flush()
            ready, _, _ = select.select([echo.stdout], [], [], 10)
            assert ready, "the asyncio echo does not answer stats"
            stats = json.loads(echo.stdout.readline())
        assert stats["messages"] == 20 and stats["busy_ns"] > 0
    finally:
        echo.kill()
        echo.wait()
        shutil.rmtree(d, ignore_errors=True)
