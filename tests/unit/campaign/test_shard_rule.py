"""The sharding rule: sorted ids, position p in shard (p mod n) + 1; each id in exactly
one shard, sizes within one of each other, independent of the order ids come in."""

from __future__ import annotations

import random

import pytest

from eeh_sriov.campaign.merge import shard_ids
from eeh_sriov.campaign.report_data import ResultsError, parse_shard


@pytest.mark.parametrize("count", [1, 2, 3, 7, 40])
def test_every_id_in_exactly_one_shard_balanced(count: int) -> None:
    ids = [f"s-{random.Random(i).getrandbits(48):012x}" for i in range(37)]
    shards = [shard_ids(ids, i, count) for i in range(1, count + 1)]
    flat = [x for s in shards for x in s]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_the_rule_is_round_robin_over_sorted_ids_whatever_the_input_order() -> None:
    ids = ["s-d", "s-a", "s-c", "s-b", "s-e"]
    assert shard_ids(ids, 1, 2) == ["s-a", "s-c", "s-e"]
    assert shard_ids(ids, 2, 2) == ["s-b", "s-d"]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    assert shard_ids(shuffled, 2, 2) == ["s-b", "s-d"]


@pytest.mark.parametrize("text", ["0/2", "3/2", "1", "a/b", "1/0", "-1/2", "1/2/3", ""])
def test_a_bad_shard_is_refused_clearly(text: str) -> None:
    with pytest.raises(ResultsError, match="is not i/n with 1 <= i <= n"):
        parse_shard(text)
    assert parse_shard("2/3") == (2, 3)
