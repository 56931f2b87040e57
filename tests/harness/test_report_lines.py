"""How many platform-call lines an adapter error's recovery costs, on the real platform
with the real drivers (harness backend, one channel for every driver as in a guest),
counted on the server: the lines the drivers' connection read from the injection until
every VF's driver reported `recovered` (the platform's docs/platform-calls.md).

A VF's recovery after an adapter error is, in lines: the `read-slot-reset-state2` that
confirms its all-ones read (or none: the pushed `pe-frozen`), `error-detected` and its
first unfreeze (refused in the lockout), `unfreeze-refused` and the same unfreeze again
(written by the channel's reader on the lift), `lockout-lifted` and set-slot-reset 0,
`reset` and configure-pe, then one `report` line with `steps` from `configure` to the
waited `recovered`: 10. The report lines of a round are its thread's run until its next
call, not taken along by the other drivers' calls (which cut one VF's run into several
lines), and the waited `recovered` is the run's last step (it was a line of its own:
12 a VF at 16 VFs). The adapter's driver is about as many. The bound leaves a line a
function for a run cut where its thread sleeps (a VF polling the PF's mailbox flushes
what it holds first)."""

from __future__ import annotations

from pathlib import Path

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import host_config, running
from tests.support.waiting import wait_for

NVFS = 8
LINES_PER_FUNCTION = 10 + 1  # a run cut where its thread sleeps


def _lines_in(plat: Platform) -> int:
    return sum(c.lines_in for cs in plat.server.connections.values() for c in cs)


def test_an_adapter_errors_recovery_is_a_few_lines_a_function(tmp_path: Path) -> None:
    names = [f"vf{n}" for n in range(NVFS)]
    with running(host_config(NVFS, vf_settings={}), tmp_path) as rig:
        plat = rig.plat
        agent = rig.agent()
        assert len(agent.start()) == NVFS + 1
        counts = []
        for _ in range(2):
            before = plat.call(lambda: _lines_in(plat))
            t0 = plat.timeline.snapshot()[-1].t
            plat.inject_adapter_error("report lines")

            def recovered(t0: float = t0) -> bool:
                return set(names) <= {e.pe for e in plat.timeline.snapshot()
                                          if e.t > t0 and (e.source, e.kind) == (
                                              Source.DRIVER, Kind.RECOVERED)}

            assert wait_for(recovered, 30), "the functions did not recover"
            counts.append(plat.call(lambda: _lines_in(plat)) - before)
    print("lines per recovery", counts, "per function", [c / (NVFS + 1) for c in counts])
    assert max(counts) <= LINES_PER_FUNCTION * (NVFS + 1), counts
