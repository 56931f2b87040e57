"""A fault campaign as pytest items (eeh_sriov.campaign.items), run for real: pytest in a
subprocess with the plugin, the campaign's runner on the real platform and drivers in
harness mode, pytest-xdist workers, JUnit XML, shards and their merge."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from eeh_sriov.campaign.generate import matrix
from eeh_sriov.campaign.merge import merge, shard_ids
from eeh_sriov.campaign.model import Fault, Scenario
from eeh_sriov.campaign.report_data import read_manifest, read_results

REPO = Path(__file__).resolve().parents[2]
# Three quick scenarios of the fault matrix (an adapter error; a VF error), harness mode.
HARNESS = matrix()[:3]
# VM mode is not run by the harness runner: its verdict is "error", a failing item.
VM = Scenario.build(Fault("adapter-fatal"), mode="vm", seed=5)


def _campaign(tmp_path: Path, scenarios: list[Scenario], name: str = "t") -> Path:
    path = tmp_path / f"{name}.campaign.json"
    path.write_text(json.dumps({"name": name, "scenarios": [s.to_json() for s in scenarios]}))
    return path


def pytest_run(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """pytest with the campaign plugin, in the repository. --noconftest: the suite's own
    conftest (its /tmp leak check sees other sessions' runs on a shared machine) is not
    what is tested here; the plugin is."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "eeh_sriov.campaign.items", "--noconftest",
         "-p", "no:cacheprovider", *map(str, args)],
        cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _junit(path: Path) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in ET.parse(path).iter("testcase")}


def test_scenarios_run_as_items_on_two_workers(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, [*HARNESS, VM])
    out, xml = tmp_path / "out", tmp_path / "junit.xml"
    p = pytest_run(f"--eeh-campaign={campaign}", f"--eeh-campaign-out={out}", "-n", "2",
                   f"--junitxml={xml}")
    assert p.returncode == 1, p.stdout[-3000:] + p.stderr[-3000:]  # the VM one fails
    cases = _junit(xml)
    assert set(cases) == {s.id for s in [*HARNESS, VM]}
    failed = {n for n, c in cases.items() if c.find("failure") is not None}
    assert failed == {VM.id}
    text = cases[VM.id].findtext("failure") or ""
    assert f"scenario {VM.id} ERROR: adapter-fatal at (start)" in text
    assert "VM mode is not run here" in text
    assert f"replay: python -m eeh_sriov campaign replay {VM.id} --results " \
        f"{out / 'results.jsonl'}" in text
    assert f"artifacts: {out / 'scenarios' / VM.id}" in text
    # the results of both workers gathered into one file, the manifest, the reports
    results = read_results(out / "results.jsonl")
    assert sorted(r.id for r in results) == sorted(s.id for s in [*HARNESS, VM])
    assert {r.worker for r in results} <= {"gw0", "gw1"}
    assert not list(out.glob("results.*.part.jsonl"))
    manifest = read_manifest(out)
    assert manifest is not None and manifest.campaign == "t" and manifest.shard is None
    assert manifest.workers == len({r.worker for r in results})
    assert "campaign t: 4 scenarios, 3 passed, 0 failed, 1 errors" in p.stdout
    assert (out / "report.html").read_text().index(VM.id) < \
        (out / "report.html").read_text().index('class="grid"')


def test_two_shards_then_merge(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, HARNESS, "three")
    ids = [s.id for s in HARNESS]
    ran: list[set[str]] = []
    dirs = []
    for i in (1, 2):
        out, xml = tmp_path / f"shard{i}", tmp_path / f"shard{i}.xml"
        p = pytest_run(f"--eeh-campaign={campaign}", f"--shard={i}/2",
                       f"--eeh-campaign-out={out}", f"--junitxml={xml}")
        assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
        ran.append(set(_junit(xml)))
        assert ran[-1] == set(shard_ids(ids, i, 2))
        assert {r.shard for r in read_results(out / "results.jsonl")} == {f"{i}/2"}
        dirs.append(out)
    assert ran[0].isdisjoint(ran[1]) and ran[0] | ran[1] == set(ids)
    summary = merge(dirs, tmp_path / "all")
    assert sorted(r.id for r in summary.results) == sorted(ids)
    assert summary.missing_shards == () and summary.counts == {"pass": 3}


def test_collection_is_the_campaign_only(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, HARNESS)
    p = pytest_run(f"--eeh-campaign={campaign}", "--co", "-q")
    assert p.returncode == 0, p.stderr
    listed = [x for x in p.stdout.splitlines() if "::" in x]
    assert sorted(listed) == sorted(f"campaign/t::{s.id}" for s in HARNESS)
    assert not (REPO / "runs" / "campaign" / "t").exists()  # collecting runs nothing
    one = HARNESS[1].id
    p = pytest_run(f"--eeh-campaign={campaign}", "--co", "-q", "-k", one)
    assert [x.rsplit("::", 1)[1] for x in p.stdout.splitlines() if "::" in x] == [one]
    # a shard with nothing in it: pytest's "no tests collected" (5), for make to accept
    p = pytest_run(f"--eeh-campaign={_campaign(tmp_path, [VM], 'one')}", "--shard=2/2",
                   "--eeh-campaign-out", tmp_path / "empty")
    assert p.returncode == 5, p.stdout[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--shard=3/2"], "--shard: shard '3/2' is not i/n with 1 <= i <= n"),
    (["--eeh-campaign=nonsense"], "no campaign 'nonsense': NAME[:TOPOLOGY[:TIMING]]"),
    (["--eeh-campaign=/nonexistent/x.campaign.json"], "cannot read /nonexistent/x.campaign"),
])
def test_bad_options_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    if args[0].startswith("--shard"):
        args = [f"--eeh-campaign={_campaign(tmp_path, HARNESS)}", *args]
    p = pytest_run(*args, "--co")
    assert p.returncode == 4, p.stdout + p.stderr
    assert message in p.stderr
    assert "Traceback" not in p.stderr
