"""Run one scenario in harness mode and judge it: the runner behind `campaign run`,
`campaign replay` and the pytest items.

    result = run_scenario(scenario, out_dir)     # one results.jsonl line (a dict)
    append_result(out_dir / "results.jsonl", result)

A run: the topology's platform and drivers start (`rig.HarnessRig`), traffic flows, the
first fault is applied after a delay drawn from the seed (0-20 ms: where the traffic's
probes are when it hits), and each follow-up fault waits for its trigger: a timeline
listener counts the entries that match it from the first fault on and, at the nth, hands
the fault to the campaign's own thread (a listener runs on the thread that recorded the
entry, often the model's loop: it must not block), which waits `delay_ms` and applies it.
Then the run waits, within a bound, until every PE is healthy or permanently failed and
every driver idle, takes the facts (`observe.Observation`), tears everything down,
counts fds and threads against the baseline taken before the start, and asks the oracles.

Artifacts, in `<out>/scenarios/<id>/`: events.jsonl (the platform's timeline),
trace.jsonl (the platform calls, driver steps and faults in order), timeline.md (the
claim's table, the PE diagram, the violations), observation.json (what the oracles read),
scenario.json; error.txt when the run itself failed (verdict "error").
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import random
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.campaign import pes
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.faults import Applied, Context, apply
from eeh_sriov.campaign.model import Scenario, Trigger
from eeh_sriov.campaign.observe import Observation, VfTraffic
from eeh_sriov.campaign.oracles import Violation, check, notes
from eeh_sriov.campaign.oracles import owners as oracle_owners
from eeh_sriov.campaign.rig import HarnessRig, Rig, Sample, topology_config
from eeh_sriov.report import write_timeline_md
from guest_drivers.driver import DriverState
from hypervisor_shim.claim import Step, check_claim
from hypervisor_shim.pe.names import qualify
from hypervisor_shim.timeline import Entry

RESULTS_NAME = "results.jsonl"
BOUND_S = {"fast": 5.0, "spec": 30.0}  # the liveness bound: settled within this ...
BOUND_VFS = 8  # ... for up to this many VFs; beyond, BOUND_PER_VF_S more for each (the
BOUND_PER_VF_S = 0.1  # drivers are threads of one process: 2 x 64 VFs, under a second
# adapter error, settled 5.15 s after the first at load average 8)


def settle_bound(timing: str, vfs: int) -> float:
    """The liveness bound of a scenario with `vfs` VFs driven."""
    return BOUND_S[timing] + BOUND_PER_VF_S * max(0, vfs - BOUND_VFS)
IN_FLIGHT_S = 0.15  # after pausing the traffic, echoes still on their way ...
IN_FLIGHT_MAX_S = 3.0  # ... and at most this long for those of healthy VFs (at load
# average 20 on 2 cores the traffic thread sent a late burst of 30 probes just before the
# pause, whose echoes took over 1 s: they counted lost)


class FaultScheduler:
    """Counts the timeline entries matching each follow-up's trigger (from `arm` on) and
    applies the fault on its own thread when the nth comes (+ delay_ms)."""

    def __init__(self, rig: Rig, scenario: Scenario) -> None:
        self.rig = rig
        self.scenario = scenario
        self.applied: list[Applied] = []
        self.fired: list[bool] = [False] * len(scenario.follow_ups)
        self._counts = [0] * len(scenario.follow_ups)
        self._armed = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[int, float, str | None] | None] = queue.Queue()
        self._outstanding = 0
        self._thread = threading.Thread(target=self._run, name="campaign-faults",
                                        daemon=True)

    def start(self) -> None:
        self.rig.plat.timeline.add_listener(self._on_entry)
        self._thread.start()

    def arm(self) -> None:
        self._armed = True

    def busy(self) -> bool:
        with self._lock:
            return self._outstanding > 0

    def close(self) -> None:
        self.rig.plat.timeline.remove_listener(self._on_entry)
        self._queue.put(None)
        self._thread.join(30)

    def _on_entry(self, e: Entry) -> None:  # any thread: count, hand over, never block
        if not self._armed or e.source not in (Source.POLICY, Source.DRIVER):
            return
        with self._lock:
            for i, (trig, _) in enumerate(self.scenario.follow_ups):
                if self.fired[i] or not trig.matches(e.source, e.kind, e.pe):
                    continue
                self._counts[i] += 1
                if self._counts[i] == trig.nth:
                    self.fired[i] = True
                    self._outstanding += 1
                    self._queue.put((i, time.monotonic() + trig.delay_ms / 1000, e.pe))

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            i, due, pe = item
            time.sleep(max(0.0, due - time.monotonic()))
            _, fault = self.scenario.follow_ups[i]
            ctx = Context(random.Random(f"{self.scenario.seed}:{i}"), pe)
            self.applied.append(apply(self.rig, fault, ctx, first=False))
            with self._lock:
                self._outstanding -= 1


def resources_now() -> dict[str, Any]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return {"fds": fds, "threads": sorted(t.name for t in threading.enumerate())}


def _resources(before: dict[str, Any], wait_s: float = 3.0) -> dict[str, Any]:
    """fds and threads after the teardown against `before` (waiting for stragglers)."""
    deadline = time.monotonic() + wait_s
    while True:
        now = resources_now()
        ok = len(now["fds"]) <= len(before["fds"]) and \
            len(now["threads"]) <= len(before["threads"])
        if ok or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    extra_fds = sorted({v for k, v in now["fds"].items() if before["fds"].get(k) != v})
    extra_threads = list(now["threads"])
    for name in before["threads"]:
        if name in extra_threads:
            extra_threads.remove(name)
    return {"fds": {"before": len(before["fds"]), "after": len(now["fds"]),
                    "extra": extra_fds[:20]},
            "threads": {"before": len(before["threads"]), "after": len(now["threads"]),
                        "extra": extra_threads[:20]}}


def drivers_end(rig: Rig) -> dict[str, str]:
    out = {}
    for name, (state, busy) in rig.drivers_state().items():
        if state == DriverState.UP.value and not busy:
            out[name] = "up"
        else:
            out[name] = state + (", recovery under way" if busy else "")
    return out


def traffic_books(rig: Rig) -> dict[str, VfTraffic]:
    """Stop the rig's traffic (echoes in flight given IN_FLIGHT_S): each VF's probes."""
    tr = rig.traffic
    if tr is None:
        return {}
    tr.pause()
    deadline = time.monotonic() + IN_FLIGHT_MAX_S
    time.sleep(IN_FLIGHT_S)
    healthy = [tr.streams[n] for n, (state, flags) in rig.pe_states().items()
               if n in tr.streams and state == 0 and not flags]
    # the last probe of each healthy VF echoed: those before it have come back too (one
    # path, in order) or were lost for good
    while any(st.sent and st.sent - 1 not in st.seen for st in healthy) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    tr.stop()  # its thread joined: its books are ours to read
    rig.traffic = None
    out = {}
    for name, st in tr.streams.items():
        lost = tuple((seq, t) for seq, t in sorted(st.send_times.items()) if seq not in st.seen)
        out[name] = VfTraffic(lost, st.duplicates, st.sent,
                              st.echo_times[-1][0] if st.echo_times else None)
    return out


def observe(scenario: Scenario, artifacts: Path) -> Observation:
    """Run `scenario` in harness mode; the facts for the oracles (resources not yet)."""
    if scenario.mode != "harness":
        raise CampaignError(f"{scenario.id}: VM mode is not run here (harness only)")
    rng = random.Random(scenario.seed)
    cfg = topology_config(scenario.topology, scenario.timing)
    rig = HarnessRig(cfg, artifacts, traffic=scenario.traffic)
    with rig:
        bound = settle_bound(scenario.timing, len(rig.vf_names()))
        sched = FaultScheduler(rig, scenario)
        first, unsettled, traffic = drive(rig, scenario, sched, rng, bound)
        return Observation(scenario, first.t, tuple(rig.plat.timeline.snapshot()),
                           (first, *sched.applied), tuple(rig.books), traffic,
                           rig.pe_states(), drivers_end(rig), tuple(unsettled), bound,
                           model_books(rig), cfg.policy.max_reset_failures,
                           no_desc_end=rig.no_desc_now())


def drive(rig: Rig, scenario: Scenario, sched: FaultScheduler, rng: random.Random,
          bound: float) -> tuple[Applied, list[str], dict[str, VfTraffic]]:
    """A scenario's faults on a running rig (either mode): the follow-ups armed, the
    first fault after a seeded 0-20 ms, then until everything settles (at most `bound`
    s); the first fault as applied, what did not settle, and the traffic's books."""
    sched.start()
    try:
        time.sleep(rng.uniform(0.0, 0.02))
        sched.arm()
        first = apply(rig, scenario.first, Context(rng), first=True)
        unsettled = rig.settled(bound, busy=sched.busy)
    finally:
        sched.close()
    return first, list(unsettled), traffic_books(rig)


