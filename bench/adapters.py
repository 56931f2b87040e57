"""Two adapters, harness mode (no VM): an error on one while the other's VFs pass traffic,
and both failing at once.

    .venv/bin/python -m bench.adapters [--quick] [--vfs 64] [--repeats 5] [--rate 5]
                                       [--json FILE] [--dir DIR]

`eeh_sriov/topologies/two-adapters-harness.toml` (nic0 and nic1, 64 VFs each, fast reset
timing; `--vfs N` gives both N), with the policy's max_freezes raised so that repeated
adapter errors never make a PE permanently failed. One process holds everything: the
platform (both adapters' device models on its one loop thread, the vfio-user server, each
adapter's PE policy, the platform-call server and its timeline), and one agent
(guest_drivers.agent.Agent over the harness backend, as bench.recovery's points) with both
adapter drivers and a VF driver for every VF. The host probes every VF of each adapter
through that adapter's uplink (eeh_sriov.traffic.UplinkTraffic, `--rate` Hz per VF; its
books count every probe sent, echoed, lost). 5 Hz, not bench.recovery's 20: at 20 Hz the
probes and echoes of 128 VFs alone kept the one interpreter busy (the quiet window's CPU
~1 s per s, measured), so A's recovery measured the GIL's contention (3-11 s) rather
than the recovery (0.3-0.7 s at 5 Hz, the quiet window's CPU ~0.3-0.4 s per s).
Each echo is also stamped on the model's thread as the switch hands it to the uplink
(`EchoStamps`); the probe carries its send time, so a probe's latency (send -> echo) and a
VF's return are not quantized by the probe period, and a VF is sent one more probe as soon
as it reports `recovered` (bench.guests.Kicker).

Measured, `--repeats` times each:
- an adapter error on nic0 (A) while nic1 (B) passes traffic: injection -> every VF of A
  passes traffic again (an echo of a probe sent after the injection); B's probes lost
  (sent from just before the injection until A is back, settled: goal 0, and B's books
  over the whole phase), B's probe latency while A recovers against the same over a quiet
  window just before; B's PEs' freeze count at the end (0: untouched); host CPU of the
  process per recovery, and at the quiet window's rate over the same length;
- both adapters failing at once (two injections back to back, their gap reported):
  injection -> every VF of both passes traffic again; host CPU per recovery;
- peak RSS of the process, start-up time (platform and 2 x (1 + N) drivers ready).
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from bench import goals
from bench.guests import KICK_SEQ, Kicker, lost_between
from bench.recovery import thread_cpu
from bench.stats import dist, scalar
from eeh_abi import traffic as T
from eeh_sriov.topology import load_topology
from eeh_sriov.topology_types import HarnessSpec, Topology
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from hypervisor_shim.pe import HOST
from hypervisor_shim.pe.names import split
from hypervisor_shim.platform import Platform
from qemu_launcher.assets import REPO

TOPOLOGY = REPO / "eeh_sriov" / "topologies" / "two-adapters-harness.toml"
WAIT_S = 60.0  # a hang guard for one recovery
QUIET_S = 1.0  # the quiet window before each injection


def topology(nvfs: int) -> Topology:
    """The shipped two-adapter harness topology with `nvfs` VFs per adapter, every VF
    driven on the host, and max_freezes raised."""
    topo = load_topology(TOPOLOGY)
    adapters = tuple(dataclasses.replace(
        a, total_vfs=nvfs, enabled_vfs=nvfs,
        policy=dataclasses.replace(topo.policy_of(a), max_freezes=100_000))
        for a in topo.adapters)
    return dataclasses.replace(topo, adapter=adapters[0], adapters=adapters,
                               harness=HarnessSpec(nvfs))


class EchoStamps(deque):  # type: ignore[type-arg]
    """Replaces an adapter's in-process uplink's `sent` queue: every echo of the host's
    probes is stamped as the switch sends it (on the model's thread) before it is kept
    for the host's port (UplinkTraffic's books) as before."""

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = list(names)
        self.t_inject = float("inf")
        self.back: dict[str, float] = {}  # VF -> first echo of a probe sent after t_inject
        self.all_back = threading.Event()
        self.last: dict[str, float] = {}  # VF -> its last echo
        self.latency: list[tuple[float, float]] = []  # (probe sent, echo - sent), s

    def arm(self, t_inject: float) -> None:
        self.back = {}
        self.all_back.clear()
        self.t_inject = t_inject

    def append(self, frame: bytes) -> None:
        p = T.parse(frame)
        if p is not None and p.kind == T.ECHO and p.stream == 0 and \
                0 <= p.target < len(self.names):
            now, sent = time.monotonic(), p.t_ns / 1e9
            name = self.names[p.target]
            self.last[name] = now
            if p.seq < KICK_SEQ:
                self.latency.append((sent, now - sent))
            if sent > self.t_inject and name not in self.back:
                self.back[name] = now
                if len(self.back) == len(self.names):
                    self.all_back.set()
        super().append(frame)

    def latencies(self, t_from: float, t_to: float) -> list[float]:
        """Latencies (ms) of the probes sent in [t_from, t_to]."""
        return [d * 1000 for s, d in list(self.latency) if t_from <= s <= t_to]

    def steady(self, period: float, timeout: float) -> bool:
        """Every VF echoed within the last two probe periods."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if all(now - self.last.get(n, 0.0) < 2 * period + 0.05 for n in self.names):
                return True
            time.sleep(0.01)
        return False


