"""An echo's host time is when it came back through the uplink, not when the next round of
probes went out (eeh_sriov.traffic.UplinkTraffic reads the uplink each RECEIVE_S between
rounds). It was read once a round: at bench.scale's 10 probes a second every "traffic
back" was up to 0.1 s late, quantized to the rounds. Here the rounds are 4 s apart, so an
echo stamped at the next round would be ~4 s after its probe; on the real platform in
harness mode a VF driver echoes within milliseconds."""

from __future__ import annotations

from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.vf import VfDriver
from tests.support.platform_rig import host_config, running

PERIOD_S = 4.0


def test_an_echo_is_stamped_when_it_comes_back_not_at_the_next_round() -> None:
    with running(host_config(nvfs=1)) as rig:
        agent = rig.agent()
        agent.start()
        vf = next(d for d in agent.drivers.values() if isinstance(d, VfDriver))
        with UplinkTraffic(rig.plat, {vf.name: Target(vf.mac, vf.vlan)},
                           rate_hz=1 / PERIOD_S) as traffic:
            # the first round's echo: read 4 s later (the second round) without the reads
            # in between; the hang catcher leaves room for three rounds
            assert traffic.wait_echo_after(vf.name, 0.0, 3 * PERIOD_S) is not None
            st = traffic.streams[vf.name]
            t_echo, seq = st.echo_times[0]
            delay = t_echo - st.send_times[seq]
        assert 0 <= delay < PERIOD_S / 2, (delay, st.echo_times, st.send_times)
