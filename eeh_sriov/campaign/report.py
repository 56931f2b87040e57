"""A campaign's results summed up: counts, coverage, throughput, the event x fault grid,
and `report.md`. (`report_html.py` draws the same `Summary` as a page.)

Coverage is a number: pairs judged / pairs possible. The possible pairs are the
campaign's own, every (event, fault) pair its scenarios hold (from `campaign.json`; a
bare results file has none, and then only the pairs it ran count as possible). A pair is
judged when one of its scenarios got a pass or fail verdict with its trigger fired (a
scenario without follow-ups has no trigger: its first fault always comes); a scenario
whose trigger never came (its follow-up fault was never injected) or that ended in an
error (the run itself broke) covers nothing, and the report counts those apart.

A grid cell is the worst of its scenarios: fail, then error, then pass, then
not-fired; a possible pair without a result is "not run".
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eeh_sriov.campaign.report_data import AT_START, VERDICTS, Manifest, Result


class Cell(enum.StrEnum):
    FAIL = "fail"
    ERROR = "error"
    PASS = "pass"
    NOT_FIRED = "not-fired"  # every scenario of the pair passed, but no trigger fired
    NOT_RUN = "not-run"  # a possible pair without a result
    NONE = "none"  # not a pair of this campaign


CELL_TEXT = {Cell.FAIL: "FAIL", Cell.ERROR: "ERR", Cell.PASS: "ok", Cell.NOT_FIRED: "n/f",
             Cell.NOT_RUN: "-", Cell.NONE: ""}


@dataclass(frozen=True)
class Grid:
    events: tuple[str, ...]  # rows: AT_START first, then by name
    faults: tuple[str, ...]  # columns, by name
    cells: Mapping[tuple[str, str], Cell]
    results: Mapping[tuple[str, str], tuple[Result, ...]]

    def cell(self, event: str, fault: str) -> Cell:
        return self.cells.get((event, fault), Cell.NONE)


def fired(r: Result) -> bool:
    """Whether the scenario's faults were all given a chance: its first follow-up's
    trigger fired (a scenario without follow-ups has only its first fault, always)."""
    return r.trigger_fired or not r.scenario.follow_ups


def cell_of(results: Sequence[Result]) -> Cell:
    verdicts = {r.verdict for r in results}
    if "fail" in verdicts:
        return Cell.FAIL
    if "error" in verdicts:
        return Cell.ERROR
    if any(fired(r) for r in results):
        return Cell.PASS
    return Cell.NOT_FIRED if results else Cell.NOT_RUN


def build_grid(results: Sequence[Result],
               possible: Sequence[tuple[str, str]] | None = None) -> Grid:
    by_pair: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        by_pair.setdefault(r.cell, []).append(r)
    pairs = set(by_pair) | set(possible or ())
    events = sorted({e for e, _ in pairs}, key=lambda e: (e != AT_START, e))
    faults = sorted({f for _, f in pairs})
    cells = {p: cell_of(by_pair.get(p, [])) for p in pairs}
    return Grid(tuple(events), tuple(faults), cells,
                {p: tuple(sorted(rs, key=lambda r: r.id)) for p, rs in by_pair.items()})


@dataclass(frozen=True)
class RunPart:
    """One run that produced results (a shard, or the whole campaign)."""

    shard: str | None
    scenarios: int
    workers: int
    wall_s: float

    @property
    def per_s(self) -> float:
        return self.scenarios / self.wall_s if self.wall_s > 0 else 0.0


@dataclass(frozen=True)
class Summary:
    campaign: str
    results: tuple[Result, ...]  # violations first: fail, error, pass; then by id
    grid: Grid
    counts: Mapping[str, int]  # per verdict
    not_fired: int  # results whose trigger never fired
    pairs_possible: int
    pairs_judged: int
    runs: tuple[RunPart, ...]
    missing_shards: tuple[str, ...]
    rules: Mapping[str, int]  # "oracle/rule" -> how many scenarios violated it, most first

    @property
    def coverage(self) -> float:
        return self.pairs_judged / self.pairs_possible if self.pairs_possible else 0.0

    @property
    def failures(self) -> tuple[Result, ...]:
        return tuple(r for r in self.results if r.verdict != "pass")


def summarize(results: Sequence[Result], manifests: Sequence[Manifest] = (),
              *, missing_shards: Sequence[str] = (), name: str = "(no manifest)") -> Summary:
    """`name`: the campaign's, when no manifest says it."""
    possible: list[tuple[str, str]] | None = None
    if manifests:
        possible = sorted({p for m in manifests for p in m.pairs})
    grid = build_grid(results, possible)
    judged = {r.cell for r in results if r.verdict != "error" and fired(r)}
    rank = {v: i for i, v in enumerate(VERDICTS)}
    ordered = tuple(sorted(results, key=lambda r: (rank[r.verdict], r.id)))
    runs = tuple(RunPart(m.shard, len(m.ids), m.workers, m.wall_s)
                 for m in sorted(manifests, key=lambda m: m.shard or ""))
    names = sorted({m.campaign for m in manifests})
    return Summary(
        campaign=", ".join(names) or name, results=ordered, grid=grid,
        counts=Counter(r.verdict for r in results),
        not_fired=sum(not fired(r) for r in results),
        pairs_possible=len(grid.cells), pairs_judged=len(judged), runs=runs,
        missing_shards=tuple(missing_shards),
        rules=dict(Counter(f"{v.oracle}/{v.rule}" for r in results
                           for v in {(v.oracle, v.rule): v for v in r.violations}.values()
                           ).most_common()))


