"""What a scenario's run leaves for the oracles: one `Observation`, a plain value.

It is written next to the other artifacts (`observation.json`) and read back the same way,
so the oracles can be checked on a recorded run, or on a recorded run with one fact
changed (tests/unit/campaign/test_oracles.py).

    obs = Observation.from_json(json.loads((artifacts / "observation.json").read_text()))
    violations = check(obs)                       # eeh_sriov.campaign.oracles
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eeh_sriov.campaign.faults import Applied
from eeh_sriov.campaign.model import Scenario
from eeh_sriov.campaign.rig import Sample
from hypervisor_shim.timeline import Entry


@dataclass(frozen=True)
class VfTraffic:
    """The uplink's probes to one VF: those never echoed (sequence number, host time
    sent), echoes seen twice, the last echo's time."""

    lost: tuple[tuple[int, float], ...]
    duplicates: int
    sent: int
    last_echo: float | None


@dataclass(frozen=True)
class Observation:
    scenario: Scenario
    t0: float  # host time of the first fault
    entries: tuple[Entry, ...]  # the whole timeline
    faults: tuple[Applied, ...]
    books: tuple[Sample, ...]
    traffic: Mapping[str, VfTraffic]  # VF name -> its probes (empty: no traffic)
    pe_end: Mapping[str, tuple[int, tuple[str, ...]]]  # PE -> (state, flags) at the end
    drivers_end: Mapping[str, str]  # driver -> "up", "failed", "up, recovery running", ...
    unsettled: tuple[str, ...]  # what still moved when the bound ran out
    bound_s: float
    model_books: Mapping[str, bool]  # function -> its ledger balanced (empty: model dead)
    max_reset_failures: int
    resources: Mapping[str, Any] = field(default_factory=dict)  # see run.Resources
    # (host time, function -> RX drops for want of a free descriptor) read after the
    # traffic stopped: with the books' samples, when each VF's receiver overran its ring
    # (None: the model was dead, or recorded before it was read)
    no_desc_end: tuple[float, Mapping[str, int]] | None = None

    def no_desc(self, fn: str) -> list[tuple[float, int]]:
        """`fn`'s no-descriptor drop count over time: (host time, count so far) at each
        sample of the books and at the end; empty when none was recorded."""
        out = [(s.t, s.no_desc[fn]) for s in self.books if fn in s.no_desc]
        if self.no_desc_end is not None and fn in self.no_desc_end[1]:
            out.append((self.no_desc_end[0], self.no_desc_end[1][fn]))
        return out

    def rel(self, t: float | None) -> float | None:
        return None if t is None else round(t - self.t0, 6)

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario.to_json(), "t0": self.t0,
            "entries": [e.to_json() for e in self.entries],
            "faults": [dict(f.__dict__) for f in self.faults],
            "books": [{"index": s.index, "t": s.t, "kind": s.kind, "pe": s.pe,
                       "counters": {k: list(v) for k, v in s.counters.items()},
                       "states": {k: [v[0], list(v[1])] for k, v in s.states.items()},
                       "no_desc": dict(s.no_desc)}
                      for s in self.books],
            "traffic": {n: {"lost": [list(x) for x in v.lost], "duplicates": v.duplicates,
                            "sent": v.sent, "last_echo": v.last_echo}
                        for n, v in self.traffic.items()},
            "pe_end": {k: [v[0], list(v[1])] for k, v in self.pe_end.items()},
            "drivers_end": dict(self.drivers_end), "unsettled": list(self.unsettled),
            "bound_s": self.bound_s, "model_books": dict(self.model_books),
            "max_reset_failures": self.max_reset_failures,
            "resources": dict(self.resources),
            "no_desc_end": None if self.no_desc_end is None else {
                "t": self.no_desc_end[0], "counts": dict(self.no_desc_end[1])}}

    @classmethod
    def from_json(cls, o: dict[str, Any]) -> Observation:
        return cls(
            Scenario.from_json(o["scenario"]), float(o["t0"]),
            tuple(Entry.from_json(e) for e in o["entries"]),
            tuple(Applied(**f) for f in o["faults"]),
            tuple(Sample(s["index"], s["t"], s["kind"], s["pe"],
                         {k: (v[0], v[1], v[2]) for k, v in s["counters"].items()},
                         {k: (v[0], tuple(v[1])) for k, v in s["states"].items()},
                         {k: int(v) for k, v in s.get("no_desc", {}).items()})
                  for s in o["books"]),
            {n: VfTraffic(tuple((a, b) for a, b in v["lost"]), v["duplicates"], v["sent"],
                          v["last_echo"]) for n, v in o["traffic"].items()},
            {k: (v[0], tuple(v[1])) for k, v in o["pe_end"].items()},
            dict(o["drivers_end"]), tuple(o["unsettled"]), float(o["bound_s"]),
            dict(o["model_books"]), int(o["max_reset_failures"]), dict(o["resources"]),
            _no_desc_end(o.get("no_desc_end")))


def _no_desc_end(o: Any) -> tuple[float, dict[str, int]] | None:
    if o is None:  # the model was dead, or recorded before the count existed
        return None
    return float(o["t"]), {k: int(v) for k, v in o["counts"].items()}
