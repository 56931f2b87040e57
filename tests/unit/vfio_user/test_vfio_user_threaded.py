"""Clients served from a thread of their own (`vfio_user.model_loop`): the function's accesses
run off the loop's thread, never at the same time as anything on the loop, and the
function may still use the loop (timers, get_running_loop) from there; bad input still
gets an error reply and the thread ends when its client or the server goes."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from vfio_user_fakes import FakeFunction, Rig

from vfio_user import Client, ConnectionClosed, ServerThread, codec
from vfio_user.model_loop import ModelLoop
from vfio_user.server import Connection, ThreadedConnection

LONG = 10.0  # hang timeout only


def _served_by(rig: Rig) -> type:
    return type(rig.call(lambda: rig.endpoint.connection))


class SlowFunction(FakeFunction):
    """A register whose read takes a while, and a probe of whether a read is under way."""

    def __init__(self) -> None:
        super().__init__("f0")
        self.inside = False
        self.overlaps = 0
        self.read_threads: set[str] = set()

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        self.read_threads.add(threading.current_thread().name)
        self.inside = True
        time.sleep(0.002)  # gives up the GIL: the loop could run now if nothing held it
        self.inside = False
        return super().region_read(index, offset, size)

    def probe(self) -> None:
        """Run on the loop: model code, so never while a read is under way."""
        if self.inside:
            self.overlaps += 1


def test_a_model_loop_serves_each_client_from_its_own_thread(rig: Rig, client: Client) -> None:
    assert isinstance(rig.thread.loop, ModelLoop)
    assert _served_by(rig) is ThreadedConnection
    client.region_write(0, 0x10, b"\x01\x02\x03\x04")
    assert client.region_read(0, 0x10, 4) == b"\x01\x02\x03\x04"


def test_loop_work_and_a_threaded_access_never_interleave(sock_dir: Path) -> None:
    fn = SlowFunction()
    st = ServerThread({"f0": fn}, sock_dir).start()
    try:
        stop = threading.Event()

        def poke() -> None:  # the loop touching the model as often as it can
            while not stop.is_set():
                st.loop.call_soon_threadsafe(fn.probe)
                time.sleep(0.0002)

        poker = threading.Thread(target=poke, daemon=True)
        poker.start()
        with Client.open(st.paths["f0"], timeout=LONG) as c:
            for _ in range(200):
                c.region_read(0, 0, 4)
        stop.set()
        poker.join(LONG)
        assert fn.read_threads == {"vfio-user-f0"}  # off the loop's thread...
        assert st.call(lambda: fn.overlaps) == 0  # ...and never during loop work
    finally:
        st.stop()


class TimerFunction(FakeFunction):
    """A write to BAR0 0x800 schedules work on the running loop, as the model's clock does."""

    def __init__(self) -> None:
        super().__init__("f0")
        self.fired = threading.Event()
        self.fired_on = ""

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        super().region_write(index, offset, data)
        if (index, offset) == (0, 0x800):
            asyncio.get_running_loop().call_later(0.01, self._fire)

    def _fire(self) -> None:
        self.fired_on = threading.current_thread().name
        self.fired.set()


def test_an_access_may_schedule_on_the_loop_and_the_loop_wakes_for_it(sock_dir: Path) -> None:
    fn = TimerFunction()
    st = ServerThread({"f0": fn}, sock_dir).start()
    try:
        with Client.open(st.paths["f0"], timeout=LONG) as c:
            c.region_write(0, 0x800, b"\x00" * 4)  # non-posted: answered, not an error
            assert fn.fired.wait(LONG), "the loop slept through a timer set by the thread"
            assert fn.fired_on == "vfio-user-server"
            future = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "alive"), st.loop)
            assert future.result(LONG) == "alive"
    finally:
        st.stop()


class BrokenFunction(FakeFunction):
    def region_read(self, index: int, offset: int, size: int) -> bytes:
        if offset == 0x40:
            raise RuntimeError("model bug")
        return super().region_read(index, offset, size)


def test_bad_input_on_the_thread_gets_an_error_reply_and_serving_goes_on(
        sock_dir: Path) -> None:
    st = ServerThread({"f0": BrokenFunction("f0")}, sock_dir).start()
    try:
        with Client.open(st.paths["f0"], timeout=LONG) as c:
            bads: tuple[Callable[[], bytes], ...] = (
                lambda: c.region_read(0, 0x40, 4),  # the function raised
                lambda: c.region_read(0, 0x1000, 4),  # outside BAR0
                lambda: c.region_read(9, 0, 4))  # no such region
            for bad in bads:
                with pytest.raises(Exception) as info:
                    bad()
                assert not isinstance(info.value, ConnectionClosed)
            assert c.region_read(0, 0, 4) == b"\x00" * 4
        _wait_gone(st)
        # a stream that cannot be framed ends that client only; the next is served
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.connect(str(st.paths["f0"]))
            raw.sendall(codec.Header.STRUCT.pack(1, 1, 8, 0, 0))  # size < header
            raw.settimeout(LONG)
            with contextlib.suppress(ConnectionResetError):  # closed by the server
                assert raw.recv(64) == b""
        _wait_gone(st)
        with Client.open(st.paths["f0"], timeout=LONG) as c:
            assert c.region_read(0, 0, 4) == b"\x00" * 4
    finally:
        st.stop()


def _wait_gone(st: ServerThread) -> None:
    """Until the endpoint has no client (the last one's disconnect was processed)."""
    deadline = time.monotonic() + LONG
    while st.call(lambda: st.server.endpoints["f0"].connection) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _threads(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix)]


def test_the_thread_ends_with_its_client_and_with_the_server(sock_dir: Path) -> None:
    st = ServerThread({"f0": FakeFunction("f0")}, sock_dir).start()
    try:
        c = Client.open(st.paths["f0"], timeout=LONG)
        assert len(_threads("vfio-user-f0")) == 1
        c.close()
        for t in _threads("vfio-user-f0"):
            t.join(LONG)
        assert not _threads("vfio-user-f0")
        c = Client.open(st.paths["f0"], timeout=LONG)
        c.region_read(0, 0, 4)
    finally:
        st.stop()
    for t in _threads("vfio-user-f0"):
        t.join(LONG)
    assert not _threads("vfio-user-f0")
    with pytest.raises((ConnectionClosed, OSError)):
        c.region_read(0, 0, 4)
    c.close()


def test_a_plain_or_debug_loop_serves_on_the_loop(sock_dir: Path) -> None:
    for loop in (asyncio.new_event_loop(), ModelLoop()):
        loop.set_debug(isinstance(loop, ModelLoop))
        st = ServerThread({"f0": FakeFunction("f0")}, sock_dir, loop=loop).start()
        try:
            with Client.open(st.paths["f0"], timeout=LONG) as c:
                c.region_read(0, 0, 4)
                ep = st.server.endpoints["f0"]
                assert type(st.call(lambda: ep.connection)) is Connection  # noqa: B023
        finally:
            st.stop()
