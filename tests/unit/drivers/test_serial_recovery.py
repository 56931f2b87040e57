"""The agent's serial_recovery option (the benchmarks' baseline, as Linux's single EEH
recovery thread): VF drivers that share the lock recover one after another; without it
they recover in parallel. The real platform in harness mode; the order is the platform's
timeline."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from guest_drivers.driver import DriverState
from tests.support.channels import TapChannel
from tests.support.platform_rig import PlatformRig, host_config, running
from tests.support.waiting import wait_for

NVFS = 3
VFS = [f"vf{n}" for n in range(NVFS)]


@pytest.fixture
def rig() -> Iterator[PlatformRig]:
    with running(host_config(nvfs=NVFS)) as r:
        yield r


def recover_once(rig: PlatformRig, serial: bool, hold_allow: bool) -> dict[str, tuple[int, int]]:
    """One adapter error with the whole agent; each VF PE's (first, last) index of its
    recovery reports (error-detected .. recovered) in the platform's timeline."""
    def tap(t: TapChannel) -> None:
        def before(call: str, args: dict[str, object]) -> None:
            # parallel: every VF driver meets the lockout before the adapter driver
            # lifts it (in one process the PF may otherwise finish before they look)
            if hold_allow and call == "open-sriov-allow-unfreeze":
                assert wait_for(lambda: all(rig.policy("unfreeze-refused", n) for n in VFS),
                                10)
        t.before.append(before)

    agent = rig.agent(serial_recovery=serial, tap=tap)
    assert agent.start() == ["pf", *VFS]
    vfs = agent.vf_drivers()
    assert all(d.recovery_lock is agent.recovery_lock for d in vfs)
    assert (agent.recovery_lock is not None) == serial
    rig.plat.inject_adapter_error("test")
    assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered == 1
                                for d in agent.drivers.values()), 20), rig.reports()
    assert all(d.state is DriverState.UP for d in agent.drivers.values())
    assert wait_for(lambda: all("recovered" in rig.steps(n) for n in VFS))
    order = rig.reports()
    spans = {}
    for name in VFS:
        mine = [i for i, (step, p) in enumerate(order) if p == name and step in (
            "error-detected", "recovered")]
        spans[name] = (mine[0], mine[-1])
    return spans


def test_serial_recovery_runs_the_vf_recoveries_one_after_another(rig: PlatformRig) -> None:
    spans = sorted(recover_once(rig, serial=True, hold_allow=False).values())
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end < start, spans  # the next VF starts only after the previous recovered
    # at most one VF driver met the lockout (in one process the adapter driver may
    # finish before the first looks): the others started after it was lifted
    refused = [n for n in VFS if rig.policy("unfreeze-refused", n)]
    assert len(refused) <= 1, refused


def test_parallel_recovery_is_the_default(rig: PlatformRig) -> None:
    spans = sorted(recover_once(rig, serial=False, hold_allow=True).values())
    # every VF driver detected the error before any of them recovered
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans


def test_a_driver_waiting_for_the_lock_stops_cleanly(rig: PlatformRig) -> None:
    agent = rig.agent(serial_recovery=True)
    agent.start()
    assert agent.recovery_lock is not None
    agent.recovery_lock.acquire()  # someone else's recovery runs forever
    try:
        rig.plat.inject_adapter_error("test")
        vf0 = agent.drivers["vf0"]
        assert wait_for(lambda: vf0.state is DriverState.RECOVERING, 10)
        vf0.stop(timeout=5)
        assert vf0.state is DriverState.STOPPED
        assert "error-detected" not in rig.steps("vf0")
    finally:
        agent.recovery_lock.release()
