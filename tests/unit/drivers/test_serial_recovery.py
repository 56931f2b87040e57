"""The agent's serial_recovery option (the benchmarks' baseline, as Linux's single EEH
recovery thread): VF drivers that share the lock recover one after another; without it
they recover in parallel. The real device model in-process (no sockets)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from device_model import Adapter, AdapterConfig, ManualClock, QueueUplink
from guest_drivers.agent import Agent
from guest_drivers.driver import DriverState
from guest_drivers.poll import PollConfig
from tests.unit.drivers.drivers_fakes import (
    ModelPlatform,
    locked_runner,
    wait_for,
)
from tests.unit.drivers.drivers_inprocess import InProcessBackend

POLL = PollConfig(max_sleep_s=0.005, health_s=0.05)
NVFS = 3
VF_PES = [0x18000 + 0x100 * n for n in range(NVFS)]


Rig = tuple[Adapter, threading.RLock, ModelPlatform]


@pytest.fixture
def rig() -> Iterator[Rig]:
    lock = threading.RLock()
    adapter = Adapter(AdapterConfig(total_vfs=NVFS), clock=ManualClock(), uplink=QueueUplink())
    adapter.pf.enable_vfs(NVFS)
    yield adapter, lock, ModelPlatform(adapter, locked_runner(lock))


def recover_once(rig: Rig, serial: bool, hold_allow: bool) -> dict[int, tuple[int, int]]:
    """One adapter error with the whole agent; each VF PE's (first, last) index of its
    recovery reports (error-detected .. recovered) in the platform's report order."""
    adapter, lock, plat = rig
    agent = Agent(InProcessBackend(plat, adapter, lock), poll=POLL, serial_recovery=serial)
    try:
        assert agent.start() == ["pf", *(f"vf{n}" for n in range(NVFS))]
        vfs = agent.vf_drivers()
        assert all(d.recovery_lock is agent.recovery_lock for d in vfs)
        assert (agent.recovery_lock is not None) == serial

        def before(owner: str, call: str, args: dict[str, object]) -> None:
            # parallel: every VF driver meets the lockout before the adapter driver
            # lifts it (in one process the PF may otherwise finish before they look)
            if hold_allow and call == "open-sriov-allow-unfreeze":
                assert wait_for(lambda: all("unfreeze-refused" in plat.steps(pe)
                                            for pe in VF_PES), 10)

        plat.before_call = before
        with lock:
            adapter.inject_adapter_fatal("test")
        assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered == 1
                                    for d in agent.drivers.values()), 20), plat.steps()
        assert all(d.state is DriverState.UP for d in agent.drivers.values())
        order = [(a["step"], a.get("pe")) for _, _, a in plat.reports]
        spans = {}
        for pe in VF_PES:
            mine = [i for i, (step, p) in enumerate(order) if p == pe and step in (
                "error-detected", "recovered")]
            spans[pe] = (mine[0], mine[-1])
        return spans
    finally:
        agent.stop()


def test_serial_recovery_runs_the_vf_recoveries_one_after_another(rig: Rig) -> None:
    spans = sorted(recover_once(rig, serial=True, hold_allow=False).values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, spans  # the next VF starts only after the previous recovered
    # at most one VF driver met the lockout (in one process the adapter driver may
    # finish before the first looks): the others started after it was lifted
    refused = [pe for pe in VF_PES if "unfreeze-refused" in rig[2].steps(pe)]
    assert len(refused) <= 1, refused


def test_parallel_recovery_is_the_default(rig: Rig) -> None:
    spans = sorted(recover_once(rig, serial=False, hold_allow=True).values())
    # every VF driver detected the error before any of them recovered
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


def test_a_driver_waiting_for_the_lock_stops_cleanly(rig: Rig) -> None:
    adapter, lock, plat = rig
    agent = Agent(InProcessBackend(plat, adapter, lock), poll=POLL, serial_recovery=True)
    try:
        agent.start()
        assert agent.recovery_lock is not None
        agent.recovery_lock.acquire()  # someone else's recovery runs forever
        try:
            with lock:
                adapter.inject_adapter_fatal("test")
            vf0 = agent.drivers["vf0"]
            assert wait_for(lambda: vf0.state is DriverState.RECOVERING, 10)
            vf0.stop(timeout=5)
            assert vf0.state is DriverState.STOPPED
            assert "error-detected" not in plat.steps(VF_PES[0])
        finally:
            agent.recovery_lock.release()
    finally:
        agent.stop()
