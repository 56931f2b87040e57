"""The report budget (hypervisor_shim/hcall/budget.py) on the real platform: one guest's
flood of 3,000 reports is refused past its budget with -2 and a summary per window in
the timeline, while another guest's calls are answered normally."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from eeh_abi.hcall import Channel, Reply
from eeh_abi.papr import Status
from eeh_abi.schema import Call
from hypervisor_shim.hcall.budget import REPORT_BUDGET
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
DETAIL = {"blob": "d" * 7000}
N = 3000


def test_a_report_flood_is_budgeted_and_nobody_else_suffers(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, \
            Channel.unix(str(plat.hcall_path("g1"))) as flood, \
            Channel.unix(str(plat.hcall_path("g2"))) as other:
        replies: list[Reply] = []
        done = threading.Event()

        def got(r: Reply) -> None:
            replies.append(r)
            if len(replies) == N:
                done.set()

        t0 = time.monotonic()
        for _ in range(N):
            flood.post(Call.REPORT, on_reply=got, step="probe", detail=DETAIL)
        other_times = []
        for _ in range(20):  # the other guest, during the flood
            t = time.monotonic()
            r = other.call(Call.QUERY_PARTITION)
            other_times.append(time.monotonic() - t)
            assert r.ok, r
            assert other.call(Call.REPORT, step="probe", detail={"n": 1}).ok
        assert done.wait(30)
        flood_s = time.monotonic() - t0
        ok = sum(r.status == 0 for r in replies)
        busy = [r for r in replies if r.status == Status.BUSY]
        assert ok + len(busy) == N
        assert REPORT_BUDGET.burst <= ok <= REPORT_BUDGET.burst + (
            flood_s + 1) * REPORT_BUDGET.rate_per_s
        # refused by the report budget, or (a flood this fast can pass it too) by the
        # guest's record budget, which answers first (hcall/server.py)
        assert all(r.error and "over budget" in r.error and (
            r.ret.get("retry_ms") == REPORT_BUDGET.retry_ms or "bytes of records" in r.error)
            for r in busy), {r.error for r in busy}
        big = flood.call(Call.REPORT, step="probe",
                         detail={"blob": "x" * (REPORT_BUDGET.max_detail_bytes + 1)})
        assert big.status in (Status.PARAM_ERROR, Status.BUSY), big
        time.sleep(REPORT_BUDGET.window_s + 0.2)  # the window closes: its summary
        assert wait_for(lambda: any(e.data.get("over_budget") for e in
                                    plat.timeline.snapshot()), 5)
        entries = [e for e in plat.timeline.snapshot() if e.owner == "g1"]
        summaries = [e for e in entries if e.data.get("over_budget")]
        assert sum(e.data["refused"] for e in summaries) >= len(busy)
        # one per window and budget (reports; records when it acted too)
        assert len(summaries) <= 2 * (flood_s / REPORT_BUDGET.window_s + 2)
        assert len(entries) <= ok + len(summaries) + 2  # bounded: accepted + summaries
        # after the window the budget is back: a report is accepted
        assert flood.call(Call.REPORT, step="probe", detail={}).ok
        g2 = [e for e in plat.timeline.snapshot() if e.owner == "g2" and e.source == "driver"]
        assert len(g2) == 20
        print(f"\n{N} reports in {flood_s:.2f} s: {ok} accepted, {len(busy)} refused, "
              f"{len(summaries)} summary entries, g1 timeline entries {len(entries)}; "
              f"other guest's calls max {max(other_times) * 1000:.1f} ms")
