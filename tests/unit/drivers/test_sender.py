"""The benchmarks' sender (guest_drivers.sender) and VfDriver.send_batch, on the real
platform in harness mode: frames as fast as the driver takes them, exact books."""

from __future__ import annotations

from guest_drivers.driver import Driver
from guest_drivers.sender import EVENT, REPORT, BenchSender
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST
from tests.support.platform_rig import host_config, running
from tests.support.waiting import wait_for


def test_send_batch_accepts_up_to_the_backlog_and_counts_refusals() -> None:
    with running(host_config(nvfs=1)) as rig:
        agent = rig.agent(vf_options={"backlog": 100})
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
        assert len(rig.uplink()) == accepted


def test_bench_send_event_sends_for_the_asked_time_and_reports_the_books() -> None:
    with running(host_config(nvfs=2)) as rig:
        agent = rig.agent()
        agent.start()
        drivers: dict[str, Driver] = agent.drivers
        sender = BenchSender(agent.services, drivers)
        try:
            sender.start()
            # through the platform channel, as the host's benchmark sends them
            rig.push(HOST, "other-event", None)  # ignored
            rig.push(HOST, EVENT, None, vf="vf1", seconds=0.3, size=100, id=7)
            rig.push(HOST, EVENT, None, vf="vf9")
            assert wait_for(lambda: len(sender.results) == 2, 20)
            r, missing = sender.results
            assert r["id"] == 7 and r["vf"] == "vf1" and r["size"] == 100 and r["drained"]
            assert r["sent_in_window"] > 0 and r["fps"] > 0 and r["dropped"] == 0
            assert r["sent_total"] >= r["sent_in_window"]
            assert 0.3 <= r["seconds"] < 2
            assert rig.model(lambda: rig.plat.adapter.vf(1).nic.ledger.tx_sent) \
                >= r["sent_total"]
            assert "error" in missing
            assert wait_for(lambda: len(rig.details(REPORT)) == 2)
            assert [d.get("id") for d in rig.details(REPORT)] == [7, None]
            assert "bench-sender-ready" in rig.steps()
            assert agent.drivers["vf1"].counters()["tx"]["balanced"]
        finally:
            sender.stop()
