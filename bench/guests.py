"""Real guests, the default topology (svc: pf; g1: vf0; g2: vf1, vf2), under TCG.

    .venv/bin/python -m bench.guests [--quick] [--injections N] [--spec-injections N]
                                     [--fps-seconds S] [--json FILE]

One topology boot per reset timing (fast, then spec), each run as `make demo` runs it
(eeh_sriov.system.System: the platform, three QEMU guests running the drivers'
agent with its own probe traffic, the console), with the policy's max_freezes raised so
that repeated adapter errors never make the adapter permanently failed. Measured:

- boot to drivers ready (goal: bench.goals.DRIVERS_READY, every guest's drivers ready), per
  guest: how it booted (restored from its saved state, or cold: qemu_launcher.snapshot),
  the restore's load and the go (hot-plug done), QEMU + kernel or restore + initramfs +
  stage 2 (to the readiness marker: the launcher's host clock), python3 start + imports
  (marker -> the agent's first platform call, `query-functions`), and the drivers' probe
  (-> the last `probe` report);
- recovery from an adapter error injected through the platform's QMP console
  (`eeh-inject pe=adapter kind=adapter-fatal`, as an operator does) until every VF passes
  traffic again: the host's numbered probes through the uplink (`--rate` Hz per VF,
  echoed by the VF drivers), plus one probe sent to a VF as soon as it reports
  `recovered`, so that the figure is not quantized by the probe period; the claim's 11
  steps are checked on every recovery;
- frames lost per VF per recovery: the host's probes that were never echoed (those that
  reached a frozen VF; the drivers' own queued frames are replayed, and their books are
  checked balanced);
- frames per second through vf0 (g1), before the first error and after the last: the
  agent's `--sender` mode (guest_drivers.sender) sends 60-byte frames to the uplink as
  fast as the VF driver takes them for `--fps-seconds`; the device model's own TX count
  for vf0 over the same window is reported next to the driver's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from bench import goals
from bench.stats import dist, scalar
from eeh_abi import traffic as T
from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import System, asset_config
from eeh_sriov.topology import DEFAULT_TOPOLOGY, TimingName, Topology, load_topology
from eeh_sriov.traffic import PEER_MAC, Target, UplinkTraffic, guest_traffic_command
from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.readiness import pe_of, readiness, wait_drivers_ready_async
from hypervisor_shim.timeline import Entry
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.run import new_run_dir, resolve_accel

log = logging.getLogger("bench.guests")
KICK_SEQ = 1 << 30  # sequence numbers of the probes sent at a VF's "recovered"
FPS_VF = "vf0"


def topology(timing: str, path: Path = DEFAULT_TOPOLOGY) -> Topology:
    """The topology file at `path` with the adapter's reset timing set to `timing`."""
    if timing not in ("fast", "spec"):
        raise ValueError(f"timing {timing!r}: 'fast' or 'spec'")
    name: TimingName = "spec" if timing == "spec" else "fast"
    return load_topology(path).with_timing(name)


def guest_command(topo: Topology, guest: str) -> str:
    """The agent as the demo runs it (eeh_sriov.traffic.guest_traffic_command), with the
    benchmark sender in the guest that holds vf0."""
    cmd = guest_traffic_command(topo, guest, 10)
    return cmd + " --sender" if FPS_VF in topo.functions_of(guest) else cmd


class Kicker:
    """Sends one probe to a VF as soon as its driver reports `recovered` (off the model's
    thread: the host port's send may itself run on it)."""

    def __init__(self, traffic: UplinkTraffic, names: list[str]) -> None:
        self.traffic = traffic
        self.names = names
        self.t_inject = float("inf")
        self.sent: dict[tuple[str, int], float] = {}
        self._seq = KICK_SEQ
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bench-kick", daemon=True)
        self._thread.start()

    def on_entry(self, e: Entry) -> None:
        if e.source == Source.DRIVER and e.kind == Kind.RECOVERED and e.pe in self.names \
                and e.t > self.t_inject:
            self._q.put(e.pe)

    def _run(self) -> None:
        while (name := self._q.get()) is not None:
            i = self.names.index(name)
            tgt = self.traffic.targets[name]
            self._seq += 1
            frame = T.build(T.Probe(tgt.mac, PEER_MAC, T.PROBE, 0, i, self._seq,
                                    time.monotonic_ns()))
            if tgt.vlan is not None:
                frame = frame[:12] + b"\x81\x00" + tgt.vlan.to_bytes(2, "big") + frame[12:]
            self.sent[(name, self._seq)] = time.monotonic()
            try:
                self.traffic.port.send([frame])
            except Exception as e:  # the uplink went away mid-run: the probe counts as lost
                log.debug("uplink send failed: %s", e)

    def close(self) -> None:
        self._q.put(None)
        self._thread.join(5)


