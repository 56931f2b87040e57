"""A listener that raises is logged, never swallowed, and stops nothing: not the
platform, not the listeners after it (hypervisor_shim.listeners, used by the timeline and
the platform's events)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hypervisor_shim.listeners import Listeners
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.platform_api import PeStateChanged, PlatformEvent
from hypervisor_shim.timeline import Entry, Timeline


def boom(arg: object) -> None:
    raise RuntimeError(f"listener bug on {arg!r}")


def test_a_failing_listener_is_logged_once_with_its_traceback_then_counted(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.listeners")
    seen: list[int] = []
    ls: Listeners[int] = Listeners("test listener", logging.getLogger("test.listeners"))
    ls.add(boom)
    ls.add(seen.append)
    for n in range(3):
        ls.call(n)
    assert seen == [0, 1, 2]  # the one after it still hears everything
    assert ls.failures == {boom: 3}
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "test listener" in errors[0].getMessage()
    assert "listener bug on 0" in caplog.text
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 2


def test_timeline_listener_failure_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    tl = Timeline()
    seen: list[Entry] = []
    tl.add_listener(boom)
    tl.add_listener(seen.append)
    tl.record("shim", "platform-started")
    assert [e.kind for e in tl.entries] == [e.kind for e in seen] == ["platform-started"]
    assert "timeline listener" in caplog.text and "listener bug" in caplog.text


def test_platform_event_listener_failure_is_logged_and_the_platform_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners={"pf": "svc", "vf0": "g1"})
    seen: list[PlatformEvent] = []
    with Platform(cfg) as plat:
        plat.add_listener(boom)
        plat.add_listener(seen.append)
        asyncio.run(plat.inject("vf0", "vf-error"))
        assert plat.pe_states()["vf0"]["state"] == 2
        asyncio.run(plat.inject("adapter", "adapter-fatal"))  # and again: still working
    assert next(e for e in seen if isinstance(e, PeStateChanged)) == PeStateChanged(
        "vf0", 2, ("isolated", "recovering"), "pe-frozen")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR
              and "platform event listener" in r.getMessage()]
    assert len(errors) == 1 and errors[0].exc_info is not None
