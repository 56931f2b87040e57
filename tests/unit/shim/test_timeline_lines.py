"""A timeline entry's line built from its members (`_entry_line`) and the entry made
without its __init__ (`_new_entry`) are what the general way makes (issue 22: two of the
costs of every entry, on the platform's loop)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.timeline import Entry, Timeline, _encode_line, _entry_line, _new_entry

ENTRIES = [
    Entry(12.3456789, "driver", "reset", "vf0", "host", {}, 1.5),
    Entry(0.0, "call", "set-slot-reset", "vf3", "g1",
          {"args": {"pe": 98304, "function": 1}, "status": 0}),
    Entry(3, "policy", "pe-frozen", None, None, {"to": ["a", "b"], "x": None}),
    Entry(1e-7, "model", "error-logged", "adapter", None, {"n": [1, 2.5, True]}, 7),
    Entry(5.0, "driver", "caf\u00e9 \"q\"\n", "vf\u2603", "o\\w", {"k\u00e9": "\u00e9"}),
    Entry(float("nan"), "x", "y"),  # the general way: NaN
    Entry(float("inf"), "x", "y", guest_time=float("-inf")),
    Entry(2.5, Source.POLICY, Kind.PE_FROZEN, "vf1"),  # enum members
    Entry(2.5, "x", "y", guest_time=True),  # a bool is not a number here
    Entry(2.5, "x", "y", data={"p": Path("p")}),  # default=str
    Entry(1e20, "x", "y"),
]


@pytest.mark.parametrize("e", ENTRIES, ids=range(len(ENTRIES)))
def test_an_entry_line_is_the_encoded_entry(e: Entry) -> None:
    assert _entry_line(e) == _encode_line(e.to_json())


def test_lines_from_a_run_are_unchanged(tmp_path: Path) -> None:
    tl = Timeline(tmp_path / "events.jsonl")
    for e in ENTRIES[:5]:
        tl.record(e.source, e.kind, pe=e.pe, owner=e.owner, data=e.data,
                  guest_time=e.guest_time, t=e.t)
    tl.close()
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert lines == [_encode_line(e.to_json()) for e in ENTRIES[:5]]
    assert [Entry.from_json(json.loads(x)) for x in lines] == [
        dataclasses.replace(e, t=round(e.t, 6)) for e in ENTRIES[:5]]


def test_an_entry_made_without_init_is_an_entry() -> None:
    args = (1.5, "driver", "reset", "vf0", "host", {"a": 1}, 2.0)
    made, built = _new_entry(*args), Entry(*args)
    assert made == built and hash(made.t) == hash(built.t)
    assert list(vars(made)) == [f.name for f in dataclasses.fields(Entry)]
    assert vars(made) == vars(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.kind = "x"  # type: ignore[misc]


def test_an_entry_time_is_written_as_rounded_to_six_decimals() -> None:
    """`_time_text` (the fast way for the timeline's usual times) writes what
    repr(round(t, 6)) writes: at the edges of its range, halfway cases, and a sweep."""
    import random

    from hypervisor_shim.timeline import _time_text
    rng = random.Random(22)
    times: list[float] = [0.0, -0.0, 1e-4, 0.0001, 0.00015, 9.99e-5, 1e8, 1e8 - 1e-7,
                          99999999.9999995, 0.5, 2.5e-6, -3.25, 1.0000005, 52011.1234565]
    times += [(rng.randint(0, 10**13) + 0.5) / 1e6 for _ in range(2000)]  # halfway
    times += [rng.uniform(0, 1e8) for _ in range(2000)]
    times += [rng.uniform(1e-4, 1e-2) for _ in range(2000)]
    for t in times:
        assert _time_text(t) == repr(round(t, 6)), t
    assert _time_text(3) == "3"  # an int stays an int, as round() keeps it