def back_time(traffic: UplinkTraffic, kicker: Kicker, name: str, t0: float) -> float | None:
    """Host time of the first echo from `name` of a probe sent after t0."""
    st = traffic.streams[name]
    with traffic._lock:
        echoes = list(st.echo_times)
        sent = dict(st.send_times)
    for t, seq in echoes:
        if t <= t0:
            continue
        ts = sent.get(seq) if seq < KICK_SEQ else kicker.sent.get((name, seq))
        if ts is not None and ts > t0:
            return t
    return None


def lost_between(traffic: UplinkTraffic, name: str, t_from: float, t_to: float) -> int:
    st = traffic.streams[name]
    with traffic._lock:
        return sum(1 for seq, t in st.send_times.items()
                   if t_from <= t <= t_to and seq not in st.seen)


def boot_phases(system: System, t_start: float) -> dict[str, Any]:
    """Per guest: to the readiness marker, python start + imports, probe; from t_start."""
    entries = system.platform.timeline.snapshot()
    launched = next(e.t for e in entries if e.kind == Kind.GUESTS_STARTING)
    out: dict[str, Any] = {}
    for name, vm in system.machines.items():
        ready_s = float(vm.summary.get("ready_s", 0.0))
        t_marker = launched + ready_s
        query = next((e.t for e in entries if e.source == Source.CALL
                      and e.kind == "query-functions" and e.owner == name), None)
        ready = readiness(entries, {pe_of(f) for f in system.topo.functions_of(name)}).at
        console = (vm.paths.run_dir / "console.log").read_text(errors="replace")
        up = {m: float(v) for m, v in re.findall(r"^(EEH-GUEST-\w+) uptime=([\d.]+)",
                                                 console, re.M)}
        boot = vm.summary.get("boot") or {}  # a staged boot (qemu_launcher.snapshot)
        out[name] = {
            "how": boot.get("how", "cold-plugged"),  # restored, cold (saved), cold-plugged
            "restore_s": boot.get("restore_s"), "go_s": boot.get("go_s"),
            "start_to_marker_s": round(t_marker - t_start, 3),
            "kernel_uptime_at_stage2_s": up.get("EEH-GUEST-STAGE2"),
            "uptime_at_marker_s": up.get("EEH-GUEST-READY"),
            "python_start_s": round(query - t_marker, 3) if query else None,
            "probe_s": round(ready - query, 3) if ready and query else None,
            "drivers_ready_s": round(ready - t_start, 3) if ready else None}
    return out


def boot_kind(run: dict[str, Any]) -> str:
    """How a topology boot's guests started: "restored" when every one restored from its
    saved state (qemu_launcher.snapshot), else "cold" (one booted its kernel: the cache
    lacked its state, or the run keeps none)."""
    hows = [g.get("how") for g in (run.get("boot") or {}).values()]
    return "restored" if hows and all(h == "restored" for h in hows) else "cold"


