"""`campaign merge`: shards' results into one, refusing what is not disjoint parts of
one campaign with an error naming the directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from eeh_sriov.campaign.merge import MergeRefused, merge, shard_ids
from eeh_sriov.campaign.report_data import read_manifest, read_results
from tests.support.campaign_results import line, scenario, violation, write_run

REPO = Path(__file__).resolve().parents[3]
CAMPAIGN = [scenario("pe-frozen", "vf-error", seed=i) for i in range(5)] + [
    scenario("reset-hot", "vf-error", pe="adapter", seed=i) for i in range(4)]
IDS = [s.id for s in CAMPAIGN]
BY_ID = {s.id: s for s in CAMPAIGN}


def _shard(root: Path, i: int, n: int, *, campaign: list = CAMPAIGN,  # type: ignore[type-arg]
           ids: list[str] | None = None, name: str = "test") -> Path:
    mine = ids if ids is not None else shard_ids([s.id for s in campaign], i, n)
    lines = [line(BY_ID[x], "fail" if x == IDS[0] else "pass",
                  violations=[violation()] if x == IDS[0] else [], shard=f"{i}/{n}",
                  worker=f"gw{k % 2}") for k, x in enumerate(mine)]
    return write_run(root / f"shard-{i}-of-{n}-{name}", lines, campaign=name,
                     all_scenarios=campaign, shard=f"{i}/{n}", wall_s=4.0 + i)


def test_two_shards_merge_into_the_whole_campaign(tmp_path: Path) -> None:
    a, b = _shard(tmp_path, 1, 2), _shard(tmp_path, 2, 2)
    out = tmp_path / "all"
    summary = merge([a, b], out)
    merged = read_results(out / "results.jsonl")
    assert [r.id for r in merged] == sorted(IDS)
    assert summary.counts == {"pass": 8, "fail": 1}
    assert (summary.pairs_judged, summary.pairs_possible) == (2, 2)
    assert summary.missing_shards == ()
    manifest = read_manifest(out)
    assert manifest is not None and manifest.shard is None and sorted(manifest.ids) == \
        sorted(IDS)
    text = (out / "report.md").read_text()
    assert "throughput (shard 1/2): 5 scenarios in 5.0 s" in text
    assert "throughput (shard 2/2): 4 scenarios in 6.0 s" in text
    assert IDS[0] in (out / "report.html").read_text()
    # every line as its shard wrote it
    lines = {json.loads(x)["id"]: json.loads(x) for x in
             (a / "results.jsonl").read_text().splitlines()}
    for x in (out / "results.jsonl").read_text().splitlines():
        obj = json.loads(x)
        if obj["id"] in lines:
            assert obj == lines[obj["id"]]


def test_a_missing_shard_is_named_and_its_pairs_not_covered(tmp_path: Path) -> None:
    summary = merge([_shard(tmp_path, 1, 3), _shard(tmp_path, 3, 3)], tmp_path / "out")
    assert summary.missing_shards == ("2/3",)
    assert "missing shards (not merged): 2/3" in (tmp_path / "out" / "report.md").read_text()


def test_refused_the_same_shard_twice(tmp_path: Path) -> None:
    a = _shard(tmp_path, 1, 2)
    b = _shard(tmp_path / "again", 1, 2)
    with pytest.raises(MergeRefused, match=rf"overlap: {a} and {b} are both shard 1/2"):
        merge([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refused_a_scenario_in_two_shards(tmp_path: Path) -> None:
    a = _shard(tmp_path, 1, 2)
    b = _shard(tmp_path, 2, 2, ids=[*shard_ids(IDS, 2, 2), shard_ids(IDS, 1, 2)[0]])
    with pytest.raises(MergeRefused, match=r"overlap: scenario s-\w+ has results in both"):
        merge([a, b], tmp_path / "out")


def test_refused_mismatched_campaigns_and_shard_counts(tmp_path: Path) -> None:
    other = CAMPAIGN[:-1]  # one scenario fewer: another campaign
    a = _shard(tmp_path, 1, 2)
    b = _shard(tmp_path, 2, 2, campaign=other, name="test")
    with pytest.raises(MergeRefused, match=r"mismatched campaigns: .* \(9 scenarios, ids "
                                           r"digest \w+\), .* \(8 scenarios"):
        merge([a, b], tmp_path / "out")
    c = _shard(tmp_path, 2, 3)
    with pytest.raises(MergeRefused, match=r"mismatched shard counts: .* shard 1/2, .* "
                                           r"shard 2/3"):
        merge([a, c], tmp_path / "out")


def test_refused_a_result_outside_its_shard_and_a_bare_directory(tmp_path: Path) -> None:
    a = _shard(tmp_path, 1, 2)
    manifest = json.loads((a / "campaign.json").read_text())
    manifest["ids"] = manifest["ids"][1:]
    (a / "campaign.json").write_text(json.dumps(manifest))
    with pytest.raises(MergeRefused, match=r"is not one of its shard 1/2"):
        merge([a], tmp_path / "out")
    (tmp_path / "bare").mkdir()
    with pytest.raises(MergeRefused, match=r"bare: not a campaign run directory"):
        merge([tmp_path / "bare"], tmp_path / "out")


def test_merge_command_line_refusal_is_one_error_line(tmp_path: Path) -> None:
    a = _shard(tmp_path, 1, 2)
    b = _shard(tmp_path / "again", 1, 2)
    p = subprocess.run([sys.executable, "-m", "eeh_sriov", "campaign", "merge", str(a), str(b),
                        "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip().splitlines() == [f"error: overlap: {a} and {b} are both shard 1/2"]
    ok = subprocess.run([sys.executable, "-m", "eeh_sriov", "campaign", "merge", str(a),
                         str(_shard(tmp_path, 2, 2)), "--out", str(tmp_path / "out")],
                        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "merge: coverage: 2 / 2 (event, fault) pairs judged (100.0%)" in ok.stdout


def test_report_of_a_run_without_manifest_counts_its_own_pairs(tmp_path: Path) -> None:
    """`campaign report DIR` on what `campaign run` writes (results.jsonl alone)."""
    d = _shard(tmp_path, 1, 1)
    (d / "campaign.json").unlink()
    (d / "report.md").unlink(missing_ok=True)
    p = subprocess.run([sys.executable, "-m", "eeh_sriov", "campaign", "report", str(d)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "report: coverage: 2 / 2 (event, fault) pairs judged (100.0%)" in p.stdout
    assert f"campaign {d.name} (no manifest): 9 scenarios, 8 passed, 1 failed" in \
        (d / "report.md").read_text()
    (d / "results.jsonl").write_text("{}\n")
    p = subprocess.run([sys.executable, "-m", "eeh_sriov", "campaign", "report", str(d)],
                       cwd=REPO, capture_output=True, text=True, timeout=60)
    assert p.returncode == 1
    assert p.stderr.strip() == f"error: {d / 'results.jsonl'}:1: missing member 'version'"
