"""The unread-replies budget (hypervisor_shim/hcall/budget.py, ChannelBudget) on the real
platform: a client that sends many calls and never reads its replies has its channel
closed once more than `max_unread_bytes` wait unread, with one timeline entry giving the
numbers and a log line; the other owners' channels keep working meanwhile and after."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from hypervisor_shim.hcall.budget import CHANNEL_BUDGET
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
VF0, VF1 = 0x18000, 0x18100


def test_a_client_that_never_reads_is_closed_once_over_budget_and_others_go_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hypervisor_shim.hcall.server")
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    req = b'{"v":1,"id":%d,"call":"slot-error-detail","args":{"pe":%d}}\n'
    with Platform(cfg, tmp_path) as plat, \
            Channel.unix(str(plat.hcall_path("g2")), timeout=5) as g2, \
            Channel.unix(str(plat.hcall_path("svc")), timeout=5) as svc, \
            socket.socket(socket.AF_UNIX) as s:
        s.connect(str(plat.hcall_path("g1")))
        s.setblocking(False)
        sent_calls, worst, closed_by_server = 0, 0.0, False
        t0 = time.monotonic()
        deadline = t0 + 30
        while time.monotonic() < deadline:
            batch = b"".join(req % (sent_calls + i, VF0) for i in range(200))
            try:
                n = s.send(batch)
            except BlockingIOError:
                n = 0
            except OSError:  # EPIPE / ECONNRESET: the server closed it
                closed_by_server = True
                break
            sent_calls += n // len(req % (0, VF0))  # about: the requests are ~equal
            t = time.monotonic()
            assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
            assert svc.call(Call.QUERY_PARTITION).ok
            worst = max(worst, time.monotonic() - t)
            if any(e.kind == "channel-closed" and e.owner == "g1"
                   for e in plat.timeline.snapshot()):
                closed_by_server = True
                break
        took = time.monotonic() - t0
        assert closed_by_server, "g1 never read and its channel is still open"
        assert wait_for(lambda: any(e.kind == "channel-closed" and e.owner == "g1"
                                    for e in plat.timeline.snapshot()), 5)
        entries = [e for e in plat.timeline.snapshot()
                   if e.owner == "g1" and e.data.get("over_budget")]
        print(f"\ng1 sent ~{sent_calls} calls unread; closed after {took:.2f} s; "
              f"others' worst call {worst * 1000:.1f} ms; entry {entries}")
        assert len(entries) == 1, entries
        data = entries[0].data
        assert data["max_unread_bytes"] == CHANNEL_BUDGET.max_unread_bytes
        assert data["unread_bytes"] > CHANNEL_BUDGET.max_unread_bytes
        assert any("unread" in r.getMessage() and str(CHANNEL_BUDGET.max_unread_bytes)
                   in r.getMessage() for r in caplog.records), caplog.text
        assert worst < 1.0
        # the others keep working after, and g1's owner may connect again (harness mode)
        assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
        assert svc.call(Call.QUERY_PARTITION).ok
        with Channel.unix(str(plat.hcall_path("g1")), timeout=5) as again:
            assert again.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).status == 0
