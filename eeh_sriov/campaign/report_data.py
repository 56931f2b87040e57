"""What the reports and the merge read: `results.jsonl` lines and a run's `campaign.json`.

A results line (one per scenario, written by the runner, `eeh_sriov.campaign.run`):

    {"id", "scenario", "verdict": "pass"|"fail"|"error", "violations": [{"oracle", "rule",
     "detail", "t", "pe"}], "duration_s", "artifacts", "pe_states": [{"t", "pe", "state",
     "flags"}], "trigger_fired", "worker", "shard": "i/n"|null, "version": 1,
     "notes": [{"rule", "detail", "t", "pe"}]}

`notes` (what a run showed that is intended, not a violation: a receiver's ring overrun)
may be absent: lines written before it was added read with none. Reading is strict: a
line that is not JSON, lacks a member, has one of the wrong type or one not in the contract
is refused with the file, the line number and what is wrong (`ResultsError`), never a
traceback. `campaign.json` is the run's manifest, written by the
pytest plugin (`eeh_sriov.campaign.items`): which campaign (its name and the digest of
all its scenario ids), which shard of it, every (event, fault) pair the campaign holds
(so coverage has a denominator), how many workers and how long the run took.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.model import Scenario, ScenarioError

RESULTS_VERSION = 1
MANIFEST_VERSION = 1
RESULTS_NAME = "results.jsonl"
MANIFEST_NAME = "campaign.json"
VERDICTS = ("fail", "error", "pass")  # the order reports list them in
ORACLES = ("safety", "liveness", "isolation", "resources")
# The grid's row for a scenario without follow-ups: its first fault, at the start.
AT_START = "(start)"


class ResultsError(CampaignError):
    """A results file or manifest that does not follow the contract."""


@dataclass(frozen=True)
class Violation:
    oracle: str
    rule: str
    detail: str
    t: float | None  # seconds since the first fault
    pe: str | None


@dataclass(frozen=True)
class Note:
    rule: str
    detail: str
    t: float | None  # seconds since the first fault
    pe: str | None


@dataclass(frozen=True)
class PeSample:
    """A PE entered `state` (a PAPR code: 0, 1, 2, 4, 5) with `flags` at `t` s (before
    the first fault, t < 0)."""

    t: float
    pe: str
    state: int
    flags: tuple[str, ...]


@dataclass(frozen=True)
class Result:
    id: str
    scenario: Scenario
    verdict: str
    violations: tuple[Violation, ...]
    duration_s: float
    artifacts: str
    pe_states: tuple[PeSample, ...]
    trigger_fired: bool
    worker: str
    shard: str | None
    line: Mapping[str, Any]  # the line as read, written back unchanged by the merge
    notes: tuple[Note, ...] = ()  # none in lines written before notes existed

    @property
    def cell(self) -> tuple[str, str]:
        """The (event, fault) pair this scenario stands for in the grid."""
        return scenario_cell(self.scenario)


@dataclass(frozen=True)
class Manifest:
    campaign: str
    digest: str  # of every scenario id of the campaign, all shards together
    scenarios: int  # how many the whole campaign has
    pairs: tuple[tuple[str, str], ...]  # every (event, fault) pair of the whole campaign
    shard: str | None  # "i/n", or None for an unsharded run
    ids: tuple[str, ...]  # the scenario ids of this shard (all of them when unsharded)
    workers: int
    wall_s: float
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {"version": MANIFEST_VERSION, "campaign": self.campaign, "digest": self.digest,
                "scenarios": self.scenarios, "pairs": [list(p) for p in self.pairs],
                "shard": self.shard, "ids": list(self.ids), "workers": self.workers,
                "wall_s": self.wall_s, "mode": self.mode}


def ids_digest(ids: Iterable[str]) -> str:
    """A campaign's identity: sha256 over its sorted scenario ids (16 hex digits)."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()[:16]


# ---- the grid's labels --------------------------------------------------------------------
def scenario_cell(scenario: Scenario) -> tuple[str, str]:
    """The grid cell of a scenario: its first follow-up's (trigger, fault) labels, or
    (AT_START, first fault) when it has none. Later follow-ups do not change the cell."""
    if scenario.follow_ups:
        trigger, fault = scenario.follow_ups[0]
        return trigger.label(), fault.label()
    return AT_START, scenario.first.label()


