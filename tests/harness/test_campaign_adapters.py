"""A fault campaign on a topology of two adapters (two-adapters-harness.toml's form with
2 x 4 VFs, harness mode), run for real through the pytest plugin's topology option
(`--eeh-campaign=matrix:TOPOLOGY`): faults on nic0 or nic1 at events of either, each
judged by the isolation oracle (an adapter no fault reaches shows nothing: no decision
of the platform on its PEs, no recovery step of its drivers, no probe of its lost).
Then the oracle is fed the passing run of an error on nic0 with something planted on
nic1 (its PE frozen, its driver recovering, its probes lost): it fails, naming nic1.

Before, a campaign refused a topology of several adapters; and the isolation oracle
stopped at an adapter-wide fault (every PE in its scope), so nothing of nic1 was judged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.campaign.generate import campaign
from eeh_sriov.campaign.model import Scenario
from eeh_sriov.campaign.observe import Observation, VfTraffic
from eeh_sriov.campaign.oracles import Violation, check
from eeh_sriov.campaign.report_data import read_manifest, read_results
from hypervisor_shim.timeline import Entry
from tests.harness.test_campaign_pytest import pytest_run

VFS = 4
ADAPTER = """
[[adapter]]
name = "{name}"
total_vfs = {vfs}
enabled_vfs = {vfs}
"""
TOPOLOGY = """
[uplink]
kind = "queue"
[pf_driver]
where = "host"
""" + "".join(ADAPTER.format(name=n, vfs=VFS) for n in ("nic0", "nic1"))
NIC0 = "adapter-fatal:nic0"
LABELS = (NIC0,
          "adapter-fatal:nic0 ; adapter-fatal:nic1 at policy/reset-hot@nic0",
          "reset-fails:nic1,times=3",
          "adapter-fatal:nic0 ; vf-driver-crash:nic1.vf0 at driver/slot-reset@nic0.vf0")


@dataclass(frozen=True)
class Ran:
    out: Path
    name: str
    scenarios: dict[str, Scenario]  # the whole campaign's, by label

    def observation(self, label: str) -> Observation:
        return Observation.from_json(json.loads(
            (self.out / "scenarios" / self.scenarios[label].id / "observation.json")
            .read_text()))


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    d = tmp_path_factory.mktemp("adapters")
    topology = d / "two-adapters.toml"
    topology.write_text(TOPOLOGY)
    scenarios = {s.label(): s for s in campaign(str(topology), "fast",
                                                exhaustive_mode=False)}
    out = d / "out"
    p = pytest_run(f"--eeh-campaign=matrix:{topology}", f"--eeh-campaign-out={out}",
                   "-k", " or ".join(scenarios[label].id for label in LABELS))
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    return Ran(out, f"matrix-{topology}".replace(":", "-"), scenarios)


def test_a_campaign_runs_on_two_adapters_and_isolation_holds(ran: Ran) -> None:
    results = {r.id: r for r in read_results(ran.out / "results.jsonl")}
    assert {ran.scenarios[label].id for label in LABELS} == set(results)
    assert all(r.verdict == "pass" for r in results.values()), results
    manifest = read_manifest(ran.out)
    assert manifest is not None and manifest.campaign == ran.name
    assert manifest.scenarios == len(ran.scenarios)
    for label in LABELS[1:2] + LABELS[3:]:  # the follow-ups came at nic0's events
        assert results[ran.scenarios[label].id].trigger_fired, label
    # nic1 failed permanently under its own faults; nic0 was never touched
    obs = ran.observation(LABELS[2])
    assert "permanent" in obs.pe_end["nic1"][1] and obs.pe_end["nic0"] == (0, ())
    assert not [e for e in obs.entries if e.t >= obs.t0 and e.pe is not None and
                e.pe.startswith("nic0") and e.source in (Source.POLICY, Source.DRIVER)]


def _isolation(obs: Observation) -> list[Violation]:
    return [v for v in check(obs) if v.oracle == "isolation"]


def test_the_isolation_oracle_fails_when_nic1_shows_nic0s_error(ran: Ran) -> None:
    obs = ran.observation(NIC0)
    assert check(obs) == []
    nic1 = sorted(pe for pe in obs.pe_end if pe.startswith("nic1."))
    assert len(nic1) == VFS and obs.traffic[nic1[3]].sent > 0
    t = obs.t0 + 0.05

    def planted(*entries: Entry, **changes: object) -> Observation:
        return dataclasses.replace(obs, entries=tuple(sorted(
            (*obs.entries, *entries), key=lambda e: e.t)), **changes)  # type: ignore[arg-type]

    # nic1's VF PE frozen by nic0's error
    frozen = _isolation(planted(Entry(t, Source.POLICY, Kind.PE_FROZEN, pe="nic1.vf2",
                                      data={"side_effect": True})))
    assert [(v.rule, v.pe) for v in frozen] == [("adapter-crossed", "nic1.vf2")]
    assert "no fault of this scenario reaches adapter nic1" in frozen[0].detail
    # nic1's adapter driver enters recovery
    driver = planted(Entry(t, Source.DRIVER, Kind.ERROR_DETECTED, pe="nic1", owner="host"))
    assert [(v.rule, v.pe) for v in _isolation(driver)] == [("adapter-crossed", "nic1")]
    # probes to a VF of nic1 lost
    tr = dict(obs.traffic)
    old = tr[nic1[3]]
    tr[nic1[3]] = VfTraffic(((1, t),), old.duplicates, old.sent, old.last_echo)
    lost = planted(traffic=tr)
    assert [(v.rule, v.pe) for v in _isolation(lost)] == [("adapter-crossed", nic1[3])]
    # the same on nic0, whose error it is: no isolation violation
    own = planted(Entry(t, Source.DRIVER, Kind.ERROR_DETECTED, pe="nic0.vf2", owner="host"))
    assert _isolation(own) == []
