"""The benchmarks' sender (guest_drivers.sender) and VfDriver.send_batch, on the real
device model in-process: frames as fast as the driver takes them, exact books."""

from __future__ import annotations

import threading

from device_model import Adapter, AdapterConfig, ManualClock, QueueUplink
from guest_drivers.agent import Agent
from guest_drivers.poll import PollConfig
from guest_drivers.sender import EVENT, REPORT, BenchSender
from guest_drivers.vf import VfDriver
from tests.unit.drivers.drivers_fakes import (
    HOST,
    ModelPlatform,
    locked_runner,
    wait_for,
)
from tests.unit.drivers.drivers_inprocess import InProcessBackend

POLL = PollConfig(max_sleep_s=0.005, health_s=0.05)


def test_send_batch_accepts_up_to_the_backlog_and_counts_refusals() -> None:
    lock = threading.RLock()
    uplink = QueueUplink()
    adapter = Adapter(AdapterConfig(total_vfs=1), clock=ManualClock(), uplink=uplink)
    adapter.pf.enable_vfs(1)
    plat = ModelPlatform(adapter, locked_runner(lock))
    agent = Agent(InProcessBackend(plat, adapter, lock), poll=POLL,
                  vf_options={"backlog": 100})
    try:
        agent.start()
        vf = agent.drivers["vf0"]
        assert isinstance(vf, VfDriver)
        good = bytes.fromhex("02feeeeeee01") + vf.mac + b"\x88\xb5" + bytes(46)
        frames = [good] * 150 + [b"runt"]
        accepted = vf.send_batch(frames)
        assert 100 <= accepted <= 150  # the worker may drain some while we queue
        assert vf.wait_tx_done(10)
        c = vf.counters()["tx"]
        assert c["submitted"] == 151 and c["sent"] == accepted
        assert c["dropped"] == 151 - accepted and c["drop_reasons"]["runt"] == 1
        assert c["balanced"]
        with lock:
            assert len(uplink.take()) == accepted
    finally:
        agent.stop()


def test_bench_send_event_sends_for_the_asked_time_and_reports_the_books() -> None:
    lock = threading.RLock()
    uplink = QueueUplink(maxlen=1000)
    adapter = Adapter(AdapterConfig(total_vfs=2), clock=ManualClock(), uplink=uplink)
    adapter.pf.enable_vfs(2)
    plat = ModelPlatform(adapter, locked_runner(lock))
    agent = Agent(InProcessBackend(plat, adapter, lock), poll=POLL)
    sender = BenchSender(agent.services, agent.drivers)
    try:
        agent.start()
        sender.start()
        # through the platform channel, as the host's benchmark sends them
        plat.push(HOST, "other-event", None)  # ignored
        plat.push(HOST, EVENT, None, vf="vf1", seconds=0.3, size=100, id=7)
        plat.push(HOST, EVENT, None, vf="vf9")
        assert wait_for(lambda: len(sender.results) == 2, 20)
        r, missing = sender.results
        assert r["id"] == 7 and r["vf"] == "vf1" and r["size"] == 100 and r["drained"]
        assert r["sent_in_window"] > 0 and r["fps"] > 0 and r["dropped"] == 0
        assert r["sent_total"] >= r["sent_in_window"]
        assert 0.3 <= r["seconds"] < 2
        with lock:
            assert adapter.vf(1).nic.ledger.tx_sent >= r["sent_total"]
        assert "error" in missing
        reported = plat.report_details(REPORT)
        assert [d.get("id") for d in reported] == [7, None]
        assert "bench-sender-ready" in plat.steps()
        assert agent.drivers["vf1"].counters()["tx"]["balanced"]
    finally:
        sender.stop()
        agent.stop()
