"""The claim in harness mode: the adapter PE and 8 VF PEs under the host's uplink traffic,
the adapter driver and 8 VF drivers on the host (guest_drivers.harness's agent), the real
platform; the 11 steps of hypervisor_shim.claim checked on the platform's timeline, and
the traffic's books (every probe echoed once, none lost) once it settles."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from device_model import ResetTiming
from device_model.nic.port import Ledger
from eeh_abi.vf_settings import VfSettings
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.poll import PollConfig
from guest_drivers.vf import VfDriver
from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.platform_rig import holding_backend
from tests.support.waiting import wait_for

NVFS = 8


def ledger(plat: Platform, name: str) -> Ledger:
    """A copy of function `name`'s books in the device model (on its loop thread)."""
    return plat.adapter.function(name).nic.ledger.copy()


def test_claim_adapter_error_with_eight_vfs_under_traffic(tmp_path: Path) -> None:
    owners = {"pf": HOST, **{f"vf{n}": HOST for n in range(NVFS)}}
    settings = {1: VfSettings("02:ee:00:00:01:01", 100, 1500, True),
                2: VfSettings("02:ee:00:00:01:02", None, 9000, False)}
    # the adapter PE's reset is held 100 ms, and the adapter driver's allow-unfreeze waits
    # until every VF driver met the lockout (on a loaded machine the hold alone was not
    # always enough)
    cfg = PlatformConfig(total_vfs=NVFS, enabled_vfs=NVFS, owners=owners, vf_settings=settings,
                         timing=ResetTiming(hold=0.1, settle=0.05, flr=0.01))
    with Platform(cfg, tmp_path) as plat:
        agent = Agent(holding_backend(plat, [f"vf{n}" for n in range(NVFS)]),
                      poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            vfs: list[VfDriver] = agent.vf_drivers()
            targets = {vf.name: Target(vf.mac, vf.vlan) for vf in vfs}
            with UplinkTraffic(plat, targets, rate_hz=50) as traffic:
                assert all(traffic.wait_echo_after(vf.name, 0.0, 10) for vf in vfs)
                t_inject = time.monotonic()
                plat.inject_adapter_error()
                assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered
                                            for d in agent.drivers.values()), 30)
                recovered_at = {e.pe: e.t for e in plat.timeline.entries
                                if e.source == "driver" and e.kind == "recovered"}
                for vf in vfs:
                    t = traffic.wait_echo_after(vf.name, recovered_at[vf.name], 10)
                    assert t is not None, f"no echo from {vf.name} after its recovery"
                    plat.timeline.record("traffic", "traffic-back", pe=vf.name, t=t)
                time.sleep(0.5)
                traffic.pause()
                time.sleep(1.0)  # let the last probes come back
                stats = traffic.stats(in_flight_s=0.5)
            steps = check_claim(plat.timeline.entries, pf_owner=HOST,
                                vfs={vf.name: HOST for vf in vfs}, since=t_inject - 0.001)
            t0 = steps[0].t or t_inject
            print("\n" + "\n".join(s.line(t0) for s in steps))
            failed = first_failure(steps)
            assert failed is None, failed
            # the traffic's books: probes sent during the freeze were missed by the
            # frozen VFs (counted by the model), never duplicated
            for name, st in stats.items():
                assert st["duplicates"] == 0, (name, st)
                assert st["echoed"] > 0, (name, st)
            for vf in vfs:
                c = vf.counters()
                assert c["tx"]["balanced"] and c["rx"]["balanced"], (vf.name, c)
                assert c["tx"]["dropped"] == 0 and c["tx"]["errors"] == 0, (vf.name, c)
                model = plat.call(partial(ledger, plat, vf.name))
                assert model.tx_sent == c["tx"]["sent"], vf.name
                assert model.rx_delivered == c["rx"]["received"], vf.name
                assert stats[vf.name]["echoed"] == c["echoed"], (vf.name, stats[vf.name])
                assert stats[vf.name]["sent"] == stats[vf.name]["echoed"] + \
                    stats[vf.name]["lost"] + stats[vf.name]["in_flight"]
            # every probe that got no echo is on the model's books: missed by its frozen
            # VF, or dropped by the adapter's switch while the adapter was failed or in
            # reset (either way)
            missed = sum(plat.call(partial(ledger, plat, vf.name)).rx_missed for vf in vfs)
            switch_dropped = plat.call(lambda: plat.adapter.switch.dropped_total)
            lost = sum(st["lost"] for st in stats.values())
            assert lost == missed + switch_dropped, (lost, missed, switch_dropped, stats)
            assert all(st["in_flight"] == 0 for st in stats.values()), stats
        finally:
            agent.stop()