# ---- strict reading -----------------------------------------------------------------------
class _Fields:
    """Typed access to one JSON object; every fault names where it was read."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise ResultsError(f"{where}: not a JSON object")
        self.obj: dict[str, Any] = obj
        self.where = where

    def only(self, names: Iterable[str]) -> None:
        extra = sorted(set(self.obj) - set(names))
        if extra:
            raise ResultsError(f"{self.where}: unknown member(s) {', '.join(extra)}")

    def get(self, name: str, types: type | tuple[type, ...], *, null: bool = False) -> Any:
        if name not in self.obj:
            raise ResultsError(f"{self.where}: missing member {name!r}")
        value = self.obj[name]
        if value is None and null:
            return None
        allowed = types if isinstance(types, tuple) else (types,)
        # JSON true/false are Python ints too: a bool is only accepted where asked for
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            raise ResultsError(f"{self.where}: {name} = {value!r} has the wrong type")
        return value

    def number(self, name: str, *, null: bool = False) -> float | None:
        value = self.get(name, (int, float), null=null)
        if value is None:
            return None
        if not math.isfinite(value) or value < 0:
            raise ResultsError(f"{self.where}: {name} = {value!r} is not a time >= 0")
        return float(value)


def _violation(obj: Any, where: str) -> Violation:
    f = _Fields(obj, where)
    f.only(("oracle", "rule", "detail", "t", "pe"))
    oracle = f.get("oracle", str)
    if oracle not in ORACLES:
        raise ResultsError(f"{where}: oracle {oracle!r} is not one of {', '.join(ORACLES)}")
    return Violation(oracle, f.get("rule", str), f.get("detail", str),
                     f.number("t", null=True), f.get("pe", str, null=True))


def _note(obj: Any, where: str) -> Note:
    f = _Fields(obj, where)
    f.only(("rule", "detail", "t", "pe"))
    return Note(f.get("rule", str), f.get("detail", str), f.number("t", null=True),
                f.get("pe", str, null=True))


def _sample(obj: Any, where: str) -> PeSample:
    f = _Fields(obj, where)
    f.only(("t", "pe", "state", "flags"))
    t = f.get("t", (int, float))
    if not math.isfinite(t):
        raise ResultsError(f"{where}: t = {t!r} is not a time")
    flags = f.get("flags", list)
    if not all(isinstance(x, str) for x in flags):
        raise ResultsError(f"{where}: flags {flags!r} are not strings")
    return PeSample(float(t), f.get("pe", str), f.get("state", int), tuple(flags))


def parse_result(obj: Any, where: str) -> Result:
    f = _Fields(obj, where)
    f.only(("id", "scenario", "verdict", "violations", "duration_s", "artifacts", "pe_states",
            "trigger_fired", "worker", "shard", "version", "notes"))
    version = f.get("version", int)
    if version != RESULTS_VERSION:
        raise ResultsError(f"{where}: results version {version}, this reader knows "
                           f"{RESULTS_VERSION}")
    verdict = f.get("verdict", str)
    if verdict not in VERDICTS:
        raise ResultsError(f"{where}: verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    ident = f.get("id", str)
    try:
        scenario = Scenario.from_json(f.get("scenario", dict))
    except ScenarioError as e:
        raise ResultsError(f"{where}: {e}") from None
    if scenario.id != ident:
        raise ResultsError(f"{where}: id {ident!r} but the scenario is {scenario.id!r}")
    duration = f.number("duration_s")
    assert duration is not None
    shard = f.get("shard", str, null=True)
    if shard is not None:
        parse_shard(shard, where)
    return Result(
        id=ident, scenario=scenario, verdict=verdict,
        violations=tuple(_violation(v, f"{where}: violation {i}")
                         for i, v in enumerate(f.get("violations", list))),
        duration_s=duration, artifacts=f.get("artifacts", str),
        pe_states=tuple(_sample(s, f"{where}: pe_states[{i}]")
                        for i, s in enumerate(f.get("pe_states", list))),
        trigger_fired=f.get("trigger_fired", bool), worker=f.get("worker", str), shard=shard,
        line=obj, notes=tuple(_note(n, f"{where}: note {i}") for i, n in enumerate(
            f.get("notes", list) if "notes" in f.obj else ())))


def parse_results(text: str, where: str) -> list[Result]:
    results: list[Result] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise ResultsError(f"{where}:{n}: not JSON ({e})") from None
        r = parse_result(obj, f"{where}:{n}")
        if r.id in seen:
            raise ResultsError(f"{where}:{n}: scenario {r.id} already has a result "
                               f"(line {seen[r.id]})")
        seen[r.id] = n
        results.append(r)
    return results


def read_results(path: Path) -> list[Result]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    return parse_results(text, str(path))


def parse_shard(text: str, where: str = "") -> tuple[int, int]:
    """ "i/n" -> (i, n), 1 <= i <= n."""
    i_text, sep, n_text = text.partition("/")
    try:
        i, n = int(i_text), int(n_text)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise ResultsError(f"{where + ': ' if where else ''}shard {text!r} is not i/n with "
                           "1 <= i <= n (e.g. 1/2)")
    return i, n


def parse_manifest(obj: Any, where: str) -> Manifest:
    f = _Fields(obj, where)
    f.only(("version", "campaign", "digest", "scenarios", "pairs", "shard", "ids", "workers",
            "wall_s", "mode"))
    if f.get("version", int) != MANIFEST_VERSION:
        raise ResultsError(f"{where}: manifest version {obj['version']}, this reader knows "
                           f"{MANIFEST_VERSION}")
    pairs = f.get("pairs", list)
    if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
               for p in pairs):
        raise ResultsError(f"{where}: pairs are not [event, fault] lists of strings")
    ids = f.get("ids", list)
    if not all(isinstance(x, str) for x in ids):
        raise ResultsError(f"{where}: ids are not strings")
    shard = f.get("shard", str, null=True)
    if shard is not None:
        parse_shard(shard, where)
    wall = f.number("wall_s")
    assert wall is not None
    return Manifest(campaign=f.get("campaign", str), digest=f.get("digest", str),
                    scenarios=f.get("scenarios", int),
                    pairs=tuple((p[0], p[1]) for p in pairs), shard=shard, ids=tuple(ids),
                    workers=f.get("workers", int), wall_s=wall, mode=f.get("mode", str))


def read_manifest(directory: Path) -> Manifest | None:
    """The run's manifest, or None if the directory has none (a bare results file)."""
    path = directory / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ResultsError(f"cannot read {path}: {e}") from None
    return parse_manifest(obj, str(path))


def write_manifest(directory: Path, manifest: Manifest) -> None:
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest.to_json(), indent=1) + "\n")


def write_results(path: Path, results: Iterable[Result]) -> None:
    """One line per result, sorted by id, each as it was read."""
    lines = [json.dumps(r.line, sort_keys=True) for r in sorted(results, key=lambda r: r.id)]
    path.write_text("".join(line + "\n" for line in lines))
