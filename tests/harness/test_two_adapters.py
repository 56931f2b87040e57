"""Two adapters in one topology, on the real platform with the real drivers on the host
(harness mode, `eeh_sriov/topologies/two-adapters-harness.toml`'s form): each adapter its
own PE tree, policy and uplink, one channel (the host) holding both PFs and every VF.

- An adapter error on nic0 while nic1's VFs pass traffic: nic0 recovers (the claim,
  checked for nic0), and nic1 sees nothing: none of its PEs leaves state 0, none of its
  drivers hears of an error, and its traffic's books are exact (every probe echoed once,
  none lost).
- Both adapters fail at once: each recovers on its own, the claim holds for each.

`make test` runs the short form (2 x 8 VFs); the 2 x 64 form (the shipped harness
topology's size) runs when EEH_TWO_ADAPTER_VFS=64 is set, as `make soak` sets its cycles:

    EEH_TWO_ADAPTER_VFS=64 .venv/bin/pytest -q -s tests/harness/test_two_adapters.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from device_model.nic.port import Ledger
from eeh_sriov.topology import parse_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.poll import PollConfig
from guest_drivers.vf import VfDriver
from hypervisor_shim.claim import Step, check_claim, first_failure
from hypervisor_shim.pe import HOST
from hypervisor_shim.pe.names import split
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import holding_backend
from tests.support.waiting import wait_for

ADAPTERS = ("nic0", "nic1")
WAIT_S = 60.0  # a hang catcher
# the full size (VFs per adapter) when asked for: the edge where the environment is read
FULL_VFS = int(os.environ.get("EEH_TWO_ADAPTER_VFS", "0"))
full = pytest.mark.skipif(FULL_VFS <= 0, reason="the 2 x 64 form: EEH_TWO_ADAPTER_VFS=64")


def topology_text(nvfs: int) -> str:
    """The shipped two-adapters-harness.toml with `nvfs` VFs per adapter, a reset hold
    long enough for every VF driver to meet the lockout."""
    adapters = "".join(f'''
[[adapter]]
name = "{name}"
total_vfs = {nvfs}
enabled_vfs = {nvfs}
timing = "fast"
''' for name in ADAPTERS)
    return f'''
[uplink]
kind = "queue"
[pf_driver]
where = "host"
[harness]
vf_drivers = {nvfs}
{adapters}'''


@dataclass
class Rig:
    plat: Platform
    agent: Agent
    traffic: dict[str, UplinkTraffic]  # adapter -> the host's probes to its VFs

    def vfs(self, adapter: str) -> list[VfDriver]:
        return [d for d in self.agent.vf_drivers() if split(d.name)[0] == adapter]

    def recovered(self, adapter: str, since: float) -> bool:
        """Every driver of `adapter` reported `recovered` since `since`."""
        names = {d.name for d in self.vfs(adapter)} | {adapter}
        seen = {e.pe for e in self.plat.timeline.snapshot() if e.t >= since and
                e.source == "driver" and e.kind in ("recovered", "adapter-recovered")}
        return names <= seen

    def traffic_back(self, adapter: str, since: float) -> None:
        """The first echo through each of `adapter`'s VFs after its recovery, as a
        `traffic-back` entry (the claim's step 9)."""
        entries = self.plat.timeline.snapshot()
        for vf in self.vfs(adapter):
            rec = max(e.t for e in entries if e.t >= since and e.source == "driver"
                      and e.kind == "recovered" and e.pe == vf.name)
            t = self.traffic[adapter].wait_echo_after(vf.name, rec, 10)
            assert t is not None, f"no echo from {vf.name} after its recovery"
            self.plat.timeline.record("traffic", "traffic-back", pe=vf.name, t=t)

    def claim(self, adapter: str, since: float) -> list[Step]:
        return check_claim(self.plat.timeline.entries, pf_owner=HOST, adapter_pe=adapter,
                           vfs={vf.name: HOST for vf in self.vfs(adapter)}, since=since)

    def settle(self) -> dict[str, dict[str, dict[str, int]]]:
        """Stop probing, let the last echoes come back; every adapter's books."""
        for t in self.traffic.values():
            t.pause()
        time.sleep(1.0)
        return {a: t.stats(in_flight_s=0.5) for a, t in self.traffic.items()}


@contextmanager
def running(nvfs: int, run_dir: Path) -> Iterator[Rig]:
    topo = parse_topology(topology_text(nvfs), "two-adapters")
    with ExitStack() as stack:
        plat = stack.enter_context(Platform(topo.platform_config(), run_dir))
        vfs = [f for f in topo.functions_of(HOST) if split(f)[1] != "pf"]
        # every VF driver meets the lockout before its adapter driver lifts it
        agent = Agent(holding_backend(plat, vfs), poll=PollConfig(max_sleep_s=0.01))
        stack.callback(agent.stop)
        agent.start(probe_timeout=WAIT_S)
        assert not agent.failed, agent.failed
        traffic = {}
        for a in ADAPTERS:
            targets = {vf.name: Target(vf.mac, vf.vlan) for vf in agent.vf_drivers()
                       if split(vf.name)[0] == a}
            traffic[a] = stack.enter_context(UplinkTraffic(plat, targets, rate_hz=20,
                                                           adapter=a))
        rig = Rig(plat, agent, traffic)
        for a in ADAPTERS:  # baseline: every VF of every adapter echoes
            for vf in rig.vfs(a):
                assert traffic[a].wait_echo_after(vf.name, 0.0, WAIT_S), vf.name
        yield rig


def _claim_holds(rig: Rig, adapter: str, since: float) -> None:
    steps = rig.claim(adapter, since)
    print(f"\n{adapter}:\n" + "\n".join(s.line(steps[0].t or since) for s in steps))
    failed = first_failure(steps)
    assert failed is None, (adapter, failed)


def _ledger(plat: Platform, name: str) -> Ledger:
    return plat.host.function(name).nic.ledger.copy()


def isolation(nvfs: int, run_dir: Path) -> None:
    with running(nvfs, run_dir) as rig:
        t_inject = time.monotonic()
        rig.plat.inject_adapter_error(adapter="nic0")
        assert wait_for(lambda: rig.recovered("nic0", t_inject), WAIT_S), \
            "nic0 did not recover"
        rig.traffic_back("nic0", t_inject)
        time.sleep(0.3)  # nic1's traffic goes on after nic0's recovery too
        books = rig.settle()
        _claim_holds(rig, "nic0", t_inject - 0.001)

        # nic1: untouched. No entry of the platform or of a driver names its PEs after
        # the injection, every driver is up and never recovered, the books are exact.
        nic1 = {"nic1"} | {vf.name for vf in rig.vfs("nic1")}
        touched = [(e.source, e.kind, e.pe) for e in rig.plat.timeline.snapshot()
                   if e.t >= t_inject and e.pe in nic1 and e.source != "traffic"]
        assert touched == [], touched[:10]
        states = rig.plat.pe_states()
        assert all(states[pe]["state"] == 0 and states[pe]["flags"] == [] and
                   states[pe]["freeze_count"] == 0 for pe in nic1), states
        pf1 = rig.agent.drivers["nic1.pf"]
        assert pf1.recovery is None or pf1.recovery.rounds == 0
        for vf in rig.vfs("nic1"):
            c = vf.counters()
            assert c["state"] == "up" and c.get("recovery", {}).get("rounds", 0) == 0, c
            st = books["nic1"][vf.name]
            assert st["lost"] == 0 and st["duplicates"] == 0 and st["in_flight"] == 0, \
                (vf.name, st)
            assert st["sent"] == st["echoed"] == c["echoed"] > 0, (vf.name, st, c)
            model = rig.plat.call(partial(_ledger, rig.plat, vf.name))
            assert model.rx_missed == 0 and model.rx_delivered == c["rx"]["received"]
        assert rig.plat.call(lambda: rig.plat.host.adapters["nic1"].switch.dropped_total) \
            == 0
        # and nic0 did recover under the same traffic: its VFs echo again
        assert all(books["nic0"][vf.name]["echoed"] > 0 for vf in rig.vfs("nic0"))


def both_at_once(nvfs: int, run_dir: Path) -> None:
    with running(nvfs, run_dir) as rig:
        t_inject = time.monotonic()

        def both() -> None:  # one step of the platform's loop: no access in between
            for a in ADAPTERS:
                rig.plat._inject(a, "adapter-fatal", None, 0, 0, "test", None)()
        rig.plat.call(both)
        for a in ADAPTERS:
            assert wait_for(partial(rig.recovered, a, t_inject), WAIT_S), f"{a} did not recover"
        for a in ADAPTERS:
            rig.traffic_back(a, t_inject)
        books = rig.settle()
        for a in ADAPTERS:
            _claim_holds(rig, a, t_inject - 0.001)
            for vf in rig.vfs(a):
                st = books[a][vf.name]
                assert st["duplicates"] == 0 and st["echoed"] > 0, (vf.name, st)
        # each adapter's freeze counted against its own adapter PE only, once
        states = rig.plat.pe_states()
        assert [states[a]["freeze_count"] for a in ADAPTERS] == [1, 1], states


def test_error_on_one_adapter_leaves_the_other_untouched(tmp_path: Path) -> None:
    isolation(8, tmp_path)


def test_both_adapters_fail_at_once_and_each_recovers(tmp_path: Path) -> None:
    both_at_once(8, tmp_path)


@full
def test_isolation_at_full_size(tmp_path: Path) -> None:
    isolation(FULL_VFS, tmp_path)


@full
def test_both_fail_at_full_size(tmp_path: Path) -> None:
    both_at_once(FULL_VFS, tmp_path)


# ---- the measurement behind docs/architecture.md ("Several adapters"): one loop thread
# serving both adapters. `python -m tests.harness.test_two_adapters [VFS] [RUNS]`: for
# `VFS` VFs per adapter, the time from an adapter error to every VF of that adapter
# recovered (drivers' reports), p50 of `RUNS`, with one adapter alone, with a second idle
# adapter on the same loop, and with both failing at once.

def _recovery_ms(nvfs: int, adapters: int, both: bool, runs: int) -> list[float]:
    names = ADAPTERS[:adapters]
    text = topology_text(nvfs).split("[[adapter]]")
    topo = parse_topology("[[adapter]]".join(text[:1 + adapters]), "measure")
    out = []
    with ExitStack() as stack:
        import tempfile
        plat = stack.enter_context(Platform(topo.platform_config(), Path(
            stack.enter_context(tempfile.TemporaryDirectory()))))
        agent = Agent(holding_backend(plat, [f for f in topo.functions_of(HOST)
                                             if split(f)[1] != "pf"]),
                      poll=PollConfig(max_sleep_s=0.01))
        stack.callback(agent.stop)
        agent.start(probe_timeout=WAIT_S)
        rig = Rig(plat, agent, {})
        for _ in range(runs):
            t0 = time.monotonic()
            hit = names if both else names[:1]

            def inject(hit: tuple[str, ...] = hit) -> None:
                for a in hit:
                    plat._inject(a, "adapter-fatal", None, 0, 0, "test", None)()
            plat.call(inject)

            def done_all(hit: tuple[str, ...] = hit, t0: float = t0) -> bool:
                return all(rig.recovered(a, t0) for a in hit)
            assert wait_for(done_all, WAIT_S)
            done = max(e.t for e in plat.timeline.snapshot() if e.t >= t0 and
                       e.source == "driver" and e.kind == "recovered")
            out.append((done - t0) * 1000)
            time.sleep(0.5)
    return sorted(out)


if __name__ == "__main__":
    import statistics
    import sys
    nvfs = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    for label, adapters, both in (("one adapter", 1, False),
                                  ("two adapters, one fails", 2, False),
                                  ("two adapters, both fail", 2, True)):
        ms = _recovery_ms(nvfs, adapters, both, runs)
        print(f"{label:<26} {nvfs} VFs each: error -> every VF recovered p50 "
              f"{statistics.median(ms):7.1f} ms  (runs: {', '.join(f'{m:.0f}' for m in ms)})",
              flush=True)
