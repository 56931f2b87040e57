"""Idle VF drivers park (guest_drivers.poll.IdleWatch): once idle, a driver stops waking
itself every max_sleep_s and the process's one watch looks at its RX ring for it, so N
idle drivers cost one wake-up per period instead of N (in a TCG guest each wake-up of a
sleeping thread costs ~0.5 ms of host CPU). Counted on the real platform in harness mode:
eight idle VF drivers' loop iterations while the watch looks, and a frame to a parked
driver still arrives (the watch wakes it)."""

from __future__ import annotations

import threading
import time

from guest_drivers.poll import PollConfig
from tests.support.platform_rig import frame, host_config, running
from tests.support.waiting import wait_for

NVFS = 8
POLL = PollConfig(max_sleep_s=0.01, health_s=1.0)


def test_idle_vf_drivers_park_and_a_frame_still_wakes_one() -> None:
    with running(host_config(nvfs=NVFS)) as rig:
        agent = rig.agent(poll=POLL)
        assert len(agent.start()) == NVFS + 1
        vfs = agent.vf_drivers()
        assert wait_for(lambda: all(vf.poller.parked > 0 for vf in vfs), timeout=30)
        sleeps0 = {vf.name: vf.poller.sleeps for vf in vfs}
        time.sleep(0.8)  # 80 periods of 10 ms: a driver that wakes itself sleeps ~80 times
        woke = {vf.name: vf.poller.sleeps - sleeps0[vf.name] for vf in vfs}
        # parked: one sleep per health check (1 s) while nothing comes
        assert all(n <= 10 for n in woke.values()), woke
        # VF to VF inside the adapter: the receiver is parked, the watch sees the frame
        # at its RX ring's head and wakes it
        sender, receiver = vfs[0], vfs[3]
        parked = receiver.poller.parked
        assert sender.send(frame(sender.mac, receiver.mac, "to-a-parked-driver"))
        got = receiver.recv(timeout=10)
        assert [f[14:14 + 18] for f in got] == [b"to-a-parked-driver"]
        assert receiver.poller.parked >= parked
        for vf in vfs:
            assert vf.ledger_balanced()


def test_the_watch_thread_ends_with_the_last_parked_driver() -> None:
    """A campaign's resources oracle caught it: after the drivers stopped, the process
    kept an `idle-watch` thread (it slept forever waiting for the next park)."""
    def watching() -> bool:
        return any(t.name == "idle-watch" for t in threading.enumerate())

    for _ in range(2):  # and a later park starts the watch again
        with running(host_config(nvfs=2)) as rig:
            agent = rig.agent(poll=POLL)
            agent.start()
            vfs = agent.vf_drivers()
            assert wait_for(lambda: all(vf.poller.parked > 0 for vf in vfs),  # noqa: B023
                            timeout=30)
            assert watching()
            agent.stop()
        assert wait_for(lambda: not watching(), timeout=10)
