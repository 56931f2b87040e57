"""ServerThread when its loop is killed: sockets closed at once, `died` set, `on_death`
decides whether the loop goes on; `call` on a dead, ended thread raises."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from vfio_user_fakes import FakeFunction

from vfio_user import ConnectionClosed, ServerThread, ServerThreadDied, VfioUserError
from vfio_user.client import Client


def die() -> None:
    raise SystemExit("injected")


def wait(cond: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_a_killed_loop_closes_every_socket_and_the_thread_ends(tmp_path: Path) -> None:
    st = ServerThread({"f0": FakeFunction("f0"), "f1": FakeFunction("f1")}, tmp_path).start()
    client = Client.open(st.paths["f0"], timeout=5)
    st.loop.call_soon_threadsafe(die)
    assert wait(lambda: not st._thread.is_alive())
    assert isinstance(st.died, SystemExit)
    assert not st.paths["f0"].exists() and not st.paths["f1"].exists()
    t0 = time.monotonic()
    with pytest.raises((ConnectionClosed, VfioUserError, OSError)):
        client.region_read(0, 0, 4)
    assert time.monotonic() - t0 < 1.0  # at once, not after the client's timeout
    client.close()
    with pytest.raises(ServerThreadDied):
        st.call(lambda: 1)
    st.stop()


def test_on_death_may_keep_the_loop_for_others(tmp_path: Path) -> None:
    st = ServerThread({"f0": FakeFunction("f0")}, tmp_path)
    seen: list[BaseException] = []
    st.on_death = lambda e: seen.append(e) or True
    st.start()
    st.loop.call_soon_threadsafe(die)
    assert wait(lambda: bool(seen))
    assert not st.paths["f0"].exists()
    assert st.call(lambda: 42) == 42  # the loop runs on
    st.stop()
    assert not st._thread.is_alive()