def model_books(rig: Rig) -> dict[str, bool]:
    """Whether each function's own ledger balances (nothing when the model is dead)."""
    plat = rig.plat
    if plat.model_failure is not None:
        return {}
    return plat.call(lambda: {n: f.nic.balanced for n, f in rig.model_functions().items()})


def pe_history(books: tuple[Sample, ...], t0: float) -> list[dict[str, Any]]:
    """The PE-state history for the swimlanes: each PE's (state, flags) at the first fault
    (t 0) and whenever it changed after, in seconds since the first fault."""
    start: dict[str, tuple[int, tuple[str, ...]]] = {}
    last: dict[str, tuple[int, tuple[str, ...]]] = {}
    out: list[dict[str, Any]] = []
    for s in books:
        if s.t < t0:
            start.update(s.states)
            last.update(s.states)
            continue
        for pe, st in s.states.items():
            if last.get(pe) != st:
                last[pe] = st
                out.append({"t": round(s.t - t0, 6), "pe": pe, "state": st[0],
                            "flags": list(st[1])})
    return [{"t": 0.0, "pe": pe, "state": st[0], "flags": list(st[1])}
            for pe, st in sorted(start.items())] + out


def write_trace(path: Path, obs: Observation) -> None:
    """The platform calls, the drivers' steps and the faults, in order."""
    lines = [(e.t, e.to_json()) for e in obs.entries
             if e.source in (Source.CALL, Source.DRIVER)]
    lines += [(f.t, f.to_json()) for f in obs.faults]
    with path.open("w") as out:
        for _, obj in sorted(lines, key=lambda x: x[0]):
            out.write(json.dumps(obj, default=str) + "\n")


