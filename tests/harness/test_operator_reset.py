"""The operator's PE commands on the real platform, with the drivers on the host (harness
mode), as issue 19's console session met them:

- an operator reset of a healthy VF PE (`eeh-reset-pe pe=vf0`, `Platform.reset_pe`) is a
  recovery for its driver: it re-initialises the function and passes traffic again;
- a reset after a permanent failure leaves consistent flags and tells the owner's driver;
- injections and events name only PEs that exist.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from guest_drivers.agent import Agent
from guest_drivers.driver import DriverState
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform_api import LockoutLifted, PlatformError, PlatformEvent
from tests.support.frames import payload
from tests.support.platform_rig import PlatformRig, frame, host_config, running
from tests.support.waiting import wait_for


@pytest.fixture
def rig() -> Iterator[PlatformRig]:
    with running(host_config(nvfs=3)) as r:
        yield r


def _vf(agent: Agent, name: str) -> VfDriver:
    d = agent.drivers[name]
    assert isinstance(d, VfDriver)
    return d


def passes_traffic(rig: PlatformRig, vf: VfDriver, tag: str, timeout: float) -> bool:
    """Frames sent through `vf` reach the uplink within `timeout` (sent again and again:
    the driver may still be re-initialising its function when the first ones go)."""
    deadline = time.monotonic() + timeout
    n = 0
    while time.monotonic() < deadline:
        n += 1
        vf.send(frame(vf.mac, tag=f"{tag}-{n}"))
        if wait_for(lambda: any(payload(f).startswith(tag) for f in rig.uplink()), 0.2):
            return True
    return False


def test_a_reset_of_a_healthy_vf_is_a_recovery_and_traffic_flows_again(
        rig: PlatformRig) -> None:
    agent = rig.agent(vfs=1)
    agent.start()
    vf0 = _vf(agent, "vf0")
    assert passes_traffic(rig, vf0, "before", 5)
    done = asyncio.run(rig.plat.reset_pe("vf0", "hot", by="console"))
    assert done.status == 0
    assert passes_traffic(rig, vf0, "after", 15), (rig.steps("vf0"), vf0.counters())
    # the driver's report names the reset: a recovery started by the platform's
    # pe-reset-done, not a freeze
    detected = rig.details("error-detected", "vf0")
    assert detected and detected[-1]["trigger"] == "pe-reset-done", detected
    assert "all-ones-unconfirmed" not in rig.steps("vf0")
    assert "recovered" in rig.steps("vf0")
    assert vf0.state is DriverState.UP
    assert rig.plat.pe_states()["vf0"]["flags"] == []


def test_a_reset_after_a_permanent_failure_clears_the_flags_and_revives_the_driver(
        ) -> None:
    with running(host_config(nvfs=3, policy=PolicyConfig(max_freezes=0))) as rig:
        agent = rig.agent(vfs=1)
        agent.start()
        vf0 = _vf(agent, "vf0")
        rig.plat.inject_vf_error(0)
        assert wait_for(lambda: vf0.state is DriverState.FAILED, 15)
        assert "permanent" in rig.plat.pe_states()["vf0"]["flags"]
        asyncio.run(rig.plat.reset_pe("vf0", "hot", by="console"))
        # consistent flags: nothing stuck once the PE is back in state 0
        assert wait_for(lambda: rig.plat.pe_states()["vf0"]["flags"] == [], 5), \
            rig.plat.pe_states()["vf0"]
        assert rig.plat.pe_states()["vf0"]["state"] == 0
        # the owner's driver is told (the pushed pe-reset-done) and comes back
        assert wait_for(lambda: vf0.state is DriverState.UP, 15), (vf0.state,
                                                                   rig.steps("vf0"))
        assert passes_traffic(rig, vf0, "revived", 15), (rig.steps("vf0"), vf0.counters())
        assert rig.details("probe", "vf0")[-1].get("revived"), rig.details("probe", "vf0")


def test_injection_on_a_vf_that_is_not_enabled_is_refused() -> None:
    with running(host_config(nvfs=8, enabled=3)) as rig:
        listed = set(rig.plat.pe_states())
        assert "vf5" not in listed and "vf2" in listed
        with pytest.raises(PlatformError, match=r"vf5.*not present"):
            asyncio.run(rig.plat.inject("vf5", "vf-error", by="console"))
        with pytest.raises(PlatformError, match=r"vf5.*not present"):
            rig.plat.inject_vf_error(5)
        assert rig.plat.pe_states()["vf2"]["state"] == 0
        assert not rig.policy("pe-frozen")  # nothing froze
        asyncio.run(rig.plat.inject("vf2", "vf-error", by="console"))  # present: accepted
        assert wait_for(lambda: bool(rig.policy("pe-frozen", "vf2")), 5)


def test_a_reset_of_a_vf_that_is_not_enabled_is_refused() -> None:
    with running(host_config(nvfs=8, enabled=3)) as rig:
        with pytest.raises(PlatformError, match=r"vf5.*not present"):
            asyncio.run(rig.plat.reset_pe("vf5", "hot", by="console"))
        assert not [e for e in rig.entries() if e.pe == "vf5"]  # nothing recorded for it
        done = asyncio.run(rig.plat.reset_pe("vf2", "hot", by="console"))  # present
        assert done.to_json() == {"pe": "vf2", "kind": "hot", "status": 0}
        # a fundamental reset of a VF PE: refused, and the operator is told why
        with pytest.raises(PlatformError, match=r"status -8 \(NOT_SUPPORTED\) \(a "
                           r"fundamental reset is for an adapter PE; a VF PE takes a hot"):
            asyncio.run(rig.plat.reset_pe("vf2", "fundamental", by="console"))


def test_events_name_only_pes_that_exist() -> None:
    with running(host_config(nvfs=8, enabled=3, policy=PolicyConfig(max_freezes=0))) as rig:
        events: list[PlatformEvent] = []
        rig.plat.add_listener(events.append)
        listed = set(rig.plat.pe_states())
        rig.plat.inject_adapter_error()  # frozen, then at once permanently failed
        assert wait_for(lambda: rig.plat.pe_states()["vf2"]["flags"] != [], 5)
        assert rig.policy("permanent-failure", "vf2")
        named = {e.pe for e in rig.entries() if e.source == "policy" and e.pe is not None}
        assert named <= listed, sorted(named - listed)
        on_console = {getattr(e, "pe", None) for e in events} - {None}
        assert on_console <= listed, sorted(on_console - listed)


def test_no_lockout_lifted_for_a_permanently_failed_vf() -> None:
    with running(host_config(nvfs=3, policy=PolicyConfig(max_freezes=1))) as rig:
        events: list[PlatformEvent] = []
        rig.plat.add_listener(events.append)
        agent = rig.agent()
        agent.start()
        vf0, vf1 = _vf(agent, "vf0"), _vf(agent, "vf1")
        for _ in range(2):  # the second freeze within the window: vf0 permanently failed
            rig.plat.inject_vf_error(0)
            assert wait_for(lambda: bool(rig.details("recovered", "vf0")) or
                            vf0.state is DriverState.FAILED, 15)
        assert wait_for(lambda: vf0.state is DriverState.FAILED, 15), rig.steps("vf0")
        rig.plat.inject_adapter_error()
        assert wait_for(lambda: bool(rig.policy("lockout-lifted", "vf1")), 15)
        assert wait_for(lambda: vf1.recovery is not None and vf1.recovery.recovered >= 1, 15)
        assert not rig.policy("lockout-lifted", "vf0")
        assert not [e for e in events if isinstance(e, LockoutLifted) and e.pe == "vf0"]
        assert "permanent" in rig.plat.pe_states()["vf0"]["flags"]
        assert "locked-out" not in rig.plat.pe_states()["vf0"]["flags"]


def test_a_reset_of_the_adapter_pe_is_a_recovery_for_every_driver(rig: PlatformRig) -> None:
    agent = rig.agent()
    agent.start()
    vfs = [_vf(agent, f"vf{n}") for n in range(3)]
    assert all(passes_traffic(rig, vf, f"before-{vf.name}", 5) for vf in vfs)
    asyncio.run(rig.plat.reset_pe("adapter", "hot", by="console"))
    for vf in vfs:
        assert passes_traffic(rig, vf, f"after-{vf.name}", 15), (rig.steps(vf.name),
                                                                 rig.steps("adapter"))
    assert rig.details("error-detected", "adapter")[-1]["trigger"] == "pe-reset-done"
    assert all(s["state"] == 0 and s["flags"] == [] for s in rig.plat.pe_states().values())


def _revived_after_an_adapter_permanent_failure(rig: PlatformRig, agents: list[Agent]
                                                ) -> None:
    """The adapter PE fails permanently (every PE below with it, every driver told and
    disconnected); the operator's reset of the adapter PE clears the failure and pushes
    `pe-reset-done` for the adapter PE to the owners below: the PF driver brings the
    adapter back (SR-IOV), every VF driver probes its function again and passes traffic."""
    drivers = [d for a in agents for d in a.drivers.values()]
    vfs = [d for d in drivers if isinstance(d, VfDriver)]
    assert len(vfs) == 3
    assert all(passes_traffic(rig, vf, f"before-{vf.name}", 5) for vf in vfs)
    rig.plat.inject_adapter_error()  # max_freezes=0: the adapter's last freeze
    assert wait_for(lambda: all(d.state is DriverState.FAILED for d in drivers), 20), \
        {d.name: d.state for d in drivers}
    assert all("permanent" in s["flags"] for s in rig.plat.pe_states().values())
    done = asyncio.run(rig.plat.reset_pe("adapter", "hot", by="console"))
    assert done.status == 0
    assert wait_for(lambda: all(d.state is DriverState.UP for d in drivers), 30), \
        ({d.name: d.state for d in drivers}, {vf.name: rig.steps(vf.name) for vf in vfs})
    for vf in vfs:
        assert passes_traffic(rig, vf, f"after-{vf.name}", 15), (rig.steps(vf.name),
                                                                 vf.counters())
        assert rig.details("probe", vf.name)[-1].get("revived"), rig.details("probe",
                                                                             vf.name)
    assert wait_for(lambda: all(s["state"] == 0 and s["flags"] == []
                                for s in rig.plat.pe_states().values()), 10), \
        rig.plat.pe_states()


def test_an_adapter_reset_after_its_permanent_failure_revives_every_driver() -> None:
    with running(host_config(nvfs=3, policy=PolicyConfig(max_freezes=0))) as rig:
        agent = rig.agent()
        agent.start()
        _revived_after_an_adapter_permanent_failure(rig, [agent])


def test_vfs_of_another_partition_are_revived_by_the_adapter_reset_too() -> None:
    # as in the VM topology: the VFs' partition owns no adapter PE; it hears of the
    # adapter's reset because it owns PEs below it
    owners = {"pf": HOST, **{f"vf{n}": "g1" for n in range(3)}}
    with running(host_config(nvfs=3, owners=owners,
                             policy=PolicyConfig(max_freezes=0))) as rig:
        svc, g1 = rig.agent(HOST), rig.agent("g1")
        svc.start()
        g1.start()
        _revived_after_an_adapter_permanent_failure(rig, [svc, g1])
