"""Quiet requests (`"quiet": true`, docs/platform-calls.md "Quiet requests") on the real
platform-call server: an ok quiet call gets no reply line, a refused one (bad arguments,
a PE it does not own, over the report budget, a non-boolean flag) is answered as before,
a request without the flag is answered as before; the client (`Channel.post(...,
quiet=True)`, `Services.report(wait=False)`) runs on_reply only for a refusal and
forgets the ok ones at the next reply, its table bounded even if no reply ever comes."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from eeh_abi.hcall import MAX_QUIET_RUN, Channel, Reply
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.services import Services
from hypervisor_shim.hcall.budget import ReportBudget
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.raw_hcall import SENTINEL
from tests.support.raw_hcall import replies_to as raw_replies
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
VF0, VF1 = 0x18000, 0x18100


def line(msg_id: int, args: dict[str, Any], quiet: object = None,
         call: str = "report") -> bytes:
    obj: dict[str, Any] = {"v": 1, "id": msg_id, "call": call, "args": args}
    if quiet is not None:
        obj["quiet"] = quiet
    return json.dumps(obj).encode()


def replies_to(plat: Platform, lines: list[bytes]) -> list[dict[str, Any]]:
    """Send `lines` and a sentinel on one connection of g1; every reply up to the
    sentinel's (events skipped)."""
    return raw_replies(plat.hcall_path("g1"), lines)


def test_only_refused_quiet_requests_are_answered(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat:
        # 4 at once per PE, and 4 for the PE-less ones
        plat.calls.budget = ReportBudget(rate_per_s=0.001, burst=4)
        step = {"step": "reset", "pe": VF0, "guest_time": 1.0}
        lines = [
            line(1, step, quiet=True),  # ok: no reply line
            line(2, {"pe": VF0}, quiet=True),  # no step: -3
            line(3, {**step, "pe": VF1}, quiet=True),  # g2's PE: refused
            line(4, step, quiet=1),  # not a boolean: the usual clear error
            line(5, step),  # no flag: answered as always (an older guest's driver)
            line(6, step, quiet=False),
            *(line(n, {"step": "probe"}, quiet=True) for n in (7, 8, 9, 10)),  # PE-less
            line(11, {"step": "probe"}, quiet=True),  # over the budget: -2
            line(12, step, quiet=True),  # VF0's 4th
        ]
        replies = replies_to(plat, lines)
        assert [r["id"] for r in replies] == [2, 3, 4, 5, 6, 11, SENTINEL], replies
        by_id = {r["id"]: r for r in replies}
        assert by_id[2]["status"] == -3 and "step" in by_id[2]["error"], by_id[2]
        assert by_id[3]["status"] != 0, by_id[3]
        assert by_id[4]["status"] == -3 and by_id[4]["error"] == \
            "quiet must be true or false", by_id[4]
        assert by_id[5]["status"] == by_id[6]["status"] == 0
        assert by_id[11]["status"] == -2 and "over budget" in by_id[11]["error"], by_id[11]
        # the quiet ok ones were handled all the same, in order
        steps = [e.kind for e in plat.timeline.snapshot()
                 if e.source == "driver" and e.owner == "g1"]
        assert steps == ["reset"] * 3 + ["probe"] * 4 + ["reset"], steps


def test_a_quiet_posts_on_reply_runs_only_when_refused(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, Channel.unix(str(plat.hcall_path("g1"))) as ch:
        got: list[Reply] = []
        refused = threading.Event()

        def on_reply(r: Reply) -> None:
            got.append(r)
            refused.set()

        for n in range(20):
            ch.post(Call.REPORT, on_reply, quiet=True, step="reset", pe=VF0,
                    guest_time=float(n))
        ch.post(Call.REPORT, on_reply, quiet=True, step="reset", pe=VF1)  # not its PE
        for _ in range(5):
            ch.post(Call.REPORT, on_reply, quiet=True, step="reset", pe=VF0)
        assert refused.wait(10)
        assert ch.call(Call.QUERY_PARTITION).ok  # after every post: each is settled
        assert [r.id for r in got] == [21] and not got[0].ok, got
        assert ch.posted_pending == 0

        # posts and no reply at all: the table stays bounded (one post asks for its reply)
        for _ in range(MAX_QUIET_RUN + 10):
            ch.post(Call.REPORT, on_reply, quiet=True, step="probe")
        assert wait_for(lambda: ch.posted_pending == 9, 10), (ch.posted_pending, got)
        assert [r.id for r in got] == [21, 28 + MAX_QUIET_RUN], got  # the one that asked
        assert got[1].ok


def test_services_counts_quiet_reports(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, Channel.unix(str(plat.hcall_path("g1"))) as ch:
        services = Services(ch)
        for n in range(10):
            assert services.report(Kind.RESET, VF0, {"n": n}, wait=False)
        assert services.report(Kind.RESET, VF1, wait=False)  # written; refused later
        assert services.report(Kind.RECOVERED, VF0, {})
        assert (services.reports_sent, services.reports_failed) == (11, 1)
        assert ch.posted_pending == 0
        services.close()