class Side:
    """One adapter's traffic: the host's probes, the echo stamps, the kicks."""

    def __init__(self, plat: Platform, adapter: str, targets: dict[str, Target],
                 rate_hz: float, stack: ExitStack) -> None:
        self.adapter = adapter
        self.names = list(targets)
        self.stamps = EchoStamps(self.names)
        uplink = plat.host.uplinks[adapter]
        plat.call(lambda: setattr(uplink, "sent", self.stamps))
        self.traffic = stack.enter_context(UplinkTraffic(plat, targets, rate_hz=rate_hz,
                                                         keep_frames=0, adapter=adapter))
        self.kicker = Kicker(self.traffic, self.names)
        stack.callback(self.kicker.close)
        plat.timeline.add_listener(self.kicker.on_entry)
        stack.callback(plat.timeline.remove_listener, self.kicker.on_entry)

    def arm(self, t0: float) -> None:
        self.stamps.arm(t0)
        self.kicker.t_inject = t0

    def lost(self, t_from: float, t_to: float) -> int:
        return sum(lost_between(self.traffic, n, t_from, t_to) for n in self.names)


def run(nvfs: int, repeats: int, rate_hz: float, run_dir: Path,
        say: Any = print) -> dict[str, Any]:
    topo = topology(nvfs)
    names = [a.name for a in topo.adapters]
    a_name, b_name = names
    t_start = time.monotonic()
    with ExitStack() as stack:
        plat = stack.enter_context(Platform(topo.platform_config(), run_dir))
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))))
        stack.callback(agent.stop)
        ready = agent.start(probe_timeout=WAIT_S * 2)
        if len(ready) != 2 * (nvfs + 1):
            raise RuntimeError(f"drivers not ready: {len(ready)} of {2 * (nvfs + 1)} "
                               f"({dict(agent.failed)})")
        startup_s = time.monotonic() - t_start
        sides = {}
        for a in names:
            targets = {vf.name: Target(vf.mac) for vf in agent.vf_drivers()
                       if split(vf.name)[0] == a}
            sides[a] = Side(plat, a, targets, rate_hz, stack)
        say(f"adapters: 2 x {nvfs} VFs ready in {startup_s:.1f} s; {repeats} errors on "
            f"{a_name}, then {repeats} on both")
        period = 1.0 / rate_hz
        one: list[dict[str, Any]] = []
        both: list[dict[str, Any]] = []
        b_phase: dict[str, Any] = {}
        for hit, out in (([a_name], one), (names, both)):
            phase_start = time.monotonic()
            for k in range(repeats):
                rec = recover_once(plat, [sides[a] for a in hit], sides[b_name], period, k)
                out.append(rec)
                say(f"  {'+'.join(hit)} error {k + 1}: " + (
                    f"every VF back in {rec['recovery_ms']:.0f} ms, CPU {rec['cpu_s']:.2f} s"
                    if not rec["not_back"] else f"not back: {rec['not_back'][:8]}"))
                if rec["not_back"]:
                    break  # the next error would find traffic not flowing
                time.sleep(0.1)
            if hit == [a_name]:  # B's probes of this phase settle: its losses
                time.sleep(1.0)
                for rec in one:
                    t0, t_back = rec.pop("t")
                    rec["b_lost"] = sides[b_name].lost(t0 - period, t_back)
                books = sides[b_name].traffic.stats(in_flight_s=0.5)
                b_phase = {"lost": sum(st["lost"] for st in books.values()),
                           "sent": sum(st["sent"] for st in books.values()),
                           "seconds": round(time.monotonic() - phase_start, 1),
                           "freezes": plat.pe_states()[b_name]["freeze_count"]}
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"vfs": nvfs, "repeats": repeats, "rate_hz": rate_hz,
            "startup_s": round(startup_s, 2), "one": one, "both": both,
            "b_phase": b_phase, "maxrss_mib": round(maxrss, 1)}