# ---- report.md ----------------------------------------------------------------------------
def headline(s: Summary) -> list[str]:
    """The lines both reports open with (plain text)."""
    c = s.counts
    lines = [f"campaign {s.campaign}: {len(s.results)} scenarios, {c.get('pass', 0)} passed, "
             f"{c.get('fail', 0)} failed, {c.get('error', 0)} errors; "
             f"trigger never fired in {s.not_fired}",
             f"coverage: {s.pairs_judged} / {s.pairs_possible} (event, fault) pairs judged "
             f"({s.coverage:.1%})"]
    for run in s.runs:
        name = f"shard {run.shard}" if run.shard else "run"
        lines.append(f"throughput ({name}): {run.scenarios} scenarios in {run.wall_s:.1f} s "
                     f"on {run.workers} worker(s) = {run.per_s:.2f} scenarios/s")
    if len(s.runs) > 1:
        total = sum(r.scenarios for r in s.runs)
        wall = sum(r.wall_s for r in s.runs)
        lines.append(f"throughput (all shards, one after another): {total} scenarios in "
                     f"{wall:.1f} s = {total / wall if wall else 0.0:.2f} scenarios/s; "
                     f"side by side: {max(r.wall_s for r in s.runs):.1f} s")
    busy = sum(r.duration_s for r in s.results)
    lines.append(f"scenario time: {busy:.1f} s summed over scenarios")
    if s.missing_shards:
        lines.append(f"missing shards (not merged): {', '.join(s.missing_shards)}")
    return lines


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def replay_command(scenario_id: str, results: str) -> str:
    return f"python -m eeh_sriov campaign replay {scenario_id} --results {results}"


def markdown(s: Summary, results: str = "results.jsonl") -> str:
    """The report; `results`: the results file replay commands name."""
    out = [f"# Fault campaign report: {_md_cell(s.campaign)}", ""]
    out += [f"- {line}" for line in headline(s)]
    out += ["", "## Violations", ""]
    if not s.failures:
        out.append("None.")
    if s.rules:
        out += ["| oracle/rule | scenarios |", "|---|---|"]
        out += [f"| {rule} | {n} |" for rule, n in s.rules.items()]
        out.append("")
    for r in s.failures:
        event, fault = r.cell
        out.append(f"### {r.verdict.upper()} {r.id}: {_md_cell(fault)} at {_md_cell(event)}")
        out.append("")
        out.append(f"artifacts: `{r.artifacts}` (events.jsonl, trace.jsonl, timeline.md); "
                   f"replay: `{replay_command(r.id, results)}`")
        out.append("")
        if r.violations:
            out += ["| oracle | rule | t (ms) | PE | detail |", "|---|---|---|---|---|"]
            for v in r.violations:
                t = "" if v.t is None else f"{v.t * 1000:.1f}"
                out.append(f"| {v.oracle} | {_md_cell(v.rule)} | {t} | {v.pe or ''} | "
                           f"{_md_cell(v.detail)} |")
        else:
            out.append("(no violation recorded: the run itself failed; see its artifacts)")
        out.append("")
    g = s.grid
    out += ["## Grid: event (rows) x fault (columns)", "",
            "FAIL: a violation; ERR: the run broke; ok: passed; n/f: passed but the trigger "
            "never fired; -: not run; blank: not a pair of this campaign.", ""]
    out.append("| event | " + " | ".join(_md_cell(f) for f in g.faults) + " |")
    out.append("|---|" + "---|" * len(g.faults))
    for e in g.events:
        row = [CELL_TEXT[g.cell(e, f)] for f in g.faults]
        out.append(f"| {_md_cell(e)} | " + " | ".join(row) + " |")
    out += ["", "## Scenarios", "", "| id | verdict | event | fault | fired | s | worker |",
            "|---|---|---|---|---|---|---|"]
    for r in s.results:
        event, fault = r.cell
        out.append(f"| {r.id} | {r.verdict} | {_md_cell(event)} | {_md_cell(fault)} | "
                   f"{'yes' if fired(r) else 'no'} | {r.duration_s:.2f} | "
                   f"{_md_cell(r.worker)} |")
    return "\n".join(out) + "\n"
