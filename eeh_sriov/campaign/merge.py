"""Deterministic shards of a campaign, and the merge of the shards' results into one.

The sharding rule: sort the campaign's scenario ids (plain string order); the scenario at
position p (0-based) belongs to shard (p mod n) + 1 of n. Every scenario is in exactly one
shard, the shards differ in size by at most one, and every machine that generates the
same campaign computes the same shards without talking to the others.

    python -m eeh_sriov campaign merge runs/campaign/a runs/campaign/b --out runs/campaign/all
    python -m eeh_sriov campaign report runs/campaign/a     # its reports written again

A shard's directory holds its `results.jsonl` and `campaign.json` (written by the pytest
plugin, `eeh_sriov.campaign.items`). The merge refuses, naming the directories: a
directory without them, shards of different campaigns (their names or scenario-id
digests differ) or of different shard counts, the same shard twice, a scenario with
results in two directories (an overlap), and a result for a scenario its shard does not
hold. Shards that are missing are not an error: the merged report names them and its
coverage shows what they would have added. The output directory gets the merged
`results.jsonl` (sorted by id, each line as its shard wrote it), a `campaign.json` for
the whole and `report.md` / `report.html`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eeh_sriov.campaign.report import Summary, headline, summarize
from eeh_sriov.campaign.report_data import (
    MANIFEST_NAME,
    RESULTS_NAME,
    Manifest,
    Result,
    ResultsError,
    parse_shard,
    read_manifest,
    read_results,
    write_manifest,
    write_results,
)
from eeh_sriov.campaign.report_html import write_reports


class MergeRefused(ResultsError):
    """The shards given cannot be merged into one campaign's results."""


def shard_ids(ids: Sequence[str], index: int, count: int) -> list[str]:
    """The ids of shard `index` of `count` (1-based): every count-th of the sorted ids."""
    if not 1 <= index <= count:
        raise ResultsError(f"shard {index}/{count} is not i/n with 1 <= i <= n")
    return sorted(set(ids))[index - 1::count]


@dataclass(frozen=True)
class Shard:
    directory: Path
    manifest: Manifest
    results: tuple[Result, ...]


def read_shard(directory: Path) -> Shard:
    if not (directory / RESULTS_NAME).is_file():
        raise MergeRefused(f"{directory}: not a campaign run directory (no {RESULTS_NAME})")
    manifest = read_manifest(directory)
    if manifest is None:
        raise MergeRefused(f"{directory}: no {MANIFEST_NAME}: which campaign and shard its "
                           "results belong to is unknown")
    return Shard(directory, manifest, tuple(read_results(directory / RESULTS_NAME)))


def check(shards: Sequence[Shard]) -> list[str]:
    """Refuses shards that are not disjoint parts of one campaign; returns the missing
    shards ("i/n") if the parts are sharded."""
    if not shards:
        raise MergeRefused("no shard directories to merge")
    first = shards[0]
    for s in shards[1:]:
        a, b = first.manifest, s.manifest
        if (a.campaign, a.digest, a.scenarios) != (b.campaign, b.digest, b.scenarios):
            raise MergeRefused(
                f"mismatched campaigns: {first.directory} is {a.campaign!r} ({a.scenarios} "
                f"scenarios, ids digest {a.digest}), {s.directory} is {b.campaign!r} "
                f"({b.scenarios} scenarios, ids digest {b.digest})")
    by_index: dict[int, Shard] = {}
    count = 0
    for s in shards:
        if s.manifest.shard is None:
            if len(shards) > 1:
                raise MergeRefused(f"{s.directory} is a whole campaign, not a shard: it "
                                   "overlaps every other directory given")
            continue
        i, n = parse_shard(s.manifest.shard, str(s.directory / MANIFEST_NAME))
        if count and n != count:
            other = next(iter(by_index.values()))
            raise MergeRefused(f"mismatched shard counts: {other.directory} is shard "
                               f"{other.manifest.shard}, {s.directory} is shard {i}/{n}")
        count = n
        if i in by_index:
            raise MergeRefused(f"overlap: {by_index[i].directory} and {s.directory} are "
                               f"both shard {i}/{n}")
        by_index[i] = s
    owner: dict[str, Path] = {}
    for s in shards:
        planned = set(s.manifest.ids)
        for r in s.results:
            if r.id in owner:
                raise MergeRefused(f"overlap: scenario {r.id} has results in both "
                                   f"{owner[r.id]} and {s.directory}")
            owner[r.id] = s.directory
            if r.id not in planned:
                raise MergeRefused(f"{s.directory}: scenario {r.id} is not one of its shard "
                                   f"{s.manifest.shard or '(whole)'}")
            if r.shard is not None and r.shard != s.manifest.shard:
                raise MergeRefused(f"{s.directory}: scenario {r.id} says shard {r.shard}, "
                                   f"its directory is shard {s.manifest.shard}")
    return [f"{i}/{count}" for i in range(1, count + 1) if i not in by_index]


