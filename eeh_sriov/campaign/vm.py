"""VM mode: campaign scenarios in real guests (QEMU, the drivers' agent in each guest).

    python -m eeh_sriov campaign run --vm --subset vm-default --out DIR

One `eeh_sriov.system.System` boots the topology's guests once and serves every scenario
in turn (a boot under TCG takes a minute; a scenario seconds). Before each scenario the
topology is made healthy again and checked: a permanently failed adapter PE is reset (the
operator's reset clears the failure and the drivers revive), the freeze limit and armed
reset failures are put back, every PE of a live guest must read state 0 without flags and
every driver of a live guest be up (its last report a probe or a recovery), within
READY_S; otherwise the scenario is an error and so is every later one (the session is
not what the scenarios assume). The freeze limit is raised for the session (max_freezes
SESSION_MAX_FREEZES): every scenario freezes the adapter, and the count would otherwise
reach the topology's limit after a few; `freeze-limit` lowers it to the count so far, as
in harness mode.

The scenario itself runs as in harness mode (eeh_sriov.campaign.run): uplink probes to
every VF of a live guest, the first fault after a seeded delay, follow-ups at their
triggers (a timeline listener), the settle wait, the same oracles and artifacts. What
differs: the drivers are in the guests, so a driver's state is what its last report says
(`drivers_state`); settling waits VM_QUIET_S without a step (guest steps arrive over the
platform channel, later than in-process ones); the bound is VM_BOUND_S; resources (fds,
threads of this process) are not judged; the entries judged are the scenario's own (from
its start) plus the platform's start (the owners).

Faults: everything the platform does itself (adapter-fatal, vf-error, errinjct,
reset-fails, freeze-limit, console-client-gone) and guest-killed (SIGKILL to the guest's
QEMU, as tests/vm/test_faults_vm.py does; the guest is not started again: its functions
are left to the platform, and the scenarios after it drive the guests still alive).
Driver crashes and closed channels need the in-process agent (harness mode); the device
model's death ends the session; neither is in a VM subset.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from device_model import ResetTiming
from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.generate import adapters_matrix, seed_of
from eeh_sriov.campaign.model import Fault, Scenario, Trigger
from eeh_sriov.campaign.observe import Observation
from eeh_sriov.campaign.oracles import check, notes
from eeh_sriov.campaign.pes import is_adapter_pe, is_vf, order
from eeh_sriov.campaign.rig import Rig, topology_path
from eeh_sriov.campaign.run import (
    FaultScheduler,
    append_result,
    drive,
    drivers_end,
    fresh_artifacts,
    model_books,
    pe_history,
    write_artifacts,
)
from eeh_sriov.system import System
from eeh_sriov.topology import Topology, load_topology
from eeh_sriov.traffic import UplinkTraffic, vf_targets
from hypervisor_shim.readiness import DriversNotReady, wait_drivers_ready_async
from qemu_launcher.assets import GuestAssets

VM_BOUND_S = 30.0  # settled within this (a TCG guest's recovery: 1-5 s; spec resets 6 s)
VM_QUIET_S = 1.0  # no decision nor step this long: over (guest steps come in batches)
READY_S = 60.0  # to get the topology healthy between scenarios
BOOT_S = 300.0  # guests booted and every driver probed
SESSION_MAX_FREEZES = 100_000
# a driver's state from its last report of these (other reports say nothing of it)
UP_STEPS = frozenset({Kind.PROBE, Kind.RECOVERED, Kind.NO_FREEZE})
FAILED_STEPS = frozenset({Kind.PERMANENT_FAILURE, Kind.DISCONNECT, Kind.PROBE_FAILED,
                          Kind.FUNCTION_GONE, Kind.ABORTED})
BUSY_STEPS = frozenset({
    Kind.ERROR_DETECTED, Kind.FOUND_FROZEN, Kind.RESTART, Kind.RESET, Kind.RESET_FAILED,
    Kind.RESET_RELEASED, Kind.CONFIGURE, Kind.SLOT_RESET, Kind.MMIO_THAWED,
    Kind.MMIO_ENABLED, Kind.DMA_THAWED, Kind.UNFREEZE_REFUSED, Kind.LOCKOUT_LIFTED,
    Kind.ALL_ONES_CONFIRMED, Kind.ERROR_LOG, Kind.ADAPTER_RECOVERED, Kind.ALLOW_UNFREEZE,
    Kind.CONFIG_LOST, Kind.RINGS_REARMED, Kind.PF_RESET_DONE, Kind.CONFIG_RESTORED,
    Kind.REPLAY, Kind.RESUME})
STEPS = UP_STEPS | FAILED_STEPS | BUSY_STEPS


class VmRig(Rig):
    """A booted System as a campaign rig: the guests' owners, their drivers as the
    timeline shows them, the guest-killed fault."""

    quiet_s = VM_QUIET_S

    def __init__(self, system: System, topo: Topology) -> None:
        super().__init__(system.platform.cfg, system.platform)
        self.system = system
        self.topo = topo
        self.functions = {fn: g.name for g in topo.guests for fn in g.functions}

    def alive(self) -> set[str]:
        return {g.name for g in self.topo.guests if g.name not in self.system.dead}

    def owners(self) -> list[str]:
        return sorted(self.alive())

    def vf_names(self) -> list[str]:
        live = self.alive()
        return sorted((fn for fn, g in self.functions.items() if is_vf(fn) and g in live),
                      key=order)

    def live_functions(self) -> list[str]:
        live = self.alive()
        return sorted(fn for fn, g in self.functions.items() if g in live)

    def drivers_state(self) -> dict[str, tuple[str, bool]]:
        """Each live guest's driver as its last report says: up (probe, recovered),
        failed (permanent failure, disconnect, probe failed), recovering (any other step
        of a recovery: under way)."""
        last: dict[str, str] = {}
        for e in self.plat.timeline.snapshot():
            if e.source == Source.DRIVER and e.kind in STEPS and isinstance(
                    e.data.get("driver"), str):
                last[e.data["driver"]] = e.kind
        out = {}
        for fn in self.live_functions():
            kind = last.get(fn)
            if kind is None:
                out[fn] = ("new", False)
            elif kind in FAILED_STEPS:
                out[fn] = ("failed", False)
            elif kind in UP_STEPS:
                out[fn] = ("up", False)
            else:
                out[fn] = ("recovering", True)
        return out

    def kill_guest(self, owner: str) -> None:
        vm = self.system.machines.get(owner)
        if vm is None or vm.proc is None or vm.proc.returncode is not None:
            raise CampaignError(f"guest {owner} is not running")
        os.killpg(vm.proc.pid, signal.SIGKILL)

    def run_async(self, coro: Any) -> Any:
        """A platform coroutine, from the campaign's threads (as faults.py does)."""
        return asyncio.run(coro)

    def make_healthy(self, timeout: float = READY_S) -> list[str]:
        """Between scenarios: the limit and armed failures put back, a permanently failed
        adapter reset, then wait until every live PE and driver is healthy. What is still
        not (empty: ready)."""
        plat = self.plat
        self.run_async(plat.set_policy(max_freezes=SESSION_MAX_FREEZES))
        for pe in plat.pe_states():
            plat.fail_resets(pe, 0)
        for pe, st in plat.pe_states().items():
            if is_adapter_pe(pe) and "permanent" in st["flags"]:
                self.run_async(plat.reset_pe(pe))
        deadline = time.monotonic() + timeout
        while True:
            why = self.not_ready()
            if not why or time.monotonic() >= deadline:
                return why
            time.sleep(0.2)

    def not_ready(self) -> list[str]:
        live = {self.pe_of(fn) for fn in self.live_functions()}
        why = [f"{pe}: state {st} {list(flags)}" for pe, (st, flags) in self.pe_states().items()
               if pe in live and (st != 0 or flags)]
        why += [f"driver {fn}: {st}" for fn, (st, busy) in self.drivers_state().items()
                if st != "up" or busy]
        return why


