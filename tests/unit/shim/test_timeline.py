"""The timeline's file (hypervisor_shim.timeline): written through a buffer, in the order
of the entries, flushed by the timeline's own thread once per window rather than per
entry, and in full on flush(), close() and when an unclosed timeline is collected."""

from __future__ import annotations

import gc
import json
import threading
from pathlib import Path

from hypervisor_shim.timeline import Timeline, load
from tests.support.waiting import wait_for

HOUR = 3600.0  # a flush window the test never sees end


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_entries_are_not_flushed_one_by_one_but_on_flush_and_close(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tl = Timeline(path, flush_window_s=HOUR)
    for i in range(100):
        tl.record("policy", "pe-thawed", pe=f"vf{i}", data={"i": i})
    assert path.stat().st_size == 0 and tl.flushes == 0  # buffered: not one write(2) yet
    tl.flush()
    assert [e["data"] for e in lines(path)] == [{"i": i} for i in range(100)]
    assert tl.flushes == 1
    tl.flush()  # nothing new: no flush
    tl.record("policy", "pe-frozen", pe="vf0")
    tl.close()
    assert [e["kind"] for e in lines(path)][-2:] == ["pe-thawed", "pe-frozen"]
    assert tl.flushes == 2
    tl.record("policy", "late")  # after close: memory only, no error
    assert len(load(path)) == 101 and tl.entries[-1].kind == "late"


def test_a_live_reader_sees_an_entry_within_the_window_and_a_burst_is_one_flush(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with_timeline = Timeline(path, flush_window_s=0.05)
    try:
        with_timeline.record("shim", "platform-started")
        # nobody records or flushes again: the timeline's thread writes it out
        assert wait_for(lambda: len(lines(path)) == 1, 30), path.read_text()
        assert with_timeline.flushes == 1
        for i in range(200):
            with_timeline.record("call", "report", owner="g1", data={"i": i})
        assert wait_for(lambda: len(lines(path)) == 201, 30)
        assert with_timeline.flushes < 1 + 200  # fewer flushes than entries (~1)
    finally:
        with_timeline.close()


def test_the_file_holds_every_entry_in_the_order_of_entries_across_threads(
        tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tl = Timeline(path, flush_window_s=0.001)
    go = threading.Barrier(4)

    def recorder(n: int) -> None:
        go.wait()
        for i in range(500):
            tl.record("driver", "step", owner=f"g{n}", data={"i": i})
    threads = [threading.Thread(target=recorder, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    tl.close()
    on_file = load(path)
    assert len(on_file) == 2000
    assert [(e.owner, e.data) for e in on_file] == [(e.owner, e.data) for e in tl.entries]


def test_an_unclosed_timeline_dropped_is_flushed_and_its_thread_ends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    before = set(threading.enumerate())
    tl = Timeline(path, flush_window_s=HOUR)
    tl.record("shim", "platform-started")
    tl.keeps_me_alive = tl  # type: ignore[attr-defined]  # a cycle: only the collector frees it
    flushers = [t for t in threading.enumerate()
                if t not in before and t.name == "timeline-flush"]
    assert len(flushers) == 1
    del tl
    gc.collect()
    assert [e["kind"] for e in lines(path)] == ["platform-started"]
    assert wait_for(lambda: not any(t.is_alive() for t in flushers), 30)
