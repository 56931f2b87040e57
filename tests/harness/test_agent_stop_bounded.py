"""Stopping the agent when driver threads will not stop: the drivers of a group are asked at
once and waited for within one deadline (guest_drivers.agent.STOP_TIMEOUT_S), not one
timeout per driver, and where each stuck thread was is logged with its stack.

The real platform in harness mode; the fault is planted in the drivers: two VF drivers'
`poll` blocks on an event the test holds until the end (a driver thread stuck in I/O)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from guest_drivers import agent as agent_mod
from guest_drivers.agent import Agent
from guest_drivers.driver import DriverState
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import host_config
from tests.support.waiting import wait_for

STUCK = ("vf0", "vf1")


def stuck_in_poll(release: threading.Event, entered: threading.Event) -> Callable[[], bool]:
    def poll() -> bool:
        entered.set()
        release.wait(120)  # the test sets it once stop() has returned
        return False
    return poll


def test_stuck_drivers_cost_one_deadline_and_say_where_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(agent_mod, "STOP_TIMEOUT_S", 2.0)
    release = threading.Event()
    with Platform(host_config(3), tmp_path) as plat:
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))),
                      poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            entered = {n: threading.Event() for n in STUCK}
            for n in STUCK:
                d = agent.drivers[n]
                d.poll = stuck_in_poll(release, entered[n])  # type: ignore[method-assign]
                d.wake()
            assert all(wait_for(e.is_set, 30) for e in entered.values())
            caplog.set_level(logging.WARNING, logger="guest_drivers.driver")
            t0 = time.monotonic()
            agent.stop()
            took = time.monotonic() - t0
        finally:
            release.set()
    # one timeout per stuck driver (the default 30 s each) would take a minute; one
    # deadline for the group takes ~2 s: the bound only tells the two apart
    assert took < 20, took
    for n in STUCK:
        msg = next((r.getMessage() for r in caplog.records
                    if r.getMessage().startswith(f"{n}: thread did not stop")), None)
        assert msg is not None, [r.getMessage() for r in caplog.records]
        assert "in poll" in msg and "release.wait" in msg, msg  # its stack, where it was
    # the drivers that could stop did, the adapter's last
    assert agent.drivers["vf2"].state is DriverState.STOPPED
    assert agent.drivers["pf"].state is DriverState.STOPPED