def judge_boots(runs: list[dict[str, Any]], goal: goals.Goal, what: str,
                first_boot: dict[str, Any] | None) -> dict[str, Any]:
    """The part's boots to drivers ready, as a distribution per kind, and `goal` judged on
    the p50 of the restored boots (with n): a cold boot is not what a user who has booted
    once waits for, and is reported on its own, not hidden. `first_boot` (`save_states`:
    the saved states this run had to make first) is kept as its own figure. With no
    restored boot at all (saved states off or failing) the goal is judged on every boot,
    and says so."""
    by_kind: dict[str, list[float]] = {"restored": [], "cold": []}
    for r in runs:
        if "drivers_ready_s" in r:
            by_kind[boot_kind(r)].append(r["drivers_ready_s"])
    restored, cold = by_kind["restored"], by_kind["cold"]
    out: dict[str, Any] = {
        "drivers_ready": dist(restored, "s") | {
            "what": "restored boots: every guest from its saved state"},
        "drivers_ready_cold": dist(cold, "s") | {
            "what": "cold boots: a guest booted its kernel (its saved state missing)"},
        "first_boot": first_boot or scalar(None, "s", 0, what=FIRST_BOOT)}
    judged = restored or cold
    kind = "restored" if restored else "cold (no restored boot in this run)"
    value = dist(judged, "s").get("p50")
    note = f"{what}, p50 of {len(judged)} {kind} boots"
    if restored and cold:
        note += f" ({len(cold)} cold boots reported apart)"
    out["goal"] = goal.result(value, note)
    return out


FIRST_BOOT = ("first boot on a fresh machine: the guests' kernels boot and their saved "
              "states are made (no drivers)")


async def save_states(path: Path, assets: GuestAssets, accel: str, run_dir: Path,
                      say: Any = print) -> dict[str, Any]:
    """Before a part's boots: the saved state of each guest configuration of the topology
    at `path` that the cache lacks (eeh_sriov.system.System.save_states), so that every
    boot the part judges restores. The figure FIRST_BOOT: its wall time, or None when the
    cache had them all."""
    topo = load_topology(path)
    pcfg = topo.platform_config(host_cpus=(), tap_name=f"eehw{os.getpid() % 10**6}")
    t0 = time.monotonic()
    made = await System(topo, run_dir, assets, accel=accel, platform_config=pcfg
                        ).save_states()
    wall = round(time.monotonic() - t0, 3) if made else None
    if made:
        say(f"  {FIRST_BOOT}: {wall:.1f} s ({', '.join(sorted(made))})")
    return scalar(wall, "s", len(made), what=FIRST_BOOT, saved=made)


async def blast(system: System, seconds: float) -> dict[str, Any]:
    """Frames through vf0 as fast as its driver takes them (the agent's --sender)."""
    plat = system.platform
    owner = system.topo.owner_of(FPS_VF)
    assert owner is not None
    done = threading.Event()
    got: list[dict[str, Any]] = []

    def listen(e: Entry) -> None:
        if e.source == Source.DRIVER and e.kind == Kind.BENCH_SENT and e.owner == owner:
            got.append(e.data)
            done.set()

    ledger = lambda: plat.adapter.function(FPS_VF).nic.ledger.tx_sent  # noqa: E731
    deadline = time.monotonic() + 60  # the agent's sender listens once its drivers are up
    while not any(e.source == Source.DRIVER and e.kind == Kind.BENCH_SENDER_READY
                  and e.owner == owner for e in plat.timeline.snapshot()):
        if time.monotonic() > deadline:
            return {"error": "the guest's sender never reported ready"}
        await asyncio.sleep(0.05)
    plat.timeline.add_listener(listen)
    try:
        m0 = plat.call(ledger)
        t0 = time.monotonic()
        plat.call(lambda: plat.server.push_to(owner, "bench-send", None,
                                              {"vf": FPS_VF, "seconds": seconds, "size": 60}))
        ok = await asyncio.to_thread(done.wait, seconds + 60)
        m1 = plat.call(ledger)
        wall = time.monotonic() - t0
    finally:
        plat.timeline.remove_listener(listen)
    if not ok or not got:
        return {"error": "no bench-sent report from the guest"}
    r = dict(got[0])
    r["model_tx_sent"] = m1 - m0
    r["model_window_s"] = round(wall, 3)
    return r