def recover_once(plat: Platform, hit: list[Side], b: Side, period: float, k: int
                 ) -> dict[str, Any]:
    """One error on each adapter of `hit` (back to back), after a quiet window: until
    every VF of every adapter hit passes traffic again (or WAIT_S); B's probe latencies
    in the quiet window and during the recovery when B is not hit."""
    for s in {id(x): x for x in (*hit, b)}.values():
        if not s.stamps.steady(period, 10):
            raise RuntimeError(f"traffic does not flow through every VF of {s.adapter}")
    tq, c0 = time.monotonic(), time.process_time()
    time.sleep(QUIET_S)
    quiet_cpu = (time.process_time() - c0) / (time.monotonic() - tq)
    t0 = time.monotonic()
    for s in hit:
        s.arm(t0)
    cpu0, by0 = time.process_time(), thread_cpu()
    gap = []
    for s in hit:
        plat.inject_adapter_error(f"bench {k + 1}", adapter=s.adapter)
        gap.append(time.monotonic())
    not_back = []
    for s in hit:
        if not s.stamps.all_back.wait(WAIT_S):
            not_back += sorted(set(s.names) - set(s.stamps.back))
    t_back = max((t for s in hit for t in s.stamps.back.values()), default=t0)
    cpu = time.process_time() - cpu0
    rec: dict[str, Any] = {
        "recovery_ms": None if not_back else round((t_back - t0) * 1000, 3),
        "not_back": not_back, "cpu_s": round(cpu, 4),
        "quiet_cpu_s_same_length": round(quiet_cpu * (t_back - t0), 4),
        "cpu_by_thread_s": {g: round(v - by0.get(g, 0.0), 3)
                            for g, v in thread_cpu().items()},
        "injection_gap_ms": round((gap[-1] - gap[0]) * 1000, 3)}
    if b not in hit:
        rec["b_latency_quiet_ms"] = b.stamps.latencies(tq, t0)
        rec["b_latency_during_ms"] = b.stamps.latencies(t0, t_back)
        rec["t"] = (t0, t_back)  # B's losses are counted once its probes settled
    return rec