def merge(directories: Sequence[Path], out: Path) -> Summary:
    """Merges the shards in `directories` into `out` (created); the merged summary."""
    shards = [read_shard(d) for d in directories]
    missing = check(shards)
    results = [r for s in shards for r in s.results]
    first = shards[0].manifest
    out.mkdir(parents=True, exist_ok=True)
    write_results(out / RESULTS_NAME, results)
    write_manifest(out, Manifest(
        campaign=first.campaign, digest=first.digest, scenarios=first.scenarios,
        pairs=tuple(sorted({p for s in shards for p in s.manifest.pairs})), shard=None,
        ids=tuple(sorted(i for s in shards for i in s.manifest.ids)),
        workers=sum(s.manifest.workers for s in shards),
        wall_s=max(s.manifest.wall_s for s in shards), mode=first.mode))
    summary = summarize(results, [s.manifest for s in shards], missing_shards=missing)
    write_reports(out, summary)
    return summary


def merge_command(directories: Sequence[Path], out: Path) -> int:
    """`campaign merge`: merges, prints the headline and where the reports are; 0 when
    merged (violations are the report's to show, not the merge's failure)."""
    summary = merge(directories, out)
    for line in headline(summary):
        print(f"merge: {line}")
    print(f"merge: {len(directories)} director{'y' if len(directories) == 1 else 'ies'} -> "
          f"{out / RESULTS_NAME}, {out / 'report.md'}, {out / 'report.html'}")
    return 0


def report_command(directory: Path) -> int:
    """`campaign report`: a run directory's reports (re)written from its results (and its
    manifest, if it has one: without, the possible pairs are the pairs run)."""
    results = read_results(directory / RESULTS_NAME)
    manifest = read_manifest(directory)
    summary = summarize(results, [manifest] if manifest else [],
                        name=f"{directory.resolve().name} (no manifest)")
    md, page = write_reports(directory, summary)
    for line in headline(summary):
        print(f"report: {line}")
    print(f"report: {md}, {page}")
    return 0


COMMANDS = ("merge", "report")


def add_subcommands(csub: Any) -> None:
    """`campaign merge` and `campaign report` (wired into `campaign`'s subparsers)."""
    m = csub.add_parser("merge", help="merge shards' results into one, with the reports")
    m.add_argument("directories", nargs="+", type=Path, metavar="SHARD_DIR",
                   help="a shard's run directory (results.jsonl, campaign.json)")
    m.add_argument("--out", type=Path, required=True, help="the merged run's directory")
    r = csub.add_parser("report", help="write a run's report.md and report.html again")
    r.add_argument("directory", type=Path, help="a run directory (results.jsonl)")


def run(args: argparse.Namespace) -> int:
    if args.campaign_cmd == "merge":
        return merge_command(args.directories, args.out)
    return report_command(args.directory)