def write_artifacts(artifacts: Path, obs: Observation, violations: list[Violation]) -> None:
    (artifacts / "observation.json").write_text(json.dumps(obs.to_json(), default=str))
    write_trace(artifacts / "trace.jsonl", obs)
    steps = claim_steps(obs)
    write_timeline_md(artifacts / "timeline.md", f"{obs.scenario.id}: "
                      f"{obs.scenario.label()}", steps, obs.entries, obs.t0)
    with (artifacts / "timeline.md").open("a") as f:
        f.write("## Violations\n\n" + ("\n".join(
            f"- **{v.oracle}/{v.rule}** ({v.pe or '-'}, t={v.t}): {v.detail}"
            for v in violations) or "none") + "\n\n## Notes\n\n" + ("\n".join(
            f"- **{n.rule}** ({n.pe or '-'}, t={n.t}): {n.detail}" for n in notes(obs))
            or "none") + "\n\n## Faults\n\n" + "\n".join(
            f"- {f.t - obs.t0:+.4f} s {f.label} -> {f.target}"
            + (f" (not applied: {f.error})" if f.error else "") for f in obs.faults) + "\n")


def claim_steps(obs: Observation) -> list[Step]:
    """The claim's steps since the first fault: of the only adapter; of several, of each
    adapter whose PE froze, each step named with its adapter."""
    owners = oracle_owners(obs)
    adapters = sorted({pes.adapter_of(fn) for fn in owners}) or [""]
    out: list[Step] = []
    for a in adapters:
        pe = pes.adapter_pe(a)
        if len(adapters) > 1 and not any(
                e.pe == pe and e.kind == Kind.PE_FROZEN and e.t >= obs.t0
                for e in obs.entries):
            continue
        vfs = {n: o for n, o in owners.items() if pes.is_vf(n) and pes.adapter_of(n) == a}
        steps = check_claim(obs.entries, pf_owner=owners.get(qualify(a, "pf"), ""), vfs=vfs,
                            since=obs.t0, adapter_pe=pe)
        out += [dataclasses.replace(s, title=f"{a}: {s.title}") if a else s for s in steps]
    return out


def fresh_artifacts(out: Path, scenario: Scenario) -> Path:
    """`out/scenarios/<id>/`, emptied of a previous run's, with scenario.json."""
    artifacts = out / "scenarios" / scenario.id
    if artifacts.exists():
        shutil.rmtree(artifacts)
    artifacts.mkdir(parents=True)
    (artifacts / "scenario.json").write_text(json.dumps(scenario.to_json(), indent=1))
    return artifacts


def run_scenario(scenario: Scenario, out: Path, *, worker: str = "main",
                 shard: str | None = None) -> dict[str, Any]:
    """Run and judge `scenario`; its results line (the contract in docs/campaign.md)."""
    artifacts = fresh_artifacts(out, scenario)
    started = time.monotonic()
    before = resources_now()
    verdict, violations, history, fired = "error", [], [], False
    remarks: list[dict[str, Any]] = []
    try:
        obs = observe(scenario, artifacts)
        obs = Observation(**{**obs.__dict__, "resources": _resources(before)})
        violations = check(obs)
        remarks = [n.to_json() for n in notes(obs)]
        verdict = "fail" if violations else "pass"
        history = pe_history(obs.books, obs.t0)
        fired = any(not f.first for f in obs.faults)
        write_artifacts(artifacts, obs, violations)
    except Exception:
        (artifacts / "error.txt").write_text(traceback.format_exc())
    return {"id": scenario.id, "scenario": scenario.to_json(), "verdict": verdict,
            "violations": [v.to_json() for v in violations], "notes": remarks,
            "duration_s": round(time.monotonic() - started, 3), "artifacts": str(artifacts),
            "pe_states": history, "trigger_fired": fired, "worker": worker, "shard": shard,
            "version": 1}


def append_result(path: Path, result: dict[str, Any]) -> None:
    """One line, written whole (O_APPEND: lines of parallel writers do not interleave)."""
    data = (json.dumps(result, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The results in `path` by scenario id (the last line of an id wins)."""
    out = {}
    try:
        text = path.read_text()
    except OSError as e:
        raise CampaignError(f"cannot read {path}: {e.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)
            out[str(obj["id"])] = obj
        except (ValueError, KeyError, TypeError):
            raise CampaignError(f"{path}:{n}: not a results line") from None
    return out


def trigger_of(scenario: Scenario) -> Trigger | None:
    return scenario.follow_ups[0][0] if scenario.follow_ups else None