# ---------------------------------------------------------------------------- subsets
def vm_subset(name: str, timing: str = "fast", topology: str = "default") -> list[Scenario]:
    """A documented subset for VM mode (docs/campaign.md, "VM mode"): of a topology of
    several adapters, its adapters' matrix without the harness-only faults."""
    if name != "vm-default":
        raise CampaignError(f"no VM subset {name!r} (vm-default)")
    topo = load_topology(topology_path(topology))
    if len(topo.adapters) > 1:
        return adapters_matrix(topology, timing, [a.name for a in topo.adapters], mode="vm")
    pol, drv = "policy", "driver"
    first = Fault("adapter-fatal")

    def s(f: Fault, *ups: tuple[Trigger, Fault]) -> Scenario:
        return Scenario.build(f, tuple(ups), timing=timing, mode="vm",
                              seed=_seed(f.label(), *(t.label() + f2.label() for t, f2 in ups)))
    return [
        s(first),
        s(Fault("vf-error", "vf0")),
        s(Fault("vf-error", "vf2")),
        s(Fault("reset-fails", "adapter", {"times": 1})),
        s(Fault("reset-fails", "adapter", {"times": 2})),
        s(Fault("reset-fails", "vf1", {"times": 1})),
        s(first, (Trigger("reset-hot", "adapter", pol), Fault("adapter-fatal"))),
        s(first, (Trigger("lockout-lifted", "vf1", pol), Fault("adapter-fatal"))),
        s(first, (Trigger("unfreeze-refused", None, pol), Fault("vf-error", "other"))),
        s(first, (Trigger("error-detected", "vf0", drv), Fault("vf-error", "same"))),
        s(first, (Trigger("config-restored", "vf2", drv), Fault("vf-error", "same"))),
        s(first, (Trigger("pe-frozen", "vf0", pol), Fault("reset-fails", "same",
                                                          {"times": 1}))),
        s(first, (Trigger("error-detected", "adapter", drv), Fault("reset-fails", "same",
                                                                   {"times": 2}))),
        s(first, (Trigger("error-detected", "adapter", drv), Fault("errinjct", "same",
                                                                   {"function": 1}))),
        s(first, (Trigger("recovered", "vf1", drv), Fault("errinjct", "same",
                                                          {"function": 17}))),
        s(first, (Trigger("reset-hot", "adapter", pol), Fault("console-client-gone"))),
        s(Fault("vf-error", "vf2"), (Trigger("error-detected", "vf2", drv),
                                     Fault("adapter-fatal"))),
        s(first, (Trigger("adapter-recovered", "adapter", drv), Fault("adapter-fatal"))),
        s(first, (Trigger("recovered", "adapter", drv), Fault("vf-error", "other"))),
        s(Fault("freeze-limit")),
        s(Fault("reset-fails", "adapter", {"times": 3})),
        # last: a killed guest is not started again
        s(first, (Trigger("error-detected", "vf1", drv), Fault("guest-killed", "same"))),
        s(Fault("guest-killed", "g1")),
    ]


