"""Batched step reports (docs/platform-calls.md, "Batched reports") on the real platform:
`report` with `"steps": [...]` records exactly the entries the same single reports make,
refuses bad input as a whole naming the first bad step (nothing recorded), charges the
report budget a token per step (all or none) and the record budget each step's entry, is
answered only when refused when quiet; the platform announces it in `query-functions`,
and the client (`Channel.post(..., hold=True)`, `Services.holding`) sends a thread's held
run of one PE's reports as one line only then, single lines otherwise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from eeh_abi.hcall import Channel, Reply
from eeh_abi.schema import MAX_REPORT_STEPS, REPORT_STEPS, Call
from eeh_abi.vocabulary import Kind
from guest_drivers.services import Services
from hypervisor_shim.hcall.budget import RecordBudgets, ReportBudget
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry
from tests.support.platform_rig import svc_and_one_guest
from tests.support.raw_hcall import SENTINEL, replies_to

VF0, VF1 = 0x18000, 0x18100

STEPS: list[dict[str, Any]] = [
    {"step": "config-restored", "guest_time": 12.25, "detail": {"mac": "02:ee:00:00:00:01",
                                                                "vlan": None, "mtu": 1500}},
    {"step": "slot-reset", "guest_time": 12.5},
    {"step": "replay", "detail": {"n": 3, "l": [1, 2.5, "x\u00e9"]}},
    {"step": "resume", "guest_time": 13},  # a recovered step: the PE leaves `recovering`
]


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    with svc_and_one_guest(tmp_path, 2) as p:
        yield p


def line(msg_id: int, args: dict[str, Any], quiet: bool = True) -> bytes:
    obj: dict[str, Any] = {"v": 1, "id": msg_id, "call": "report", "args": args}
    if quiet:
        obj["quiet"] = True
    return json.dumps(obj).encode()


def driver_entries(plat: Platform, since: int = 0) -> list[Entry]:
    return [e for e in plat.timeline.snapshot()[since:] if e.source == "driver"]


def file_lines(plat: Platform) -> list[dict[str, Any]]:
    plat.timeline.flush()
    assert plat.run_dir is not None
    path = plat.run_dir / "events.jsonl"
    return [o for o in map(json.loads, path.read_text().splitlines())
            if o["source"] == "driver"]


def test_a_batched_report_records_what_the_single_reports_do(plat: Platform) -> None:
    singles = [line(n, {**s, "pe": VF0}) for n, s in enumerate(STEPS, 1)]
    got = replies_to(plat.hcall_path("g1"), singles)
    assert [r["id"] for r in got] == [SENTINEL]  # quiet and ok: no replies
    n = len(driver_entries(plat))
    assert n == len(STEPS)
    got = replies_to(plat.hcall_path("g1"), [line(10, {"pe": VF0, "steps": STEPS})])
    assert [r["id"] for r in got] == [SENTINEL]  # a quiet batch, ok: no reply either
    entries = driver_entries(plat)
    assert len(entries) == 2 * len(STEPS)
    for single, batched in zip(entries[:n], entries[n:], strict=True):
        # entry by entry: everything but the time it was recorded
        assert (single.source, single.kind, single.pe, single.owner, single.data,
                single.guest_time) == (batched.source, batched.kind, batched.pe,
                                       batched.owner, batched.data, batched.guest_time)
        assert batched.t >= single.t
    # and the file's lines, but their `t`
    lines = [{k: v for k, v in o.items() if k != "t"} for o in file_lines(plat)]
    assert lines[:n] == lines[n:]
    assert [o["kind"] for o in lines[n:]] == [s["step"] for s in STEPS]


def test_a_batch_answered_when_not_quiet_and_the_platform_announces_it(plat: Platform
                                                                         ) -> None:
    got = replies_to(plat.hcall_path("g1"), [
        line(1, {"pe": VF0, "steps": STEPS[:2]}, quiet=False),
        b'{"v":1,"id":2,"call":"query-functions","args":{}}'])
    assert got[0]["id"] == 1 and got[0]["status"] == 0, got
    assert got[1]["ret"][REPORT_STEPS] == MAX_REPORT_STEPS, got[1]
    plat.calls.max_report_steps = 0  # a platform before batched reports
    got = replies_to(plat.hcall_path("g1"), [
        line(1, {"pe": VF0, "steps": STEPS[:2]}),
        b'{"v":1,"id":2,"call":"query-functions","args":{}}'])
    assert got[0]["status"] == -3 and "no 'steps'" in got[0]["error"], got
    assert REPORT_STEPS not in got[1]["ret"], got[1]


BAD: list[tuple[Any, str]] = [
    ("reset", "argument 'steps' must be list of steps"),
    ({"step": "reset"}, "argument 'steps' must be list of steps"),
    ([], "steps must be a list of 1..64 steps, not 0"),
    ([{"step": "reset"}] * (MAX_REPORT_STEPS + 1), "steps must be a list of 1..64 steps, not 65"),
    ([{"step": "reset"}, "reset"], "steps[1]: a step is an object"),
    ([{"step": "reset"}, {"step": "replay"}, {"guest_time": 1.0}],
     "steps[2]: report needs argument 'step'"),
    ([{"step": "reset"}, {"step": 5}], "steps[1]: argument 'step' must be text"),
    ([{"step": "reset", "guest_time": "now"}], "steps[0]: argument 'guest_time' must be"),
    ([{"step": "reset"}, {"step": "reset", "detail": [1]}],
     "steps[1]: argument 'detail' must be object"),
    ([{"step": "reset"}, {"step": "reset", "pe": VF0}], "steps[1]: unknown argument(s) ['pe']"),
    ([{"step": "reset", "detail": {"x": "y" * 9000}}, {"step": "reset"}],
     "steps[0]: detail over budget: 9009 bytes, at most 8192"),
]


def test_bad_steps_are_refused_as_a_whole_naming_the_first(plat: Platform) -> None:
    lines = [line(n, {"pe": VF0, "steps": steps}) for n, (steps, _) in enumerate(BAD, 1)]
    lines += [line(50, {"pe": VF0, "step": "reset", "steps": [{"step": "reset"}]}),
              line(51, {"pe": VF1 + 0x100, "steps": [{"step": "reset"}]}),  # not g1's
              line(52, {"pe": VF0})]  # neither step nor steps
    got = replies_to(plat.hcall_path("g1"), lines)
    assert [r["id"] for r in got] == [*range(1, len(BAD) + 1), 50, 51, 52, SENTINEL], got
    for reply, (_, why) in zip(got, BAD, strict=False):
        assert reply["status"] == -3 and why in reply["error"], (why, reply)
    assert got[len(BAD)]["status"] == -3 and "in each step" in got[len(BAD)]["error"]
    assert got[len(BAD) + 1]["status"] == -3
    assert "'step' (or 'steps')" in got[len(BAD) + 2]["error"]
    assert driver_entries(plat) == []  # all or nothing: none of their good steps recorded


def test_the_report_budget_takes_a_token_a_step_all_or_none(plat: Platform) -> None:
    plat.calls.budget = ReportBudget(rate_per_s=0.001, burst=5)
    three = [{"step": "reset"}, {"step": "replay"}, {"step": "resume"}]
    got = replies_to(plat.hcall_path("g1"), [
        line(1, {"pe": VF0, "steps": three}),  # 5 -> 2 tokens
        line(2, {"pe": VF0, "steps": three}),  # needs 3 of 2: refused, none recorded
        line(3, {"pe": VF0, "steps": three[:2]}),  # 2 -> 0
        line(4, {"pe": VF0, "step": "reset"}),  # none left
        line(5, {"pe": VF1, "steps": three})])  # another PE, its own budget
    assert [(r["id"], r["status"]) for r in got] == [(2, -2), (4, -2), (SENTINEL, 0)], got
    assert "over budget" in got[0]["error"] and got[0]["ret"]["retry_ms"] == 100
    assert [e.kind for e in driver_entries(plat)] == [
        "reset", "replay", "resume", "reset", "replay", "reset", "replay", "resume"]
    plat.calls.close_windows(force=True)
    summary = [e for e in plat.timeline.snapshot() if e.data.get("over_budget")]
    assert [e.data["refused"] for e in summary] == [4], summary  # 3 steps + 1 report


def test_the_record_budget_is_charged_each_steps_entry(plat: Platform) -> None:
    now = [100.0]
    plat.server.records = RecordBudgets(clock=lambda: now[0])  # no refill in between
    got = replies_to(plat.hcall_path("g1"), [line(1, {"pe": VF0, "step": "probe"})])
    assert got[-1]["id"] == SENTINEL
    tokens = plat.server.records.buckets["g1"].tokens
    since = len(plat.timeline.snapshot())
    replies_to(plat.hcall_path("g1"), [line(2, {"pe": VF0, "steps": STEPS})])
    charged = tokens - plat.server.records.buckets["g1"].tokens
    assert len(driver_entries(plat, since)) == len(STEPS)
    # each step's entry as the line written, and the sentinel's call entry (a
    # connection's own entries are not charged)
    answered = [e for e in plat.timeline.snapshot()[since:] if e.source != "shim"]
    assert [e.kind for e in answered] == [s["step"] for s in STEPS] + ["query-partition"]
    assert charged == sum(len(json.dumps(e.to_json())) + 1 for e in answered)


def lines_in(plat: Platform, owner: str) -> int:
    return sum(c.lines_in for c in plat.server.connections.get(owner, ()))


def held(ch: Channel, pe: int, steps: list[dict[str, Any]], refused: list[Reply]) -> None:
    for s in steps:
        ch.post(Call.REPORT, refused.append, quiet=True, hold=True, pe=pe, **s)


def test_a_channel_sends_a_held_run_as_one_line_once_announced(plat: Platform) -> None:
    with Channel.unix(str(plat.hcall_path("g1")), timeout=10) as ch:
        assert ch.report_steps == 0  # nothing learnt yet: one line a report
        assert ch.call(Call.QUERY_FUNCTIONS).ok
        assert ch.report_steps == MAX_REPORT_STEPS
        before = lines_in(plat, "g1")
        refused: list[Reply] = []
        held(ch, VF0, STEPS, refused)
        assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
        assert lines_in(plat, "g1") - before == 2  # the run, the call
        # a run closes at another PE's report on the thread and at any other request
        before = lines_in(plat, "g1")
        held(ch, VF0, STEPS[:2], refused)
        held(ch, VF1, STEPS[:1], refused)
        held(ch, VF0, STEPS[2:], refused)
        ch.post(Call.REPORT, refused.append, pe=VF0, step="probe")  # not held: asks reply
        held(ch, VF0, STEPS[:1], refused)
        ch.flush()
        assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
        assert lines_in(plat, "g1") - before == 6
        kinds = [(e.pe, e.kind) for e in driver_entries(plat)]
        assert kinds == [("vf0", s["step"]) for s in STEPS] + [
            ("vf0", "config-restored"), ("vf0", "slot-reset"), ("vf1", "config-restored"),
            ("vf0", "replay"), ("vf0", "resume"), ("vf0", "probe"),
            ("vf0", "config-restored")]
        assert [r.status for r in refused] == [0]  # the post that asked for its reply
        # a run is cut at the platform's limit
        plat.calls.max_report_steps = 3
        assert ch.call(Call.QUERY_FUNCTIONS).ok and ch.report_steps == 3
        before = lines_in(plat, "g1")
        held(ch, VF0, STEPS * 2, refused)  # 8 reports: 3 + 3 + 2
        assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
        assert lines_in(plat, "g1") - before == 4
        assert [e.kind for e in driver_entries(plat)][-8:] == [s["step"] for s in STEPS * 2]


def test_a_client_sends_single_lines_to_a_platform_that_does_not_announce(plat: Platform
                                                                          ) -> None:
    plat.calls.max_report_steps = 0  # a platform before batched reports
    with Channel.unix(str(plat.hcall_path("g1")), timeout=10) as ch:
        assert ch.call(Call.QUERY_FUNCTIONS).ok
        assert ch.report_steps == 0
        before = lines_in(plat, "g1")
        refused: list[Reply] = []
        held(ch, VF0, STEPS, refused)
        assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
        assert lines_in(plat, "g1") - before == len(STEPS) + 1
        assert refused == []
        assert [e.kind for e in driver_entries(plat)] == [s["step"] for s in STEPS]


def test_services_count_a_refused_batch_as_each_report_failed(plat: Platform) -> None:
    with Channel.unix(str(plat.hcall_path("g1")), timeout=10) as ch:
        assert ch.call(Call.QUERY_FUNCTIONS).ok
        services = Services(ch)
        plat.calls.budget = ReportBudget(rate_per_s=0.001, burst=4)
        done = threading.Event()

        def round_() -> None:  # a driver's recovery round, on a thread of its own
            with services.holding():
                for step in (Kind.RESET, Kind.REPLAY, Kind.RESUME):
                    services.report(step, VF0, {"n": 1}, wait=False)
                services.call(Call.READ_SLOT_RESET_STATE2, pe=VF0)
                for step in (Kind.RESET, Kind.REPLAY):  # one token left: refused both
                    services.report(step, VF0, wait=False)
                services.call(Call.READ_SLOT_RESET_STATE2, pe=VF0)
            done.set()

        t = threading.Thread(target=round_)
        t.start()
        assert done.wait(10)
        t.join()
        assert (services.reports_sent, services.reports_failed) == (3, 2)
        assert [e.kind for e in driver_entries(plat)] == ["reset", "replay", "resume"]
        services.close()