async def recover_once(system: System, traffic: UplinkTraffic, kicker: Kicker,
                       client: QMPClient) -> dict[str, Any]:
    """One adapter error through the platform's console, measured until every VF in
    `traffic` passes traffic again (at most 60 s), then 1 s more for the last probes of
    the outage; the claim is checked on the timeline since the injection."""
    plat, topo = system.platform, system.topo
    names = list(traffic.targets)
    vfs = {n: topo.owner_of(n) or "" for n in names}
    t0 = time.monotonic()
    kicker.t_inject = t0
    await client.execute("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
    back: dict[str, float] = {}
    deadline = t0 + 60
    while len(back) < len(names) and time.monotonic() < deadline:
        for n in names:
            if n not in back:
                b = back_time(traffic, kicker, n, t0)
                if b is not None:
                    back[n] = b
        await asyncio.sleep(0.01)
    await asyncio.sleep(1.0)  # the last probes of the outage settle
    for n, b in back.items():
        plat.timeline.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=n, t=b)
    entries = [e for e in plat.timeline.snapshot() if e.t >= t0 - 0.001]
    steps = check_claim(entries, pf_owner=topo.owner_of("pf") or "", vfs=vfs,
                        since=t0 - 0.001)
    failed = first_failure(steps)
    ledgers = {e.pe: bool((e.data.get("ledger") or {}).get("balanced"))
               for e in entries if e.source == Source.DRIVER
               and e.kind == Kind.RECOVERED and e.pe in vfs}
    return {"recovery_ms": round((max(back.values()) - t0) * 1000, 3)
            if len(back) == len(names) else None,
            "traffic_back_ms": {n: round((b - t0) * 1000, 3) for n, b in back.items()},
            "not_back": sorted(set(names) - set(back)),
            "lost": {n: lost_between(traffic, n, t0 - 0.5, back.get(n, t0 + 60))
                     for n in names},
            "steps_ms": {s.key: round((s.t - t0) * 1000, 3) if s.t else None
                         for s in steps},
            "claim": "ok" if failed is None else f"{failed.key}: {failed.detail}",
            "ledgers_balanced": ledgers}


async def recoveries(system: System, traffic: UplinkTraffic, injections: int, label: str,
                     say: Any = print) -> list[dict[str, Any]]:
    """`injections` adapter errors one after another (1 s of traffic before each), each
    measured by `recover_once`, with a probe sent to each VF at its `recovered`."""
    plat = system.platform
    kicker = Kicker(traffic, list(traffic.targets))
    plat.timeline.add_listener(kicker.on_entry)
    client = QMPClient("bench")
    await client.connect(str(system.console.platform_path))
    out = []
    try:
        for k in range(injections):
            await asyncio.sleep(1.0)  # traffic before the error
            rec = await recover_once(system, traffic, kicker, client)
            out.append(rec)
            lost = sum(rec["lost"].values())
            not_back = f", not back {rec['not_back']}" if rec["not_back"] else ""
            say(f"{label}: recovery {k + 1}: {rec['recovery_ms']} ms, lost {lost} "
                f"({max(rec['lost'].values())} at most on one VF){not_back}, "
                f"claim {rec['claim']}")
    finally:
        await client.disconnect()
        plat.timeline.remove_listener(kicker.on_entry)
        kicker.close()
    return out


