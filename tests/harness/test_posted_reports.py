"""Posted platform calls (eeh_abi.hcall.Channel.post) and the drivers' posted step reports
(guest_drivers.services: report(..., wait=False)) against the real platform-call server:
written at once, handled in order with the channel's other calls, replies counted."""

from __future__ import annotations

import threading
from pathlib import Path

from eeh_abi.hcall import Channel, ChannelClosed, Reply
from eeh_abi.schema import Call
from guest_drivers.services import Services
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1"}
VF0 = 0x18000


def test_posted_calls_are_handled_in_order_with_the_waited_ones(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, Channel.unix(str(plat.hcall_path("g1"))) as ch:
        replies: list[Reply] = []
        done = threading.Event()

        def got(r: Reply) -> None:
            replies.append(r)
            if len(replies) == 50:
                done.set()

        for n in range(50):
            ch.post(Call.REPORT, on_reply=got, step=f"step-{n}", pe=VF0, guest_time=float(n))
        ch.post(Call.REPORT)  # a bad one (no step): its reply is dropped, nothing breaks
        r = ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0)  # after every posted report
        assert r.ok
        steps = [e.data.get("step", e.kind) for e in plat.timeline.snapshot()
                 if e.source == "driver" and e.owner == "g1"]
        assert steps == [f"step-{n}" for n in range(50)], steps
        assert done.wait(5) and all(x.ok for x in replies)
        assert wait_for(lambda: ch.posted_pending == 0, 5)
    try:
        ch.post(Call.REPORT, step="late", pe=VF0)
    except ChannelClosed:
        pass
    else:
        raise AssertionError("a post on a closed channel must raise ChannelClosed")


def test_services_posted_reports_count_and_keep_order(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, Channel.unix(str(plat.hcall_path("g1"))) as ch:
        services = Services(ch)
        for n in range(10):
            assert services.report(f"posted-{n}", VF0, {"n": n}, wait=False)
        assert services.report("waited", VF0, {})  # waits: every earlier one is in
        kinds = [e.kind for e in plat.timeline.snapshot()
                 if e.source == "driver" and e.owner == "g1"]
        assert kinds == [*(f"posted-{n}" for n in range(10)), "waited"], kinds
        assert wait_for(lambda: services.reports_sent == 11, 5)
        assert services.reports_failed == 0
        services.close()
