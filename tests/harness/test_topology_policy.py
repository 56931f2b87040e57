"""A topology's policy keys take effect on the real platform (harness mode: the platform,
the device model and the real drivers on the host, built from the topology file alone)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from eeh_sriov.topology import HOST, Topology, parse_topology
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.platform import Platform
from tests.support.waiting import wait_for


def harness(policy: str) -> Topology:
    return parse_topology(f"""
[adapter]
total_vfs = 1
timing = "fast"
[uplink]
kind = "queue"
[policy]
{policy}
[pf_driver]
where = "host"
""", "policy-test.toml")


@contextmanager
def running(topo: Topology, tmp_path: Path) -> Iterator[Platform]:
    with Platform(topo.platform_config(host_cpus=()), tmp_path) as plat:
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))),
                      poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            yield plat
        finally:
            agent.stop()


@pytest.mark.parametrize(("max_reset_failures", "permanent"), [(1, True), (2, False)])
def test_max_reset_failures_from_the_topology(tmp_path: Path, max_reset_failures: int,
                                              permanent: bool) -> None:
    """One failed reset of the adapter PE: with `policy.max_reset_failures = 1` that is its
    last (the PE and the VF below it permanently failed); with 2 the next reset works."""
    topo = harness(f"max_reset_failures = {max_reset_failures}")
    assert topo.policy.max_reset_failures == max_reset_failures
    with running(topo, tmp_path) as plat:
        assert plat.policy.config.max_reset_failures == max_reset_failures
        plat.fail_resets("adapter", 1)
        t = time.monotonic()
        plat.inject_adapter_error()

        def entries(kind: str) -> list[str | None]:
            return [e.pe for e in plat.timeline.snapshot()
                    if e.t > t and e.source == "policy" and e.kind == kind]

        if permanent:
            assert wait_for(lambda: {"adapter", "vf0"} <= set(entries("permanent-failure")),
                            20), entries("permanent-failure")
            states = plat.pe_states()
            assert states["adapter"]["state"] == 5 and states["adapter"]["retry_ms"] == 0
        else:
            assert wait_for(lambda: plat.pe_states()["vf0"]["state"] == 0
                            and "vf0" in entries("pe-thawed"), 20)
            assert entries("permanent-failure") == []
        assert entries("reset-failed") == ["adapter"]
