"""Drivers ready (hypervisor_shim.readiness), on hand-built timelines."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from hypervisor_shim.readiness import (
    DriversNotReady,
    pe_of,
    readiness,
    wait_drivers_ready,
    wait_drivers_ready_async,
)
from hypervisor_shim.timeline import Entry, Timeline

WANTED = {"adapter", "vf0", "vf1"}


def probe(t: float, pe: str, owner: str = "g1") -> Entry:
    return Entry(t, "driver", "probe", pe, owner, {"driver": "eeh-vf"})


TIMELINE = [
    Entry(0.5, "shim", "guests-starting"),
    probe(1.0, "adapter", "svc"),
    Entry(1.5, "driver", "probe-failed", "vf1", "g2"),  # not a probe
    Entry(1.6, "call", "probe", "vf1", "g2"),  # a "probe" not reported by a driver
    Entry(1.7, "policy", "probe", "vf1"),
    probe(2.0, "vf0"),
    probe(2.5, "vf7", "g3"),  # a driver nobody waits for
]


def test_not_ready_until_every_wanted_driver_probed() -> None:
    r = readiness(TIMELINE, WANTED)
    assert not r.ready and r.missing == ["vf1"] and r.at is None
    assert sorted(r.probes) == ["adapter", "vf0", "vf7"]
    r = readiness([*TIMELINE, probe(3.5, "vf1", "g2")], WANTED)
    assert r.ready and r.missing == [] and r.at == 3.5
    assert r.probes["vf1"].owner == "g2"


def test_a_second_probe_does_not_move_readiness() -> None:
    """A driver removed and added back probes again: ready from its first probe on."""
    r = readiness([*TIMELINE, probe(3.0, "vf1"), probe(9.0, "vf0")], WANTED)
    assert r.at == 3.0 and r.probes["vf0"].t == 2.0


def test_nothing_wanted_is_ready_at_once() -> None:
    r = readiness([], set())
    assert r.ready and r.at is None


def test_pe_of_and_the_topologys_guest_pes() -> None:
    assert pe_of("pf") == "adapter" and pe_of("vf3") == "vf3"
    assert load_topology(DEFAULT_TOPOLOGY).guest_pes == {"adapter", "vf0", "vf1", "vf2"}


def feed(tl: Timeline, entries: list[Entry], delay: float) -> threading.Thread:
    def run() -> None:
        for e in entries:
            threading.Event().wait(delay)
            tl.record(e.source, e.kind, pe=e.pe, owner=e.owner, data=e.data)
    th = threading.Thread(target=run)
    th.start()
    return th


def test_wait_returns_once_the_last_driver_probed() -> None:
    tl = Timeline()
    th = feed(tl, [probe(0, "adapter"), probe(0, "vf0"), probe(0, "vf1")], 0.02)
    r = wait_drivers_ready(tl, WANTED, 5, interval=0.005)
    th.join()
    assert r.ready and r.at == tl.snapshot()[-1].t


def test_wait_times_out_naming_the_missing() -> None:
    tl = Timeline()
    tl.record("driver", "probe", pe="adapter")
    with pytest.raises(DriversNotReady) as info:
        wait_drivers_ready(tl, WANTED, 0.05, interval=0.01)
    assert info.value.missing == ["vf0", "vf1"]
    assert str(info.value) == "drivers not ready (not after 0.05 s); missing: vf0, vf1"


def test_wait_stops_when_the_check_says_why() -> None:
    tl = Timeline()
    with pytest.raises(DriversNotReady, match=r"\(guest g2 stopped\); missing: adapter"):
        wait_drivers_ready(tl, WANTED, 60, check=lambda: "guest g2 stopped")


def test_async_wait() -> None:
    tl = Timeline()
    th = feed(tl, [probe(0, "adapter"), probe(0, "vf1"), probe(0, "vf0")], 0.02)
    r = asyncio.run(wait_drivers_ready_async(tl, WANTED, 5, interval=0.005))
    th.join()
    assert r.ready and r.probes["vf0"] is tl.snapshot()[-1]
    with pytest.raises(DriversNotReady):
        asyncio.run(wait_drivers_ready_async(Timeline(), {"vf9"}, 0.02, interval=0.005))