def _seed(*parts: str) -> int:
    return seed_of("vm", *parts)


# ---------------------------------------------------------------------------- running
def observe_vm(rig: VmRig, scenario: Scenario) -> Observation:
    """Run `scenario` on the booted rig (healthy); the facts for the oracles."""
    plat = rig.plat
    rng = random.Random(scenario.seed)
    started = plat.timeline.snapshot()
    since = len(started)
    head = tuple(e for e in started if e.kind == Kind.PLATFORM_STARTED)
    plat.timeline.add_listener(rig.sample)
    sched = FaultScheduler(rig, scenario)
    try:
        if scenario.traffic:
            targets = {n: t for n, t in vf_targets(rig.topo).items() if n in rig.vf_names()}
            rig.traffic = UplinkTraffic(plat, targets, rate_hz=50).__enter__()
            for name in targets:
                if rig.traffic.wait_echo_after(name, 0.0, 30) is None:
                    raise CampaignError(f"no traffic through {name} before the fault")
        first, unsettled, traffic = drive(rig, scenario, sched, rng, VM_BOUND_S)
        return Observation(scenario, first.t, head + tuple(plat.timeline.snapshot()[since:]),
                           (first, *sched.applied), tuple(rig.books), traffic,
                           rig.pe_states(), drivers_end(rig), tuple(unsettled), VM_BOUND_S,
                           model_books(rig), rig.cfg.policy.max_reset_failures,
                           no_desc_end=rig.no_desc_now())
    finally:
        if rig.traffic is not None:
            rig.traffic.stop()
            rig.traffic = None
        plat.timeline.remove_listener(rig.sample)
        rig.books = []
        while rig.closers:
            with contextlib.suppress(Exception):
                rig.closers.pop()()


