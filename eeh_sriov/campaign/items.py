"""pytest plugin: a fault campaign's scenarios as pytest items (one per scenario).

    pytest -p eeh_sriov.campaign.items --eeh-campaign exhaustive -n auto
    pytest -p eeh_sriov.campaign.items --eeh-campaign my.campaign.json --shard 2/4

Loaded with `-p eeh_sriov.campaign.items` in the tree, or through its entry point
(`pytest11: eeh_sriov_campaign`) when the package is installed. Without
`--eeh-campaign` it does nothing. With it, the session runs the campaign and nothing
else (the test directories are not collected): one item per scenario of the shard, named
by the scenario id (`campaign/<name>::<id>`, so `-k`, `--deselect`, `-n` (pytest-xdist)
and `--junitxml` work as for any test). An item runs its scenario with the campaign's
runner (`eeh_sriov.campaign.run.run_scenario`), writes its results line, and fails when
the verdict is not pass, with the violations (oracle, rule, PE, time, detail), the
artifacts directory and the replay command as the failure text.

The run's directory (`--eeh-campaign-out`, default `runs/campaign/<name>` or
`runs/campaign/<name>-shard-<i>-of-<n>`): every process appends its lines to a part file
of its own (`results.<worker>.part.jsonl`); when the session ends the controlling process
(the only one under xdist) gathers the parts into `results.jsonl` (sorted by id), writes
`campaign.json` (the manifest: campaign, id digest, its (event, fault) pairs, shard,
workers, wall time) and the reports, `report.md` and `report.html`. Sharding follows
`merge.shard_ids` (sorted ids, round robin); the shards' directories are merged with
`python -m eeh_sriov campaign merge`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.merge import shard_ids
from eeh_sriov.campaign.model import Scenario
from eeh_sriov.campaign.report import headline, replay_command, summarize
from eeh_sriov.campaign.report_data import (
    MANIFEST_NAME,
    RESULTS_NAME,
    Manifest,
    ids_digest,
    parse_shard,
    read_manifest,
    read_results,
    scenario_cell,
    write_manifest,
    write_results,
)
from eeh_sriov.campaign.report_html import write_reports

PART_GLOB = "results.*.part.jsonl"
REPORTS = ("report.md", "report.html")


@dataclass(frozen=True)
class Plan:
    """What this session runs: its shard of the campaign, and where the results go."""

    name: str
    scenarios: tuple[Scenario, ...]  # this shard's, by id
    all_ids: tuple[str, ...]  # the whole campaign's
    pairs: tuple[tuple[str, str], ...]  # every (event, fault) pair of the whole campaign
    shard: str | None
    out: Path
    mode: str

    def manifest(self, workers: int, wall_s: float) -> Manifest:
        return Manifest(campaign=self.name, digest=ids_digest(self.all_ids),
                        scenarios=len(self.all_ids), pairs=self.pairs, shard=self.shard,
                        ids=tuple(s.id for s in self.scenarios), workers=workers,
                        wall_s=round(wall_s, 3), mode=self.mode)


_plan = pytest.StashKey[Plan]()
_started = pytest.StashKey[float]()


GENERATED = ("exhaustive", "matrix")


def generated(spec: str) -> list[Scenario]:
    """NAME[:TOPOLOGY[:TIMING]]: exhaustive (every sensible fault at every trigger point
    of the shipped reference timeline) or matrix (docs/reliability.md's fault matrix; of
    a topology of several adapters, its adapters' matrix: matrix:two-adapters-harness);
    default topology `default`, timing `fast`."""
    from eeh_sriov.campaign import generate
    name, _, rest = spec.partition(":")
    topology, _, timing = rest.partition(":")
    if name not in GENERATED or ":" in timing:
        raise CampaignError(f"no campaign {spec!r}: NAME[:TOPOLOGY[:TIMING]] with NAME one "
                            f"of {', '.join(GENERATED)}, or a *.campaign.json file")
    return generate.campaign(topology or "default", timing or "fast",
                             exhaustive_mode=name == "exhaustive")


def load_campaign(spec: str) -> tuple[str, list[Scenario]]:
    """The campaign named by `--eeh-campaign`: a `*.campaign.json` file (a list of
    scenarios, or {"name", "scenarios"}), or a generated campaign by name."""
    if not spec.endswith(".json"):
        return spec.replace(":", "-"), generated(spec)
    path = Path(spec)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CampaignError(f"cannot read {path}: {e}") from None
    name = path.name.removesuffix(".json").removesuffix(".campaign")
    if isinstance(obj, dict) and set(obj) <= {"name", "scenarios"} and "scenarios" in obj:
        name, obj = str(obj.get("name", name)), obj["scenarios"]
    if not isinstance(obj, list) or not obj:
        raise CampaignError(f"{path}: not a campaign (a non-empty list of scenarios, or "
                            '{"name": ..., "scenarios": [...]})')
    scenarios = [Scenario.from_json(x) for x in obj]
    dup = {s.id for s in scenarios if scenarios.count(s) > 1}
    if dup:
        raise CampaignError(f"{path}: scenario(s) given twice: {', '.join(sorted(dup))}")
    return name, scenarios


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("eeh-campaign", "fault campaigns (eeh_sriov.campaign)")
    g.addoption("--eeh-campaign", default=None, metavar="NAME|FILE",
                help="run a fault campaign's scenarios as the session's items: a generated "
                     "campaign NAME[:TOPOLOGY[:TIMING]] (exhaustive, matrix; e.g. "
                     "matrix:two-adapters-harness) or a *.campaign.json file")
    g.addoption("--shard", default=None, metavar="I/N",
                help="run shard I of N (1-based) of the campaign: the scenario ids sorted, "
                     "every Nth from the Ith")
    g.addoption("--eeh-campaign-out", default=None, type=Path, metavar="DIR",
                help="the run's directory (default runs/campaign/<name>[-shard-I-of-N])")


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _runs(config: pytest.Config) -> Plan | None:
    """The plan, if this process runs the campaign and gathers its results: not an xdist
    worker, and not a session that only collects."""
    if _is_worker(config) or config.getoption("collectonly"):
        return None
    return config.stash.get(_plan, None)


def _worker(config: pytest.Config) -> str:
    workerinput: dict[str, Any] = getattr(config, "workerinput", {})
    return str(workerinput.get("workerid", "main"))


def pytest_configure(config: pytest.Config) -> None:
    spec = config.getoption("eeh_campaign")
    shard_text = config.getoption("shard")
    if spec is None:
        if shard_text is not None:
            raise pytest.UsageError("--shard needs --eeh-campaign")
        return
    try:
        shard = parse_shard(shard_text, "--shard") if shard_text is not None else None
        name, scenarios = load_campaign(spec)
        mine = scenarios
        if shard is not None:
            keep = set(shard_ids([s.id for s in scenarios], *shard))
            mine = [s for s in scenarios if s.id in keep]
        pairs = tuple(sorted({scenario_cell(s) for s in scenarios}))
    except CampaignError as e:
        raise pytest.UsageError(f"--eeh-campaign {spec}: {e}") from None
    suffix = f"-shard-{shard[0]}-of-{shard[1]}" if shard else ""
    out = config.getoption("eeh_campaign_out") or \
        config.rootpath / "runs" / "campaign" / f"{name}{suffix}"
    modes = sorted({s.mode for s in scenarios})
    config.stash[_plan] = Plan(name, tuple(sorted(mine, key=lambda s: s.id)),
                               tuple(sorted(s.id for s in scenarios)), pairs,
                               f"{shard[0]}/{shard[1]}" if shard else None,
                               Path(out).resolve(), "+".join(modes) or "harness")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A campaign session collects its scenarios only, no test files."""
    return True if _plan in config.stash else None


class CampaignCollector(pytest.Collector):
    """The campaign: its items are made in `pytest_collection_modifyitems`."""

    def collect(self) -> Iterator[pytest.Item]:  # pragma: no cover (never collected)
        return iter(())


class ScenarioFailed(Exception):
    """A scenario's verdict was not pass; carries its results line."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__(result["verdict"])
        self.result = result


def failure_text(result: dict[str, Any], results: Path) -> str:
    scenario = Scenario.from_json(result["scenario"])
    event, fault = scenario_cell(scenario)
    lines = [f"scenario {result['id']} {result['verdict'].upper()}: {fault} at {event} "
             f"({scenario.label()}, seed {scenario.seed})"]
    for v in result["violations"]:
        where = ", ".join(x for x in (v.get("pe"), None if v.get("t") is None
                                      else f"t={v['t'] * 1000:.1f} ms") if x)
        lines.append(f"  {v['oracle']}/{v['rule']}" + (f" ({where})" if where else "")
                     + f": {v['detail']}")
    artifacts = Path(result["artifacts"])
    error = artifacts / "error.txt"
    if result["verdict"] == "error" and error.is_file():
        tail = error.read_text().strip().splitlines()[-3:]
        lines.append("  the run itself failed: " + " / ".join(x.strip() for x in tail))
    lines.append(f"artifacts: {artifacts} (events.jsonl, trace.jsonl, timeline.md)")
    lines.append(f"replay: {replay_command(result['id'], str(results))}")
    return "\n".join(lines)


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, plan: Plan, **kw: Any) -> None:
        super().__init__(**kw)
        self.scenario = scenario
        self.plan = plan

    def runtest(self) -> None:
        from eeh_sriov.campaign.run import append_result, run_scenario
        worker = _worker(self.config)
        result = run_scenario(self.scenario, self.plan.out, worker=worker,
                              shard=self.plan.shard)
        append_result(self.plan.out / f"results.{worker}.part.jsonl", result)
        self.user_properties.append(("verdict", result["verdict"]))
        self.eeh_run_dirs = [result["artifacts"]]  # named in the report (tests/conftest.py)
        if result["verdict"] != "pass":
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: Any = None) -> str | Any:
        if isinstance(excinfo.value, ScenarioFailed):
            return failure_text(excinfo.value.result, self.plan.out / RESULTS_NAME)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        event, fault = scenario_cell(self.scenario)
        return self.plan.out, None, f"{self.scenario.id}: {fault} at {event}"


@pytest.hookimpl(tryfirst=True)  # before -k / --deselect / xdist look at the items
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config,
                                  items: list[pytest.Item]) -> None:
    plan = config.stash.get(_plan, None)
    if plan is None:
        return
    parent = CampaignCollector.from_parent(session, name=f"campaign/{plan.name}",
                                           nodeid=f"campaign/{plan.name}", path=plan.out)
    items[:] = [ScenarioItem.from_parent(parent, name=s.id, scenario=s, plan=plan)
                for s in plan.scenarios]


def _clear(out: Path) -> None:
    """Last run's results and reports (and its scenarios' artifacts when `out` was a
    campaign run's directory) go: this run's must not mix with them."""
    if (out / MANIFEST_NAME).is_file():
        shutil.rmtree(out / "scenarios", ignore_errors=True)
    for p in [*out.glob(PART_GLOB), out / RESULTS_NAME, out / MANIFEST_NAME,
              *(out / r for r in REPORTS)]:
        p.unlink(missing_ok=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    plan = _runs(session.config)
    if plan is None:
        return
    plan.out.mkdir(parents=True, exist_ok=True)
    _clear(plan.out)
    session.config.stash[_started] = time.monotonic()


def gather(plan: Plan, wall_s: float) -> list[str]:
    """The parts into results.jsonl, the manifest, the reports; the headline."""
    results = [r for part in sorted(plan.out.glob(PART_GLOB)) for r in read_results(part)]
    write_results(plan.out / RESULTS_NAME, results)
    for part in plan.out.glob(PART_GLOB):
        part.unlink()
    manifest = plan.manifest(max(len({r.worker for r in results}), 1), wall_s)
    write_manifest(plan.out, manifest)
    summary = summarize(read_results(plan.out / RESULTS_NAME), [read_manifest(plan.out)
                                                                 or manifest])
    write_reports(plan.out, summary)
    return headline(summary)


_lines = pytest.StashKey[Sequence[str]]()


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    plan = _runs(config)
    if plan is None or _started not in config.stash:
        return
    try:
        lines = gather(plan, time.monotonic() - config.stash[_started])
    except CampaignError as e:
        lines = [f"the results could not be gathered: {e}"]
        session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
    config.stash[_lines] = [*lines, f"results: {plan.out / RESULTS_NAME}; reports: "
                            f"{plan.out / 'report.md'}, {plan.out / 'report.html'}"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash.get(_lines, None)
    if lines:
        terminalreporter.section("fault campaign")
        for line in lines:
            terminalreporter.write_line(line)
