"""A VF driver woken by `lockout-lifted` sends no line ahead of its first unfreeze: the
platform answers every VF's first unfreeze after a lift in turn on its one loop thread,
so a report line ahead of each would delay the unfreezes of every VF after it. Its
`lockout-lifted` report goes once that unfreeze is answered (guest_drivers.recovery_steps),
with the real drivers against the real platform, the lockout met by every VF."""

from __future__ import annotations

from pathlib import Path

from guest_drivers.agent import Agent
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.platform_rig import holding_backend
from tests.support.waiting import wait_for

NVFS = 4


def test_the_lift_is_reported_after_the_unfreeze_it_let_through(tmp_path: Path) -> None:
    names = [f"vf{n}" for n in range(NVFS)]
    cfg = PlatformConfig(total_vfs=NVFS, enabled_vfs=NVFS,
                         owners={"pf": HOST, **dict.fromkeys(names, HOST)})
    with Platform(cfg, tmp_path) as plat:
        agent = Agent(holding_backend(plat, names), poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            plat.inject_adapter_error()
            assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered >= 1
                                        for d in agent.drivers.values()), 30)
        finally:
            agent.stop()
        tl = plat.timeline.snapshot()
    for name in names:
        lift = next(i for i, e in enumerate(tl) if (e.source, e.kind, e.pe) ==
                    ("policy", "lockout-lifted", name))
        unfreeze = next(i for i, e in enumerate(tl) if i > lift and e.pe == name
                        and e.source == "call" and e.data.get("status") == 0
                        and e.kind in ("set-slot-reset", "set-eeh-option"))
        # nothing of this VF's driver reaches the platform between its lift and its unfreeze
        # but, when the lift came before the refused thread had written its held report of
        # that refusal, the report itself: it rides in the retry's write, just ahead of it
        # (eeh_abi.report_runs: a request naming the PE closes its run)
        between = [e.kind for e in tl[lift + 1:unfreeze]
                   if e.pe == name and e.source in ("driver", "call")
                   and e.kind != "unfreeze-refused"]
        assert between == [], (name, between)
        report = [i for i, e in enumerate(tl) if (e.source, e.kind, e.pe) ==
                  ("driver", "lockout-lifted", name)]
        assert len(report) == 1 and report[0] > unfreeze, (name, report, unfreeze)
        assert tl[report[0]].data.get("by") == "event"