def run_vm_scenario(rig: VmRig, scenario: Scenario, out: Path) -> dict[str, Any]:
    """Make the rig healthy, run and judge `scenario`: its results line."""
    artifacts = fresh_artifacts(out, scenario)
    t0 = time.monotonic()
    verdict, violations, history, fired = "error", [], [], False
    remarks: list[dict[str, Any]] = []
    try:
        if scenario.mode != "vm":
            raise CampaignError(f"{scenario.id}: a {scenario.mode}-mode scenario")
        not_ready = rig.make_healthy()
        if not_ready:
            raise CampaignError(f"not healthy before the scenario: {'; '.join(not_ready)}")
        obs = observe_vm(rig, scenario)
        violations = check(obs)
        remarks = [n.to_json() for n in notes(obs)]
        verdict = "fail" if violations else "pass"
        history = pe_history(obs.books, obs.t0)
        fired = any(not f.first for f in obs.faults)
        write_artifacts(artifacts, obs, violations)
    except Exception as e:
        (artifacts / "error.txt").write_text(f"{e}\n\n{traceback.format_exc()}")
    return {"id": scenario.id, "scenario": scenario.to_json(), "verdict": verdict,
            "violations": [v.to_json() for v in violations], "notes": remarks,
            "duration_s": round(time.monotonic() - t0, 3), "artifacts": str(artifacts),
            "pe_states": history, "trigger_fired": fired, "worker": "vm", "shard": None,
            "version": 1}


async def run_vm(scenarios: list[Scenario], out: Path, assets: GuestAssets, *,
                 topology: str = "default", timing: str = "fast", accel: str = "tcg",
                 say: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Boot the topology once and run `scenarios` in it, in order; their results (also
    appended to out/results.jsonl)."""
    topo = load_topology(topology_path(topology))
    cfg = topo.platform_config(timing=ResetTiming.SPEC if timing == "spec"
                               else ResetTiming.FAST, host_cpus=(), uplink="queue")
    out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    t_boot = time.monotonic()
    async with System(topo, out / "system", assets, accel=accel, platform_config=cfg) as system:
        try:
            await wait_drivers_ready_async(system.platform.timeline, topo.guest_pes, BOOT_S,
                                           interval=0.2)
        except DriversNotReady as e:
            raise CampaignError(f"VM mode: {e}") from None
        say(f"vm: {len(topo.guests)} guests up, drivers ready after "
            f"{time.monotonic() - t_boot:.1f} s ({accel})")
        rig = VmRig(system, topo)
        for n, s in enumerate(scenarios, 1):
            r = await asyncio.to_thread(run_vm_scenario, rig, s, out)
            append_result(out / "results.jsonl", r)
            results.append(r)
            rules = sorted({f"{v['oracle']}/{v['rule']}" for v in r["violations"]})
            say(f"[{n}/{len(scenarios)}] {r['verdict']:5} {r['duration_s']:6.2f} s  {s.id}  "
                f"{s.label()}" + (f"  ({', '.join(rules)})" if rules else ""))
    return results
