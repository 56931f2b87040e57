"""A settled VF driver echoes sparse probes with one wake-up each (guest_drivers.poll:
the IdleWatch wakes it for the probe; once the echo is posted it parks again at once, no
busy phase, no ladder of short sleeps, and its echo's TX completion waits for the next
wake-up, guest_drivers.vf_netdev.TX_REAP_S). In a TCG guest each wake-up of a sleeping
thread costs ~0.5 ms of host CPU: the ladder's three per echo were most of a client
guest's steady state under bench.scale's probes (docs/reliability.md). Counted on the
real platform in harness mode, as a one-CPU guest polls (no spinning): the drivers'
sleeps per echoed probe at bench.scale's 10 probes a second per VF, and the books; and
the watch's thread lives on through the rounds of probes (each round wakes every parked
driver: a thread that ended there was started again at the next park, every round)."""

from __future__ import annotations

import time

from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers import poll
from guest_drivers.poll import PollConfig
from tests.support.platform_rig import host_config, running
from tests.support.waiting import wait_for

NVFS = 4
# the agent's defaults in a one-CPU guest (spinners 0)
POLL = PollConfig(max_sleep_s=0.03, health_s=1.0, spinners=0)


def test_a_sparse_probe_costs_one_wake_up() -> None:
    with running(host_config(nvfs=NVFS)) as rig:
        agent = rig.agent(poll=POLL)
        assert len(agent.start()) == NVFS + 1
        vfs = agent.vf_drivers()
        targets = {vf.name: Target(vf.mac, vf.vlan) for vf in vfs}
        with UplinkTraffic(rig.plat, targets, rate_hz=10) as traffic:
            assert all(traffic.wait_echo_after(vf.name, 0.0, 20) for vf in vfs)
            assert wait_for(lambda: all(vf.poller.parked > 0 for vf in vfs), 20)
            time.sleep(0.5)  # every driver woken by the watch for a probe since: settled
            before = {vf.name: (vf.poller.sleeps, vf.echoed) for vf in vfs}
            threads = poll.WATCH.threads
            time.sleep(3.0)  # ~30 probes a VF
            after = {vf.name: (vf.poller.sleeps, vf.echoed) for vf in vfs}
            threads = poll.WATCH.threads - threads
            traffic.pause()
            time.sleep(0.5)
            stats = traffic.stats(in_flight_s=0.5)
        sleeps = sum(after[n][0] - before[n][0] for n in after)
        echoed = sum(after[n][1] - before[n][1] for n in after)
        assert echoed >= 10 * NVFS, (before, after)
        # one park per probe, plus each driver's health check once a second and now and
        # then a probe that came while its driver was awake; the ladder made it three
        assert sleeps / echoed < 1.6, (sleeps, echoed, before, after)
        assert threads <= 2, threads  # ~30 rounds of probes
        for name, st in stats.items():
            assert st["lost"] == 0 and st["duplicates"] == 0, (name, st)
        for vf in vfs:  # the last echoes' completions are reaped by TX_REAP_S at the latest
            assert vf.wait_tx_done(5) and vf.ledger_balanced(), vf.counters()
            c = vf.counters()["tx"]
            assert c["sent"] == c["posted"] and c["dropped"] == 0, c