async def run_timing(timing: str, injections: int, fps_seconds: float, rate_hz: float,
                     assets: GuestAssets, accel: str, run_dir: Path,
                     say: Any = print) -> dict[str, Any]:
    topo = topology(timing)
    vfs = {fn: topo.owner_of(fn) or "" for g in topo.guests for fn in g.functions if fn != "pf"}
    targets = {}
    for fn in vfs:
        c = topo.vf_config(int(fn[2:]))
        assert c.mac is not None
        targets[fn] = Target(c.mac, c.vlan)
    # the TAP uplink under a name of its own: a concurrent demo or test may hold eehup0
    pcfg = topo.platform_config(host_cpus=(), tap_name=f"eehb{os.getpid() % 10**6}")
    pcfg = dataclasses.replace(pcfg, policy=dataclasses.replace(pcfg.policy,
                                                                max_freezes=100_000))
    out: dict[str, Any] = {"timing": timing, "run_dir": str(run_dir)}
    t_start = time.monotonic()
    system = System(topo, run_dir, assets, accel=accel, platform_config=pcfg,
                    guest_command=lambda g: guest_command(topo, g.name))
    async with system:
        await wait_drivers_ready_async(system.platform.timeline, topo.guest_pes, 180)
        out["drivers_ready_s"] = round(time.monotonic() - t_start, 3)
        out["boot"] = boot_phases(system, t_start)
        say(f"  {timing}: drivers ready after {out['drivers_ready_s']:.1f} s "
            f"(last probe {max(g['drivers_ready_s'] or 0 for g in out['boot'].values()):.2f} s)")
        plat = system.platform
        names = list(targets)
        with UplinkTraffic(plat, targets, rate_hz=rate_hz) as traffic:
            for name in names:
                if await asyncio.to_thread(traffic.wait_echo_after, name, 0.0, 30) is None:
                    raise RuntimeError(f"no baseline traffic through {name}")
            out["fps_before"] = await blast(system, fps_seconds)
            say(f"  {timing}: {FPS_VF} {out['fps_before'].get('fps')} frames/s before")
            out["recoveries"] = await recoveries(system, traffic, injections,
                                                 f"  {timing}", say)
            out["fps_after"] = await blast(system, fps_seconds)
            say(f"  {timing}: {FPS_VF} {out['fps_after'].get('fps')} frames/s after")
            traffic.pause()
            await asyncio.sleep(0.5)
            out["traffic"] = traffic.stats(in_flight_s=0.5)
            out["rate_hz"] = rate_hz
    return out


def summarize(runs: list[dict[str, Any]],
              first_boot: dict[str, Any] | None = None) -> dict[str, Any]:
    s: dict[str, Any] = {"runs": [], "goals": {}}
    phases: dict[str, list[float]] = {}
    for r in runs:
        for g in r.get("boot", {}).values():
            for k in ("restore_s", "go_s", "start_to_marker_s", "python_start_s", "probe_s",
                      "drivers_ready_s"):
                if g.get(k) is not None:
                    phases.setdefault(k, []).append(g[k])
    boots = judge_boots(runs, goals.DRIVERS_READY,
                        "all three guests' drivers ready after start", first_boot)
    s.update((k, v) for k, v in boots.items() if k != "goal")
    s["boot_phases_per_guest"] = {k: dist(v, "s") for k, v in phases.items()}
    hows = [g.get("how") for r in runs for g in r.get("boot", {}).values()]
    s["guest_boots"] = {h: hows.count(h) for h in sorted(set(map(str, hows)))}
    fps = []
    for r in runs:
        if "error" in r:
            s["runs"].append(r)
            continue
        recs = [x for x in r["recoveries"] if x["recovery_ms"] is not None]
        lost = [v for x in r["recoveries"] for v in x["lost"].values()]
        per_vf = [v for x in recs for v in x["traffic_back_ms"].values()]
        steps: dict[str, list[float]] = {}
        for x in recs:
            for k, v in x["steps_ms"].items():
                if v is not None:
                    steps.setdefault(k, []).append(v)
        for key in ("fps_before", "fps_after"):
            f = r.get(key, {})
            if "fps" in f:
                fps.append(f["fps"])
        s["runs"].append({
            "timing": r["timing"], "recovery": dist([x["recovery_ms"] for x in recs], "ms"),
            "per_vf_traffic_back": dist(per_vf, "ms"),
            "lost_per_vf_per_recovery": dist(lost, "frames"),
            "probe_rate": scalar(r.get("rate_hz"), "probes/s per VF"),
            "steps": {k: dist(v, "ms") for k, v in steps.items()},
            "claim_ok": scalar(sum(1 for x in r["recoveries"] if x["claim"] == "ok"),
                               "recoveries", len(r["recoveries"])),
            "claim_failures": [x["claim"] for x in r["recoveries"] if x["claim"] != "ok"],
            "ledgers_balanced": all(all(x["ledgers_balanced"].values())
                                    for x in r["recoveries"]),
            "fps_before": r.get("fps_before"), "fps_after": r.get("fps_after"),
            "drivers_ready_s": r.get("drivers_ready_s"), "boot_kind": boot_kind(r),
            "boot": r.get("boot"),
            "run_dir": r.get("run_dir")})
    g = s["goals"]
    g[goals.DRIVERS_READY.name] = boots["goal"]
    low = min(fps) if fps else None
    g[goals.FPS_ONE_VF.name] = goals.FPS_ONE_VF.result(
        low, f"frames/s through {FPS_VF} in a TCG guest, lowest of {len(fps)} (before and "
             "after recovery)")
    return s


