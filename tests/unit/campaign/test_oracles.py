"""The oracles on real recorded runs (tests/unit/campaign/observations: a clean adapter
error and a VF-only error, recorded by the harness runner, calls left out): each passes
as recorded and each rule fails on the same run with one fact made bad."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from eeh_sriov.campaign.faults import Applied
from eeh_sriov.campaign.observe import Observation, VfTraffic
from eeh_sriov.campaign.oracles import check
from hypervisor_shim.timeline import Entry

HERE = Path(__file__).parent / "observations"


def recorded(name: str) -> Observation:
    return Observation.from_json(json.loads((HERE / f"{name}.observation.json").read_text()))


def rules(obs: Observation) -> set[str]:
    return {f"{v.oracle}/{v.rule}" for v in check(obs)}


def with_(obs: Observation, **changes: Any) -> Observation:
    return dataclasses.replace(obs, **changes)


@pytest.mark.parametrize("name", ["adapter", "vf1"])
def test_recorded_runs_pass(name: str) -> None:
    obs = recorded(name)
    assert check(obs) == []
    again = Observation.from_json(json.loads(json.dumps(obs.to_json())))
    assert again == obs


def _first(obs: Observation, source: str, kind: str, pe: str) -> int:
    return next(i for i, e in enumerate(obs.entries)
                if (e.source, e.kind, e.pe) == (source, kind, pe))


def test_safety_a_vf_thawed_before_allow_unfreeze() -> None:
    obs = recorded("adapter")
    i = _first(obs, "policy", "lockout-start", "adapter")
    early = Entry(obs.entries[i].t, "policy", "pe-thawed", "vf1")
    bad = with_(obs, entries=(*obs.entries[:i + 1], early, *obs.entries[i + 1:]))
    assert rules(bad) == {"safety/thaw-before-allow-unfreeze"}
    # the lockout lifted one event early (at the adapter's pe-reset-done) is caught too
    j = _first(obs, "policy", "pe-reset-done", "adapter")
    lifted = Entry(obs.entries[j].t, "policy", "lockout-lifted", "vf0")
    bad = with_(obs, entries=(*obs.entries[:j + 1], lifted, *obs.entries[j + 1:]))
    assert "safety/thaw-before-allow-unfreeze" in rules(bad)


def test_safety_dma_or_interrupt_from_a_frozen_pe() -> None:
    obs = recorded("adapter")
    books = list(obs.books)
    k = next(i for i, s in enumerate(books) if s.kind == "lockout-start")
    s = books[k]
    sent, delivered, irqs = s.counters["vf0"]
    books[k] = dataclasses.replace(s, counters={**s.counters, "vf0": (sent, delivered + 1,
                                                                    irqs)})
    assert rules(with_(obs, books=tuple(books))) == {"safety/dma-while-frozen"}


def test_safety_duplicates_loss_and_books() -> None:
    obs = recorded("adapter")
    tr = obs.traffic["vf0"]
    dup = {**obs.traffic, "vf0": dataclasses.replace(tr, duplicates=1)}
    assert rules(with_(obs, traffic=dup)) == {"safety/duplicate-frame"}
    # a probe lost a second before the error: vf0 was up
    lost = {**obs.traffic, "vf0": dataclasses.replace(tr, lost=((1, obs.t0 - 1.0),))}
    assert rules(with_(obs, traffic=lost)) == {"safety/loss-outside-recovery"}
    # lost while frozen: allowed
    ok = {**obs.traffic, "vf0": dataclasses.replace(tr, lost=((1, obs.t0 + 0.001),))}
    assert rules(with_(obs, traffic=ok)) == set()
    assert rules(with_(obs, model_books={**obs.model_books, "vf1": False})) == {
        "safety/books-unbalanced"}


def test_a_probe_in_flight_when_its_vf_fell_is_lost_by_the_fall() -> None:
    """Seen in `make campaign-adapters` at load 24: a probe sent 267 ms before its VF's
    freeze was still in the ring (its driver slow to harvest) and the reset dropped it.
    Every later probe up to one sent while down being lost shows nothing got through
    after it; one echoed in between (a gap in the lost sequence numbers), or a probe
    lost long before the fall, is a loss while up."""
    obs = recorded("adapter")
    tf = min(e.t for e in obs.entries if e.pe == "vf0" and e.source == "policy"
             and e.kind == "pe-frozen")
    tr = obs.traffic["vf0"]

    def lost(*probes: tuple[int, float]) -> set[str]:
        return rules(with_(obs, traffic={**obs.traffic,
                                         "vf0": dataclasses.replace(tr, lost=probes)}))

    assert lost((5, tf - 0.3), (6, tf + 0.01)) == set()
    assert lost((5, tf - 0.3), (7, tf + 0.01)) == {"safety/loss-outside-recovery"}
    assert lost((5, tf - 1.5), (6, tf + 0.01)) == {"safety/loss-outside-recovery"}


def test_liveness() -> None:
    obs = recorded("adapter")
    assert rules(with_(obs, unsettled=("vf0: state 2",))) == {"liveness/settle-bound"}
    assert rules(with_(obs, pe_end={**obs.pe_end, "vf0": (2, ("isolated",))})) == {
        "liveness/end-state"}
    assert rules(with_(obs, pe_end={**obs.pe_end, "vf2": (5, ("permanent",))})) == {
        "liveness/unexpected-permanent-failure"}
    assert rules(with_(obs, drivers_end={**obs.drivers_end, "vf1": "failed"})) == {
        "liveness/driver-not-idle"}
    quiet = {**obs.traffic, "vf2": dataclasses.replace(obs.traffic["vf2"], last_echo=obs.t0)}
    assert rules(with_(obs, traffic=quiet)) == {"liveness/traffic-not-back"}
    # the model killed: every PE permanent is what the policy documents
    killed = Applied(obs.t0, "model-killed", "adapter", "model-killed", True)
    dead = with_(obs, faults=(killed,), pe_end={p: (5, ("permanent",)) for p in obs.pe_end},
                 drivers_end={d: "failed" for d in obs.drivers_end}, traffic={})
    assert rules(dead) == set()
    assert "liveness/expected-permanent-failure" in rules(with_(dead, pe_end=obs.pe_end))


def test_isolation_outside_a_vf_only_fault() -> None:
    obs = recorded("vf1")
    i = len(obs.entries)
    frozen = Entry(obs.t0 + 0.001, "policy", "pe-frozen", "vf0")
    assert rules(with_(obs, entries=(*obs.entries[:i], frozen))) >= {
        "isolation/pe-disturbed"}
    step = Entry(obs.t0 + 0.001, "driver", "error-detected", "vf2", "g2")
    assert rules(with_(obs, entries=(*obs.entries, step))) == {"isolation/driver-disturbed"}
    tr = obs.traffic["vf0"]
    lost = {**obs.traffic, "vf0": VfTraffic(((3, obs.t0 - 1),), 0, tr.sent, tr.last_echo)}
    assert "isolation/traffic-disturbed" in rules(with_(obs, traffic=lost))


def test_resources() -> None:
    obs = recorded("adapter")
    fds = {"fds": {"before": 10, "after": 11, "extra": ["socket:[1]"]},
           "threads": {"before": 3, "after": 3, "extra": []}}
    assert rules(with_(obs, resources=fds)) == {"resources/fds"}
    threads = {**fds, "fds": {"before": 10, "after": 10},
               "threads": {"before": 3, "after": 4, "extra": ["drv-vf0"]}}
    assert rules(with_(obs, resources=threads)) == {"resources/threads"}
