"""The campaign's reports from results lines: strict reading, the event x fault grid,
coverage, violations first, report.md and a self-contained report.html."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from eeh_sriov.campaign.report import Cell, build_grid, markdown, summarize
from eeh_sriov.campaign.report_data import (
    AT_START,
    ResultsError,
    parse_results,
    read_manifest,
    read_results,
)
from eeh_sriov.campaign.report_html import CELL_COLOURS, html, write_reports
from tests.support.campaign_results import line, scenario, violation, write_run


def _results(*lines: dict[str, object]) -> list:  # type: ignore[type-arg]
    return parse_results("".join(json.dumps(x) + "\n" for x in lines), "results.jsonl")


def test_grid_cells_are_the_worst_verdict_of_their_scenarios() -> None:
    a = scenario("pe-frozen", "vf-error", seed=1)
    a2 = scenario("pe-frozen", "vf-error", seed=2)  # same pair, another seed
    b = scenario("reset-hot", "vf-error", pe="adapter", target="vf1")
    c = scenario("pe-frozen", "reset-fails", target="same")
    d = scenario("lockout-lifted", "vf-error", pe="vf0")
    results = _results(line(a), line(a2, "fail", violations=[violation()]),
                       line(b, "error"), line(c), line(d, fired=False))
    grid = build_grid(results)
    assert grid.cell(*results[0].cell) is Cell.FAIL  # one pass, one fail: FAIL
    assert grid.cell(*results[2].cell) is Cell.ERROR
    assert grid.cell(*results[3].cell) is Cell.PASS
    assert grid.cell(*results[4].cell) is Cell.NOT_FIRED
    assert results[0].cell == ("policy/pe-frozen@vf0", "vf-error:other")
    assert len(grid.results[results[0].cell]) == 2
    # rows and columns: every event and fault once, the cells of pairs never run blank
    assert set(grid.events) == {"policy/pe-frozen@vf0", "policy/reset-hot@adapter",
                                "policy/lockout-lifted@vf0"}
    assert grid.cell("policy/reset-hot@adapter", "reset-fails:same,times=1") is Cell.NONE


def test_scenario_without_follow_ups_is_its_first_fault_at_the_start() -> None:
    from eeh_sriov.campaign.model import Fault, Scenario
    s = Scenario.build(first=Fault("vf-error", "vf1"))
    assert _results(line(s))[0].cell == (AT_START, "vf-error:vf1")
    grid = build_grid(_results(line(s), line(scenario())))
    assert grid.events[0] == AT_START


def test_coverage_counts_judged_pairs_of_the_whole_campaign(tmp_path: Path) -> None:
    run = [scenario("pe-frozen", "vf-error", seed=i) for i in range(2)]
    never = scenario("reset-hot", "vf-error", pe="adapter")  # in the campaign, not run
    not_fired = scenario("lockout-lifted", "vf-error")
    broke = scenario("pe-thawed", "vf-error")
    d = write_run(tmp_path / "r", [line(run[0]), line(run[1], "fail", violations=[violation()]),
                                   line(not_fired, fired=False), line(broke, "error")],
                  all_scenarios=[*run, never, not_fired, broke])
    s = summarize(read_results(d / "results.jsonl"), [m for m in [read_manifest(d)] if m])
    assert (s.pairs_judged, s.pairs_possible) == (1, 4)
    assert s.grid.cell("policy/reset-hot@adapter", "vf-error:other") is Cell.NOT_RUN
    assert s.counts == {"pass": 2, "fail": 1, "error": 1}
    assert s.not_fired == 1
    assert s.rules == {"safety/thaw-before-allow-unfreeze": 1}
    text = markdown(s)
    assert "| safety/thaw-before-allow-unfreeze | 1 |" in text
    assert "coverage: 1 / 4 (event, fault) pairs judged (25.0%)" in text
    assert "throughput (run): 4 scenarios in 10.0 s on 2 worker(s) = 0.40 scenarios/s" in text


def test_violations_come_first_in_both_reports(tmp_path: Path) -> None:
    ok = [scenario("pe-frozen", "vf-error", seed=i) for i in range(3)]
    bad = scenario("allow-unfreeze", "vf-error", pe="adapter")
    v = violation("liveness", "pe-not-healthy-in-bound", t=None, pe="vf1")
    d = write_run(tmp_path / "r", [line(ok[0]), line(bad, "fail", violations=[v]),
                                   line(ok[1]), line(ok[2])])
    s = summarize(read_results(d / "results.jsonl"), [m for m in [read_manifest(d)] if m])
    assert next(r.id for r in s.results) == bad.id
    md, page = write_reports(d, s)
    text = md.read_text()
    assert text.index(bad.id) < text.index("## Grid") < text.index(ok[0].id)
    assert "| liveness | pe-not-healthy-in-bound |  | vf1 |" in text
    assert f"python -m eeh_sriov campaign replay {bad.id} --results {d / 'results.jsonl'}" \
        in text
    body = page.read_text()
    assert body.index(f'id="s-{bad.id}"') < body.index('class="grid"')


def test_html_is_self_contained_and_its_grid_has_the_cell_colours() -> None:
    bad = scenario("allow-unfreeze", "vf-error", pe="adapter")
    s = summarize(_results(line(scenario()), line(bad, "fail", violations=[violation()])))
    page = html(s)
    # nothing to fetch: no scripts, no links, no URLs other than the SVG namespace
    assert "<script" not in page and "<link" not in page and "@import" not in page
    urls = set(re.findall(r"(?:https?:)?//[^\s\"')<]+", page))
    assert urls <= {"http://www.w3.org/2000/svg"}
    # the grid parses as XML; the failing cell is red and links to its violation
    grid = page[page.index('<table class="grid">'):]
    grid = grid[:grid.index("</table>") + len("</table>")]
    tds = ET.fromstring(grid).iter("td")
    classes = {td.get("class"): td for td in tds}
    assert set(classes) >= {"fail", "pass"}
    link = classes["fail"].find("a")
    assert link is not None and link.get("href") == f"#s-{bad.id}"
    assert f"td.fail {{ background: {CELL_COLOURS[Cell.FAIL]}; }}" in page


@pytest.mark.parametrize("mutate, message", [
    (lambda x: x.update(verdict="maybe"), "verdict 'maybe' is not one of"),
    (lambda x: x.pop("trigger_fired"), "missing member 'trigger_fired'"),
    (lambda x: x.update(extra=1), "unknown member(s) extra"),
    (lambda x: x.update(duration_s="1"), "duration_s = '1' has the wrong type"),
    (lambda x: x.update(trigger_fired=1), "trigger_fired = 1 has the wrong type"),
    (lambda x: x.update(id="s-000000000000"), "id 's-000000000000' but the scenario is"),
    (lambda x: x["violations"].append({"oracle": "luck", "rule": "r", "detail": "",
                                       "t": None, "pe": None}), "oracle 'luck'"),
    (lambda x: x["scenario"].update(colour="red"), "unknown key(s) ['colour']"),
    (lambda x: x.update(shard="3/2"), "shard '3/2' is not i/n"),
    (lambda x: x.update(version=2), "results version 2"),
])
def test_a_bad_line_is_refused_naming_file_line_and_fault(mutate, message) -> None:  # type: ignore[no-untyped-def]
    bad = line(scenario())
    mutate(bad)
    text = json.dumps(line(scenario(seed=9))) + "\n" + json.dumps(bad) + "\n"
    with pytest.raises(ResultsError, match=re.escape(message)) as e:
        parse_results(text, "r/results.jsonl")
    assert str(e.value).startswith("r/results.jsonl:2: ")


def test_not_json_and_duplicates_are_refused() -> None:
    with pytest.raises(ResultsError, match=r"x:1: not JSON"):
        parse_results("{nope\n", "x")
    same = json.dumps(line(scenario()))
    with pytest.raises(ResultsError, match=r"x:2: scenario s-\w+ already has a result"):
        parse_results(same + "\n" + same + "\n", "x")