async def each_timing(bench: str, title: str, path: Path, timings: Sequence[str],
                      injections: dict[str, int], out_dir: Path | None, say: Any,
                      run: Callable[[str, GuestAssets, str, Path],
                                    Awaitable[dict[str, Any]]]
                      ) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, Any]]:
    """What bench.guests and bench.scale share: the guest assets and the accelerator
    resolved once, the saved states of the topology at `path` made if the cache lacks
    them (`save_states`, in `<bench>-first-boot`), then `run(timing, assets, accel,
    run_dir)` for each timing in a directory of its own (`<bench>-<timing>` under
    `out_dir`, or a new run directory), a failure kept as that run's `error`, each run's
    `wall_s`. Returns the runs, how the guests ran (accel, accel_reason, qemu) and the
    first boot's figure (FIRST_BOOT)."""
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    runs_dir = REPO / "runs" / "bench"
    accel, why = await resolve_accel("auto", assets, cfg_assets, runs_dir)
    d = (out_dir / f"{bench}-first-boot") if out_dir else new_run_dir(
        runs_dir, f"{bench}-first-boot")
    try:
        first = await save_states(path, assets, accel, d, say)
    except Exception as e:  # the boots then make them, cold: judged apart all the same
        say(f"  {bench}: saved states not made first: {type(e).__name__}: {e}")
        first = scalar(None, "s", 0, what=FIRST_BOOT, error=f"{type(e).__name__}: {e}")
    runs = []
    for timing in timings:
        d = (out_dir / f"{bench}-{timing}") if out_dir else new_run_dir(runs_dir,
                                                                       f"{bench}-{timing}")
        d.mkdir(parents=True, exist_ok=True)
        say(f"{bench}: {title}, {timing} timing, {injections[timing]} adapter errors")
        t0 = time.monotonic()
        try:
            r = await run(timing, assets, accel, d)
        except Exception as e:
            say(f"  {bench} {timing}: failed: {type(e).__name__}: {e}")
            r = {"timing": timing, "error": f"{type(e).__name__}: {e}", "run_dir": str(d)}
        r["wall_s"] = round(time.monotonic() - t0, 1)
        runs.append(r)
    return runs, {"accel": accel, "accel_reason": why, "qemu": assets.qemu.describe()}, first


async def run_all(timings: Sequence[str], injections: dict[str, int], fps_seconds: float,
                  rate_hz: float, out_dir: Path | None, say: Any = print) -> dict[str, Any]:
    def run(timing: str, assets: GuestAssets, accel: str, d: Path
            ) -> Awaitable[dict[str, Any]]:
        return run_timing(timing, injections[timing], fps_seconds, rate_hz, assets, accel, d,
                          say)

    runs, how, first = await each_timing("guests", "default topology", DEFAULT_TOPOLOGY,
                                         timings, injections, out_dir, say, run)
    return summarize(runs, first) | how


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--injections", type=int, default=None, help="adapter errors, fast")
    ap.add_argument("--spec-injections", type=int, default=None)
    ap.add_argument("--fps-seconds", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=50.0, help="host probes per VF per second")
    ap.add_argument("--timings", default="fast,spec")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    inj = {"fast": args.injections or (2 if args.quick else 5),
           "spec": args.spec_injections or (1 if args.quick else 3)}
    s = asyncio.run(run_all(args.timings.split(","), inj, args.fps_seconds, args.rate,
                            Path(args.dir) if args.dir else None))
    print(json.dumps(s["goals"], indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=1) + "\n")
    return 0 if not any("error" in r for r in s["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
