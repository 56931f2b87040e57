"""Soak: N inject/recover cycles in harness mode under traffic (the real platform and the
real drivers), with every cycle's books checked and the process's resources measured.

`make test` runs a short soak (EEH_SOAK_CYCLES, default 100); `make soak` the full 1000.
Every 5th cycle is a VF-only error (on each VF in turn), the others adapter errors. After
each cycle: every driver recovered, traffic passes again on every VF, and the books
balance exactly: each VF driver's TX/RX ledger, the model's ledger of every function, the
driver's count of frames sent equal to the model's, no duplicate on the wire, the adapter
PE's freeze count equal to the adapter errors injected, every PE back in state 0 with no
flags.

Resources, measured after a warm-up (the first cycles fill caches) and at the end, each
after a full garbage collection: open fds, threads, asyncio tasks on the model's loop,
objects tracked by the garbage collector, and resident memory (threads: the drivers' idle
watch not counted, it runs while a driver is parked). The bounds: fds, threads
and tasks back exactly to the baseline; tracked objects within 300 + 1 per 2 cycles, plus
4 per error-log entry the PEs gained (each PE keeps its last 256: bounded by design);
RSS within 8 MiB + 4 KiB per cycle. The figures are printed (run with -s) and written
to runs/tests/soak-last.json.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from eeh_abi import traffic as T
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for

CYCLES = int(os.environ.get("EEH_SOAK_CYCLES", "100"))
WARMUP = 3
NVFS = 3
REPORT = Path(__file__).resolve().parents[2] / "runs" / "tests" / "soak-last.json"


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def resources(plat: Platform) -> dict[str, int]:
    gc.collect()
    gc.collect()
    loop = plat.host.loop
    # the drivers' idle watch runs exactly while a driver is parked (guest_drivers.poll):
    # whether one is at the moment of a sample is not a leak
    threads = sum(t.name != "idle-watch" for t in threading.enumerate())
    return {"fds": len(os.listdir("/proc/self/fd")), "threads": threads,
            "tasks": plat.call(lambda: len(asyncio.all_tasks(loop))),
            "gc_objects": len(gc.get_objects()), "rss_kib": rss_kib(),
            "error_log_entries": plat.call(lambda: sum(len(pe.error_log())
                                                       for pe in plat.adapter.pes))}


def forget_traffic(traffic: UplinkTraffic) -> None:
    """The traffic generator's own per-probe records (test side, not the platform's):
    dropped once a cycle has been checked, so they do not count as growth."""
    with traffic._lock:
        for st in traffic.streams.values():
            st.send_times.clear()
            st.echo_times.clear()
            st.seen.clear()
        traffic.frames.clear()


def check_books(plat: Platform, agent: Agent, traffic: UplinkTraffic, adapter_errors: int,
                cycle: int) -> None:
    """With the traffic paused and the drivers' rings drained (quiescent), the books must
    agree exactly."""
    vfs = [d for d in agent.vf_drivers() if isinstance(d, VfDriver)]

    def model_sent(vf: VfDriver) -> int:
        return plat.call(lambda: plat.adapter.function(vf.name).nic.ledger.tx_sent)

    traffic.pause(True)
    try:
        assert wait_for(lambda: all(vf.wait_tx_done(0.2) and vf.counters()["tx"]["sent"]
                                    == model_sent(vf) for vf in vfs), 5), \
            (cycle, [(vf.counters()["tx"], model_sent(vf)) for vf in vfs])
        for vf in vfs:
            assert vf.ledger_balanced(), (cycle, vf.name, vf.counters())
    finally:
        traffic.pause(False)
    assert plat.call(lambda: all(f.nic.balanced for f in plat.adapter.functions())), cycle
    assert plat.policy.adapter_record.freezes.total == adapter_errors, cycle
    st = plat.pe_states()
    assert all(s["state"] == 0 and s["flags"] == [] for s in st.values()), (cycle, st)


def recovered_since(plat: Platform, t: float, names: set[str]) -> bool:
    got = {e.pe for e in plat.timeline.snapshot()
           if e.source == "driver" and e.kind == "recovered" and e.t > t}
    return names <= got


@pytest.mark.timeout(120 + 3 * CYCLES)
def test_soak_inject_recover_cycles_under_traffic(tmp_path: Path) -> None:
    owners = {"pf": HOST, **{f"vf{n}": HOST for n in range(NVFS)}}
    cfg = PlatformConfig(total_vfs=NVFS, enabled_vfs=NVFS, owners=owners,
                         policy=PolicyConfig(max_freezes=1_000_000))
    figures: dict[str, Any] = {"cycles": CYCLES, "warmup": WARMUP}
    with Platform(cfg, tmp_path) as plat:
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))),
                      poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            names = {vf.name for vf in agent.vf_drivers()}
            targets = {vf.name: Target(vf.mac, vf.vlan) for vf in agent.vf_drivers()}
            with UplinkTraffic(plat, targets, rate_hz=100, keep_frames=0) as traffic:
                assert all(traffic.wait_echo_after(n, 0.0, 10) for n in targets)
                adapter_errors = 0
                durations = []
                wire = Counter[str]()
                t_start = time.monotonic()
                for cycle in range(CYCLES):
                    if cycle == WARMUP:
                        figures["baseline"] = resources(plat)
                    if cycle > WARMUP and cycle % 100 == 0:
                        gc.collect()
                        figures.setdefault("rss_kib_every_100", []).append(rss_kib())
                    t = time.monotonic()
                    if cycle % 5 == 4:
                        vf = (cycle // 5) % NVFS
                        plat.inject_vf_error(vf, f"soak cycle {cycle}")
                        want = {f"vf{vf}"}
                    else:
                        plat.inject_adapter_error(f"soak cycle {cycle}")
                        adapter_errors += 1
                        want = {"adapter", *names}
                    assert wait_for(lambda t=t, want=want:  # type: ignore[misc]
                                    recovered_since(plat, t, want), 30), \
                        (cycle, [(e.source, e.kind, e.pe) for e in plat.timeline.snapshot()
                                 if e.t > t][-40:])
                    for name in targets:
                        assert traffic.wait_echo_after(name, t, 10) is not None, (cycle, name)
                    durations.append(time.monotonic() - t)
                    check_books(plat, agent, traffic, adapter_errors, cycle)
                    stats = traffic.stats()
                    assert all(s["duplicates"] == 0 for s in stats.values()), (cycle, stats)
                    for f in plat.call(plat.host.uplink.take):
                        p = T.parse(f)
                        if p is not None and p.kind == T.ECHO:
                            wire[f"{p.target}:{p.seq}"] += 1
                    assert all(n == 1 for n in wire.values()), "a frame twice on the wire"
                    wire.clear()
                    plat.timeline.clear()  # checked: the run's record stays on disk only
                    forget_traffic(traffic)
                figures["end"] = resources(plat)
                figures["wall_s"] = round(time.monotonic() - t_start, 1)
                figures["cycle_ms"] = {
                    "median": round(sorted(durations)[len(durations) // 2] * 1000, 1),
                    "max": round(max(durations) * 1000, 1)}
        finally:
            agent.stop()
    base, end = figures.get("baseline"), figures["end"]
    if base is None:  # fewer cycles than the warm-up: nothing to compare
        return
    n = CYCLES - WARMUP
    growth = {k: end[k] - base[k] for k in base}
    figures["growth"] = growth
    # the PEs' error logs fill up to 256 entries each (their bound, by design): up to 4
    # tracked objects an entry are theirs, not a leak
    logs = 4 * growth["error_log_entries"]
    figures["bounds"] = {"fds": 0, "threads": 0, "tasks": 0,
                         "gc_objects": 300 + n // 2 + logs, "rss_kib": 8192 + 4 * n}
    print("\nsoak:", json.dumps(figures, indent=1))
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(figures, indent=1) + "\n")
    for key, bound in figures["bounds"].items():  # error_log_entries: no bound of its own
        assert growth[key] <= bound, (key, growth[key], bound, figures)