def summarize(r: dict[str, Any]) -> dict[str, Any]:
    """The run as a part of results.json: figures, goals, configuration."""
    one, both = r["one"], r["both"]
    n = r["vfs"]
    quiet = [x for rec in one for x in rec["b_latency_quiet_ms"]]
    during = [x for rec in one for x in rec["b_latency_during_ms"]]
    not_back = sum(1 for rec in one + both if rec["not_back"])
    f: dict[str, Any] = {
        "a_recovery": dist([x["recovery_ms"] for x in one if not x["not_back"]], "ms", 1) | {
            "what": f"error on adapter A ({n} VFs) while B passes traffic: injection -> "
                    "every VF of A passes traffic again"},
        "both_recovery": dist([x["recovery_ms"] for x in both if not x["not_back"]], "ms",
                              1) | {
            "what": f"both adapters fail at once (2 x {n} VFs): injection -> every VF of "
                    "both passes traffic again"},
        "b_latency_quiet": dist(quiet, "ms", 2) | {
            "what": "B's probe latency (send -> echo), quiet window before each error"},
        "b_latency_during": dist(during, "ms", 2) | {
            "what": "B's probe latency (send -> echo) while A recovers"},
        "b_lost_per_error": dist([x["b_lost"] for x in one], "frames", 0) | {
            "what": "B's probes lost, sent from the injection until A is back"},
        "b_lost_phase": scalar(r["b_phase"]["lost"], "frames", r["b_phase"]["sent"],
                               what="B's probes lost from the traffic's start until the "
                                    f"errors on A were over ({r['b_phase']['seconds']} s of "
                                    "errors; n = probes sent)"),
        "b_freezes": scalar(r["b_phase"]["freezes"], "freezes", 1,
                            what="B's adapter PE freeze count after the errors on A"),
        "a_cpu": dist([x["cpu_s"] for x in one], "s", 3) | {
            "what": "host CPU per error on A (whole process: platform, both adapters' "
                    "drivers, traffic)"},
        "a_quiet_cpu": dist([x["quiet_cpu_s_same_length"] for x in one], "s", 3) | {
            "what": "host CPU over a quiet window as long as each recovery of A"},
        "both_cpu": dist([x["cpu_s"] for x in both], "s", 3) | {
            "what": "host CPU per error on both at once"},
        "both_injection_gap": dist([x["injection_gap_ms"] for x in both], "ms", 2) | {
            "what": "both at once: the second injection's return after the first's"},
        "startup": scalar(r["startup_s"], "s", 1,
                          what=f"platform start -> 2 x {n + 1} drivers ready"),
        "maxrss": scalar(r["maxrss_mib"], "MiB", 1, what="peak RSS of the process"),
    }
    if f["b_latency_quiet"].get("n") and f["b_latency_during"].get("n"):
        f["b_latency_during_vs_quiet"] = scalar(
            f["b_latency_during"]["p50"] / f["b_latency_quiet"]["p50"], "x",
            f["b_latency_during"]["n"], what="B's probe latency p50, during A's recovery / "
                                             "quiet")
    if f["a_recovery"].get("n") and f["both_recovery"].get("n"):
        f["both_vs_a"] = scalar(f["both_recovery"]["p50"] / f["a_recovery"]["p50"], "x",
                                f["both_recovery"]["n"],
                                what="both at once p50 / A alone p50 (twice the VFs)")
    return {"figures": f,
            "goals": {goals.TWO_B_LOST.name: goals.TWO_B_LOST.result(
                          r["b_phase"]["lost"],
                          what=f"{goals.TWO_B_LOST.figure} ({len(one)} errors, 2 x {n} VFs)"),
                      goals.TWO_EVERY_VF_BACK.name: goals.TWO_EVERY_VF_BACK.result(
                          not_back, what=f"{goals.TWO_EVERY_VF_BACK.figure} ({len(one)} on "
                          f"A, {len(both)} on both; 2 x {n} VFs)")},
            "config": {"vfs": n, "repeats": r["repeats"], "rate_hz": r["rate_hz"],
                       "topology": TOPOLOGY.name, "quiet_s": QUIET_S}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 x 16 VFs, 3 errors of each")
    ap.add_argument("--vfs", type=int, default=None, help="VFs per adapter (64)")
    ap.add_argument("--repeats", type=int, default=None, help="errors of each kind (5)")
    ap.add_argument("--rate", type=float, default=5.0, help="host probes per VF per second")
    ap.add_argument("--json", default=None, help="write the results here (bench.registry)")
    ap.add_argument("--dir", default=None, help="the run's directory (events.jsonl)")
    args = ap.parse_args(argv)
    nvfs = args.vfs or (16 if args.quick else 64)
    if not 1 <= nvfs <= 64:
        ap.error(f"--vfs {nvfs}: 1..64")
    if not 0 < args.rate <= 100:
        ap.error(f"--rate {args.rate:g}: more than 0, at most 100")
    repeats = args.repeats or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="eeh-bench-adapters-") as tmp:
        d = Path(args.dir) if args.dir else Path(tmp)
        d.mkdir(parents=True, exist_ok=True)
        res = summarize(run(nvfs, repeats, args.rate, d))
    for name, fig in res["figures"].items():
        shown = (f"p50 {fig['p50']} p99 {fig['p99']} {fig['unit']} (n={fig['n']})"
                 if "p50" in fig else f"{fig.get('value')} {fig['unit']}")
        print(f"adapters: {name:26} {shown}")
    goals.finish_part(res, args.json, "adapters: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
