"""Recovery at scale, harness mode: adapter errors with 1..64 VFs under traffic.

    .venv/bin/python -m bench.recovery [--quick] [--vfs 1,4,16,64] [--repeats 10]
                                       [--timings fast,spec] [--modes parallel,serial]
                                       [--process fast:64] [--switch-interval S]
                                       [--json FILE]

Each point (reset timing x number of VFs x parallel/serial) runs in a process of its own
(`--point`), which holds EVERYTHING: the device model thread, the vfio-user server, the PE
policy, the platform-call server and its timeline (events.jsonl written as in every run),
the adapter driver and N VF drivers as threads (guest_drivers.agent.Agent over the
harness backend: vfio-user clients and a unix-socket platform channel, as a guest's would
be), and the host's traffic. One platform and one agent serve the whole point; the
adapter error is injected `--repeats` times (the policy's max_freezes raised so that it
never trips), each time waiting for full recovery and traffic through every VF.

Traffic: numbered probes (eeh_abi.traffic) from the uplink to every VF at `--rate` Hz
per VF; each VF driver echoes them. An echo is stamped on the device model's thread when
the switch hands it to the uplink. A VF "passes traffic again" at the first echo of a
probe sent after the injection; so that this is not quantized by the probe period, the
bench also sends a VF one probe as soon as the VF reports `recovered`.

Per recovery, from the platform's timeline (t0 = just before the injection call):
- `recovery_ms`: t0 -> every VF has passed traffic again (the figure with the goals);
- `frozen_ms`: t0 -> every VF PE frozen: the device model's first pe-frozen event (the
  model closes every gate of the PE tree before it emits any event: bench.device_model);
  `frozen_notified_ms`: t0 -> the platform's pe-frozen notice of the last VF (its owner
  is told);
- `informed_ms`: t0 -> the adapter driver and every VF driver reported error-detected;
- `adapter_ms`: t0 -> the adapter driver reported adapter-recovered;
- `release_ms`: t0 -> allow-unfreeze (the lockout release);
- `resume_ms` (one per VF): that VF's lockout-lifted -> its driver's `resume` report;
  `unfreeze_accepted_ms` (one per VF): lockout-lifted -> the platform accepted that VF
  driver's first unfreeze after it (its reset or thaw call answered 0): how fast a
  locked-out driver hears of the release and acts, without its own recovery's work;
- `cpu_s`: host CPU seconds (user + system, every thread of the point's process:
  time.process_time) from t0 until every VF passed traffic; `idle_cpu_s`: the same
  process's CPU over an equally long quiet window under the same traffic just before,
  so the recovery's own cost is the difference;
- the claim (hypervisor_shim.claim, 11 steps) is checked on every recovery.
Per point: peak RSS (ru_maxrss) of the process, platform + agent start-up time.

Serial baseline (`--modes serial`): `Agent(serial_recovery=True)`: the VF drivers take one
shared lock for each whole recovery, one after another, as Linux's single EEH recovery
thread does. Parallel/serial ratios are reported. In serial mode the claim's step 4 (every
VF's unfreeze refused during the lockout) is left out: VFs after the first only start
once the lockout is over.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import goals
from bench.stats import dist, percentile, scalar, slope
from device_model import ResetTiming
from eeh_abi import traffic as T
from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import settle_heap
from guest_drivers import profiling
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from hypervisor_shim.claim import check_claim, first_failure
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.readiness import DriversNotReady, wait_drivers_ready
from hypervisor_shim.timeline import Entry

TIMINGS = {"fast": ResetTiming.FAST, "spec": ResetTiming.SPEC}
PEER_MAC = bytes.fromhex("02aabbccdd02")


class _EchoSink(deque):  # type: ignore[type-arg]
    """Replaces the in-process uplink's `sent` queue: echoes of the host's probes are
    stamped and counted (on the device model's thread, as the switch sends them); other
    frames are kept as before."""

    def __init__(self, bench: PointTraffic) -> None:
        super().__init__(maxlen=4096)
        self._bench = bench

    def append(self, frame: bytes) -> None:  # type: ignore[override]
        if not self._bench.on_uplink(frame):
            super().append(frame)


class PointTraffic:
    """Probes from the uplink to every VF; echoes stamped on the model's thread."""

    def __init__(self, plat: Platform, names: Sequence[str], macs: Sequence[bytes],
                 rate_hz: float) -> None:
        self.plat = plat
        self.names = list(names)
        self.macs = list(macs)
        self.period = 1.0 / rate_hz
        self.seq = 0
        self.sent = 0
        self.echoes = 0
        self.last_echo = [0.0] * len(names)
        self.back: list[float | None] = [None] * len(names)
        self.t_inject = float("inf")  # echoes of probes sent after this count as "back"
        self.all_back = threading.Event()
        self._missing = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-traffic", daemon=True)
        uplink = plat.host.uplink
        plat.call(lambda: setattr(uplink, "sent", _EchoSink(self)))
        self._index = {n: i for i, n in enumerate(names)}
        plat.timeline.add_listener(self._on_entry)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.plat.timeline.remove_listener(self._on_entry)

    def arm(self, t_inject: float) -> None:
        self.back = [None] * len(self.names)
        self._missing = len(self.names)
        self.all_back.clear()
        self.t_inject = t_inject

    def _probe(self, i: int) -> bytes:
        self.seq += 1
        return T.build(T.Probe(self.macs[i], PEER_MAC, T.PROBE, 0, i, self.seq,
                               time.monotonic_ns()))

    def _inject(self, frames: list[bytes]) -> None:
        uplink = self.plat.host.uplink
        for f in frames:
            uplink.inject(f)
        self.sent += len(frames)

    def _run(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            frames = [self._probe(i) for i in range(len(self.names))]
            try:
                self.plat.call(lambda frames=frames: self._inject(frames))  # type: ignore[misc]
            except Exception:
                if self._stop.is_set():
                    return
            next_t += self.period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def _on_entry(self, e: Entry) -> None:
        # a VF reported recovered: probe it at once (on the model's loop, not re-entrantly)
        if e.source == Source.DRIVER and e.kind == Kind.RECOVERED and e.pe in self._index \
                and e.t > self.t_inject:
            frame = self._probe(self._index[e.pe])
            self.plat.host.server.loop.call_soon_threadsafe(self._inject, [frame])

    def on_uplink(self, frame: bytes) -> bool:
        p = T.parse(frame)
        if p is None or p.kind != T.ECHO or p.stream != 0 or not 0 <= p.target < len(self.back):
            return False
        now = time.monotonic()
        self.echoes += 1
        self.last_echo[p.target] = now
        if self.back[p.target] is None and p.t_ns / 1e9 > self.t_inject:
            self.back[p.target] = now
            self._missing -= 1
            if self._missing == 0:
                self.all_back.set()
        return True

    def steady(self, timeout: float) -> bool:
        """Every VF echoed a probe within the last two periods."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = time.monotonic()
            if all(now - t < 2 * self.period + 0.05 for t in self.last_echo):
                return True
            time.sleep(0.01)
        return False


def _first(entries: list[Entry], source: str, kind: str, pe: str | None = None
           ) -> Entry | None:
    for e in entries:
        if e.source == source and e.kind == kind and (pe is None or e.pe == pe):
            return e
    return None


GROUPS = {"vfio-user-server": "platform-loop", "hcall-reader": "channel-reader",
          "bench-traffic": "traffic", "MainThread": "bench-main"}


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system, per-thread clocks) of this process's threads, by
    group: the platform's loop thread (device model, vfio-user server, PE policy,
    platform calls, timeline), the drivers' threads, the drivers' platform-channel
    reader, the traffic generator."""
    out: dict[str, float] = {}
    for name, cpu in profiling.thread_cpu().items():
        group = "drivers" if name.startswith("drv-") else GROUPS.get(name, "other")
        out[group] = out.get(group, 0.0) + cpu
    return out


def _rss_kib() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _messages(plat: Platform) -> dict[str, int]:
    """vfio-user messages served and platform-call lines received so far."""
    eps = plat.host.server.server.endpoints.values()
    lines = sum(c.lines_in for cs in plat.server.connections.values() for c in cs)
    return {"vfio_user": sum(ep.messages for ep in eps), "platform_calls": lines}


_TICK = os.sysconf("SC_CLK_TCK")


class InProcessDrivers:
    """The agent as threads of this process (the default: everything in one process)."""

    where = "in-process"

    def __init__(self, plat: Platform, serial: bool) -> None:
        self.agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))), serial_recovery=serial)

    def start(self, nvfs: int) -> dict[str, bytes]:
        ready = self.agent.start()
        if len(ready) != nvfs + 1:
            raise RuntimeError(f"drivers not ready: {ready} ({self.agent.failed})")
        return {v.name: v.mac for v in self.agent.vf_drivers()}

    def cpu_s(self) -> float:
        return 0.0  # already in this process's time.process_time()

    def rss_kib(self) -> tuple[int, int]:
        return 0, 0

    def stop(self) -> None:
        self.agent.stop()


class ProcessDrivers:
    """The agent in a process of its own (`python -m guest_drivers.harness`), as drivers
    in guests are separate from the platform: two interpreters, no shared GIL."""

    where = "own process"

    def __init__(self, plat: Platform, serial: bool) -> None:
        self.plat = plat
        args = ["--hcall", str(plat.hcall_path(HOST))] + (["--serial-recovery"] if serial
                                                          else [])
        # the drivers' interpreter with this one's switch interval (`--switch-interval`)
        start = (f"import runpy, sys; sys.setswitchinterval({sys.getswitchinterval()!r}); "
                 f"sys.argv = ['guest_drivers.harness', *{args!r}]; "
                 "runpy.run_module('guest_drivers.harness', run_name='__main__', "
                 "alter_sys=True)")
        argv = [sys.executable, "-c", start]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True,
                                     cwd=Path(__file__).resolve().parent.parent)

    def start(self, nvfs: int) -> dict[str, bytes]:
        wanted = {"adapter", *(f"vf{n}" for n in range(nvfs))}
        try:
            r = wait_drivers_ready(self.plat.timeline, wanted, 120, check=lambda: (
                "the drivers' process exited" if self.proc.poll() is not None else None))
        except DriversNotReady as e:
            err = self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None \
                else ""
            raise RuntimeError(f"drivers' process not ready: {e} {err[-500:]}") from None
        return {n: bytes.fromhex(str(e.data["mac"]).replace(":", ""))
                for n, e in r.probes.items() if n != "adapter"}

    def cpu_s(self) -> float:
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / _TICK

    def rss_kib(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) of the drivers' process."""
        out = {}
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line[:5]] = int(line.split()[1])
        except OSError:
            pass
        return out.get("VmRSS", 0), out.get("VmHWM", 0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def _all_recovered(plat: Platform, pes: set[str], since: float) -> bool:
    got = {e.pe for e in plat.timeline.snapshot()
           if e.source == Source.DRIVER and e.kind == Kind.RECOVERED and e.t >= since}
    return pes <= got


def run_point(timing: str, nvfs: int, mode: str, repeats: int, rate_hz: float,
              run_dir: Path, drivers: str = "in-process") -> dict[str, Any]:
    """One point: start, inject `repeats` times, measure. `drivers`: "in-process" (the
    agent's threads in this process) or "process" (the agent in a process of its own)."""
    t_start = time.monotonic()
    names = [f"vf{n}" for n in range(nvfs)]
    owners = {"pf": HOST, **{n: HOST for n in names}}
    cfg = PlatformConfig(total_vfs=nvfs, enabled_vfs=nvfs, owners=owners,
                         timing=TIMINGS[timing], policy=PolicyConfig(max_freezes=100_000))
    timeout = 60.0 + (nvfs * 0.5 if mode == "serial" else 0)
    recs: list[dict[str, Any]] = []
    claim_failures: list[str] = []
    fallbacks = 0
    with Platform(cfg, run_dir) as plat:
        drv: InProcessDrivers | ProcessDrivers = (
            ProcessDrivers(plat, mode == "serial") if drivers == "process"
            else InProcessDrivers(plat, mode == "serial"))
        try:
            macs = drv.start(nvfs)
            startup_s = time.monotonic() - t_start
            settle_heap()  # (as the CLI does once the drivers are ready)
            traffic = PointTraffic(plat, names, [macs[n] for n in names], rate_hz)
            traffic.start()
            rss_before = _rss_kib()
            try:
                for k in range(repeats):
                    if not traffic.steady(10):
                        raise RuntimeError("traffic does not flow through every VF")
                    quiet_s = 0.25
                    c0, d0 = time.process_time(), drv.cpu_s()
                    time.sleep(quiet_s)
                    idle_rate = (time.process_time() - c0 + drv.cpu_s() - d0) / quiet_s
                    plat.timeline.clear()
                    t0 = time.monotonic()
                    traffic.arm(float("inf"))  # (disarmed while the error goes in)
                    cpu0, dcpu0 = time.process_time(), drv.cpu_s()
                    by_thread0 = thread_cpu()
                    msgs0 = _messages(plat)
                    plat.inject_adapter_error(f"bench {k + 1}")
                    # armed once the freeze holds: a probe sent between t0 and the freeze
                    # could be echoed and read as "back" before the error (seen under load)
                    traffic.arm(time.monotonic())
                    if not traffic.all_back.wait(timeout):
                        missing = [n for n, b in zip(names, traffic.back, strict=True)
                                   if b is None]
                        raise RuntimeError(f"recovery {k + 1}: no traffic through "
                                           f"{missing[:8]} after {timeout:.0f} s")
                    dcpu = drv.cpu_s() - dcpu0
                    cpu = time.process_time() - cpu0 + dcpu
                    by_thread = {g: round(v - by_thread0.get(g, 0.0), 3)
                                 for g, v in thread_cpu().items()}
                    if drivers == "process":
                        by_thread["drivers-process"] = round(dcpu, 3)
                    msgs = {k2: v - msgs0[k2] for k2, v in _messages(plat).items()}
                    t_back = [b for b in traffic.back if b is not None]
                    # every driver's "recovered" report (the PF's may come last)
                    deadline = time.monotonic() + 10
                    while time.monotonic() < deadline and not _all_recovered(
                            plat, {"adapter", *names}, t0):
                        time.sleep(0.005)
                    for n, b in zip(names, traffic.back, strict=True):
                        plat.timeline.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=n, t=b)
                    entries = [e for e in plat.timeline.snapshot() if e.t >= t0]
                    fallbacks += sum(1 for e in entries if e.source == Source.DRIVER
                                     and e.kind == Kind.LOCKOUT_LIFTED
                                     and e.data.get("by") == "fallback")
                    recs.append(_measure(entries, names, t0, t_back, cpu, idle_rate)
                                | {"cpu_by_thread_s": by_thread, "messages": msgs})
                    steps = check_claim(entries, pf_owner=HOST, vfs=dict.fromkeys(names, HOST),
                                        since=t0 - 0.001)
                    if mode == "serial":  # later VFs start after the lockout was lifted:
                        steps = [s for s in steps if s.key != "vfs-locked-out"]  # not a fault
                    failed = first_failure(steps)
                    if failed is not None:
                        claim_failures.append(f"recovery {k + 1}: {failed.key}: "
                                              f"{failed.detail}")
                    time.sleep(0.1)
            finally:
                traffic.stop()
            rss_after = _rss_kib()
            d_rss, d_hwm = drv.rss_kib()
        finally:
            drv.stop()
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"timing": timing, "vfs": nvfs, "mode": mode, "drivers": drivers,
            "repeats": repeats, "rate_hz": rate_hz, "startup_s": round(startup_s, 3),
            "recoveries": recs, "claim_failures": claim_failures,
            "lockout_fallbacks": fallbacks,
            "maxrss_mib": round((maxrss_kib + d_hwm) / 1024, 1),
            "drivers_process_maxrss_mib": round(d_hwm / 1024, 1) if d_hwm else None,
            "rss_growth_mib": round((rss_after - rss_before + 0 * d_rss) / 1024, 1),
            "probes_sent": traffic.sent, "echoes": traffic.echoes}


def _measure(entries: list[Entry], names: list[str], t0: float, t_back: list[float],
             cpu: float, idle_rate: float) -> dict[str, Any]:
    ms = lambda t: round((t - t0) * 1000, 3)  # noqa: E731
    # the model closes every gate of the tree before it emits its first pe-frozen event
    # (bench.device_model); its events for the VF PEs follow, and then the policy's notices
    gates = _first(entries, "model", "pe-frozen")
    frozen = [_first(entries, "policy", "pe-frozen", n) for n in names]
    informed = [_first(entries, "driver", "error-detected", n) for n in ["adapter", *names]]
    adapter = _first(entries, "driver", "adapter-recovered", "adapter")
    allow = _first(entries, "policy", "allow-unfreeze")
    resume, unfrozen = [], []
    for n in names:
        lift = _first(entries, "policy", "lockout-lifted", n)
        res = _first(entries, "driver", "resume", n)
        if lift is not None and res is not None:
            resume.append(round((res.t - lift.t) * 1000, 3))
        if lift is not None:  # the VF driver's first accepted unfreeze (reset or thaw)
            ok = next((e for e in entries if e.t >= lift.t and e.pe == n
                       and e.source == Source.CALL and e.data.get("status") == 0
                       and e.kind in ("set-slot-reset", "set-eeh-option")), None)
            if ok is not None:
                unfrozen.append(round((ok.t - lift.t) * 1000, 3))
    vf_rec = [_first(entries, "driver", "recovered", n) for n in names]
    total = max(t_back) - t0
    return {
        "recovery_ms": ms(max(t_back)),
        "traffic_back_ms": [ms(t) for t in t_back],
        "frozen_ms": ms(gates.t) if gates else None,
        "frozen_notified_ms": ms(max(e.t for e in frozen if e)) if all(frozen) else None,
        "informed_ms": ms(max(e.t for e in informed if e)) if all(informed) else None,
        "adapter_ms": ms(adapter.t) if adapter else None,
        "release_ms": ms(allow.t) if allow else None,
        "vfs_recovered_ms": ms(max(e.t for e in vf_rec if e)) if all(vf_rec) else None,
        "resume_ms": resume,
        "unfreeze_accepted_ms": unfrozen,
        "cpu_s": round(cpu, 4), "idle_cpu_s": round(idle_rate * total, 4),
    }


# ---------------------------------------------------------------------- the parent
def run_child(timing: str, nvfs: int, mode: str, repeats: int, rate_hz: float,
              out_dir: Path, drivers: str = "in-process",
              switch_interval: float | None = None) -> dict[str, Any]:
    d = out_dir / (f"{timing}-{nvfs:02d}vf-{mode}"
                   + ("-drivers-process" if drivers == "process" else "")
                   + (f"-switch{switch_interval * 1e3:g}ms" if switch_interval else ""))
    d.mkdir(parents=True, exist_ok=True)
    out = d / "point.json"
    cmd = [sys.executable, "-m", "bench.recovery", "--point",
           f"{timing}:{nvfs}:{mode}:{drivers}",
           "--repeats", str(repeats), "--rate", str(rate_hz), "--json", str(out),
           "--dir", str(d)]
    if switch_interval:
        cmd += ["--switch-interval", str(switch_interval)]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                       cwd=Path(__file__).resolve().parent.parent)
    (d / "point.log").write_text(p.stdout + p.stderr)
    if p.returncode != 0 or not out.exists():
        return {"timing": timing, "vfs": nvfs, "mode": mode, "drivers": drivers, "error":
                f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-600:]}"}
    res: dict[str, Any] = json.loads(out.read_text())
    res["wall_s"] = round(time.monotonic() - t0, 1)
    res["switch_interval_s"] = switch_interval or sys.getswitchinterval()
    return res


def summarize(points: list[dict[str, Any]]) -> dict[str, Any]:
    """Distributions per point, slopes, parallel/serial ratios and the goals."""
    out: dict[str, Any] = {"points": [], "goals": {}, "ratios": [], "slopes": {}}
    by_key: dict[tuple[str, int, str, str], dict[str, Any]] = {}
    for p in points:
        if "error" in p:
            out["points"].append(p)
            continue
        recs = p["recoveries"]

        def col(key: str, recs: list[dict[str, Any]] = recs) -> list[float]:
            return [r[key] for r in recs if r.get(key) is not None]

        resume = [v for r in recs for v in r["resume_ms"]]
        accepted = [v for r in recs for v in r.get("unfreeze_accepted_ms", [])]
        per_vf_back = [v for r in recs for v in r["traffic_back_ms"]]
        cpu = col("cpu_s")
        idle = col("idle_cpu_s")
        s = {"timing": p["timing"], "vfs": p["vfs"], "mode": p["mode"],
             "drivers": p.get("drivers", "in-process"),
             "recovery": dist(col("recovery_ms"), "ms"),
             "per_vf_traffic_back": dist(per_vf_back, "ms"),
             "frozen": dist(col("frozen_ms"), "ms"),
             "frozen_notified": dist(col("frozen_notified_ms"), "ms"),
             "informed": dist(col("informed_ms"), "ms"),
             "adapter_recovered": dist(col("adapter_ms"), "ms"),
             "lockout_release": dist(col("release_ms"), "ms"),
             "vfs_recovered": dist(col("vfs_recovered_ms"), "ms"),
             "resume_after_release": dist(resume, "ms"),
             "unfreeze_accepted_after_release": dist(accepted, "ms"),
             "cpu": dist(cpu, "s"), "idle_cpu_same_window": dist(idle, "s"),
             "cpu_excess": dist([c - i for c, i in zip(cpu, idle, strict=False)], "s"),
             "cpu_by_thread": {g: dist([r["cpu_by_thread_s"].get(g, 0.0) for r in recs], "s")
                               for g in sorted({g for r in recs
                                                for g in r.get("cpu_by_thread_s", {})})},
             "vfio_user_messages": dist([r["messages"]["vfio_user"] for r in recs
                                         if "messages" in r], "messages", 0),
             "platform_calls": dist([r["messages"]["platform_calls"] for r in recs
                                     if "messages" in r], "calls", 0),
             "maxrss": scalar(p["maxrss_mib"], "MiB", 1, what="ru_maxrss of the point's "
                              "process (platform + model + N+1 drivers + traffic)"),
             "rss_growth": scalar(p["rss_growth_mib"], "MiB", len(recs),
                                  what="VmRSS after the recoveries minus before"),
             "startup": scalar(p["startup_s"], "s", 1, what="platform + agent start"),
             "claim_ok": scalar(len(recs) - len(p["claim_failures"]), "recoveries",
                                len(recs)),
             "claim_failures": p["claim_failures"][:5],
             "lockout_fallbacks": p["lockout_fallbacks"],
             "rate_hz": p["rate_hz"], "wall_s": p.get("wall_s")}
        out["points"].append(s)
        by_key[(p["timing"], p["vfs"], p["mode"], s["drivers"])] = s
    for timing in TIMINGS:
        for mode in ("parallel", "serial"):
            for where in ("in-process", "process"):
                pts = sorted((k[1], v["recovery"]["p50"]) for k, v in by_key.items()
                             if k[0] == timing and k[2] == mode and k[3] == where
                             and v["recovery"]["n"])
                if len(pts) < 2:
                    continue
                key = f"{timing}-{mode}" + ("-drivers-process" if where == "process" else "")
                out["slopes"][key] = scalar(
                    slope([x for x, _ in pts], [y for _, y in pts]), "ms/VF", len(pts),
                    what="least-squares slope of recovery p50 against the number of VFs")
    for (timing, n, mode, where), v in sorted(by_key.items()):
        if mode != "parallel" or where != "in-process" or \
                (timing, n, "serial", where) not in by_key:
            continue
        ser = by_key[(timing, n, "serial", where)]
        out["ratios"].append({"timing": timing, "vfs": n, "parallel_over_serial": scalar(
            v["recovery"]["p50"] / ser["recovery"]["p50"], "ratio", v["recovery"]["n"],
            what="recovery p50, parallel / serial")})
    g = out["goals"]

    def goal(which: goals.Goal, suffix: str, value: float | None, what: str,
             name: str | None = None) -> None:
        g[(name or which.name) + suffix] = which.result(value, what)

    for where, suffix, what in (("in-process", "", ""),
                                ("process", "_drivers_process",
                                 ", drivers in a process of their own")):
        f64 = by_key.get(("fast", 64, "parallel", where))
        s64 = by_key.get(("spec", 64, "parallel", where))
        sl = out["slopes"].get("fast-parallel" + ("-drivers-process" if suffix else ""))
        if suffix and not (f64 or s64 or sl):
            continue
        goal(goals.FAST_64, suffix, f64["recovery"]["p50"] if f64 else None,
             f"fast timing, 64 VFs, recovery p50{what}")
        goal(goals.FAST_SLOPE, suffix, sl["value"] if sl else None,
             f"fast timing, slope of recovery p50 over 1..64 VFs{what}")
        goal(goals.SPEC_64, suffix, s64["recovery"]["p50"] if s64 else None,
             f"spec timing, 64 VFs, recovery p50{what}")
        if f64 is not None:
            goal(goals.LOCKOUT_64, suffix, f64["unfreeze_accepted_after_release"]["p99"],
                 f"fast timing, 64 VFs: lockout-lifted -> first unfreeze accepted, p99{what}")
            if suffix:
                goal(goals.RESUME_64_PROCESS, "", f64["resume_after_release"]["p99"],
                     f"fast timing, 64 VFs: lockout release -> VF resumed, p99{what}")
        for n in sorted({k[1] for k in by_key}):  # fast only: in spec timing the VF's
            v = by_key.get(("fast", n, "parallel", where))  # own FLR follows the release
            if v is not None and v["resume_after_release"]["n"]:
                goal(goals.RESUME_P99, suffix, v["resume_after_release"]["p99"],
                     f"fast timing, {n} VFs: lockout release -> VF resumed, p99{what}",
                     name=f"{goals.RESUME_P99.name}_{n}")
    return out


def print_summary(s: dict[str, Any]) -> None:
    print(f"{'timing':6} {'VFs':>3} {'mode':8} {'recovery p50/p99 ms':>20} {'frozen':>7} "
          f"{'informed':>8} {'adapter':>8} {'release':>8} {'resume p50/p99':>15} "
          f"{'CPU s':>6} {'idle':>6} {'RSS MiB':>7} claim")
    for p in s["points"]:
        if "error" in p:
            print(f"{p['timing']:6} {p['vfs']:3} {p['mode']:8} ERROR {p['error']}")
            continue
        r = p["recovery"]
        mode = p["mode"] + ("/proc" if p.get("drivers") == "process" else "")
        print(f"{p['timing']:6} {p['vfs']:3} {mode:8} "
              f"{r['p50']:9.1f} /{r['p99']:8.1f} {p['frozen']['p50']:7.2f} "
              f"{p['informed']['p50']:8.1f} {p['adapter_recovered']['p50']:8.1f} "
              f"{p['lockout_release']['p50']:8.1f} "
              f"{p['resume_after_release']['p50']:6.1f} /{p['resume_after_release']['p99']:7.1f} "
              f"{p['cpu']['p50']:6.3f} {p['idle_cpu_same_window']['p50']:6.3f} "
              f"{p['maxrss']['value']:7.1f} {p['claim_ok']['value']}/{p['claim_ok']['n']}")
    for k, v in s["slopes"].items():
        print(f"slope {k}: {v['value']:.2f} ms/VF")
    for r in s["ratios"]:
        print(f"parallel/serial {r['timing']} {r['vfs']} VFs: "
              f"{r['parallel_over_serial']['value']:.2f}")
    for k, v in s["goals"].items():
        print(f"goal {k}: {v['value']} {v['unit']} (<= {v['goal']}): "
              f"{'met' if v['met'] else 'MISSED'}")


def run_all(vfs: Sequence[int], timings: Sequence[str], modes: Sequence[str], repeats: int,
            rate_hz: float, out_dir: Path, say: Any = print,
            process_points: Sequence[tuple[str, int]] = (),
            switch_interval: float | None = None) -> dict[str, Any]:
    """Every (timing, VFs, mode) with the drivers in-process; then `process_points`
    ((timing, VFs), parallel) with the drivers in a process of their own. With
    `switch_interval`, every interpreter of a point runs with that sys.setswitchinterval
    (the GIL's hand-over interval; Python's default is 5 ms)."""
    points = []
    todo = [(t, n, m, "in-process") for t in timings for n in vfs for m in modes]
    todo += [(t, n, "parallel", "process") for t, n in process_points]
    for timing, n, mode, where in todo:
        say(f"recovery: {timing} timing, {n} VFs, {mode}, drivers {where} "
            f"({repeats} recoveries)")
        p = run_child(timing, n, mode, repeats, rate_hz, out_dir, where, switch_interval)
        if "error" in p:
            say(f"  failed: {p['error']}")
        else:
            r = [x["recovery_ms"] for x in p["recoveries"]]
            say(f"  recovery p50 {sorted(r)[len(r) // 2]:.1f} ms, p99 "
                f"{percentile(r, 99):.1f} ms; {p['wall_s']} s")
        points.append(p)
    s = summarize(points)
    s["config"] = {"vfs": list(vfs), "timings": list(timings), "modes": list(modes),
                   "process_points": [list(x) for x in process_points],
                   "repeats": repeats, "rate_hz": rate_hz,
                   "switch_interval_s": switch_interval or sys.getswitchinterval(),
                   "host_cpus": os.cpu_count(), "poll": "PollConfig() defaults"}
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer points and repeats")
    ap.add_argument("--vfs", default=None, help="numbers of VFs (default 1,4,16,64)")
    ap.add_argument("--timings", default="fast,spec")
    ap.add_argument("--modes", default="parallel,serial")
    ap.add_argument("--repeats", type=int, default=None, help="recoveries per point (10)")
    ap.add_argument("--rate", type=float, default=20.0, help="probes per VF per second")
    ap.add_argument("--process", default="",
                    help="also these points with the drivers in a process of their own "
                         "(parallel), e.g. fast:16,fast:64,spec:64")
    ap.add_argument("--switch-interval", type=float, default=None,
                    help="sys.setswitchinterval for every interpreter of a point, seconds "
                         "(the GIL's hand-over interval; default Python's 0.005)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--dir", default=None, help="artifacts directory")
    ap.add_argument("--point", default=None, help=argparse.SUPPRESS)  # timing:vfs:mode
    args = ap.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 10)
    if args.switch_interval is not None and not 1e-6 <= args.switch_interval <= 1.0:
        ap.error("--switch-interval: 1e-6 .. 1 s")
    if args.point:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        timing, n, mode, *where = args.point.split(":")
        d = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="eeh-bench-"))
        d.mkdir(parents=True, exist_ok=True)
        res = run_point(timing, int(n), mode, repeats, args.rate, d,
                        where[0] if where else "in-process")
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
        return 0
    vfs = [int(x) for x in args.vfs.split(",")] if args.vfs else [1, 4, 16, 64]
    out_dir = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="eeh-bench-rec-"))
    procs = [(t, int(n)) for t, n in (x.split(":") for x in args.process.split(",") if x)]
    s = run_all(vfs, args.timings.split(","), args.modes.split(","), repeats, args.rate,
                out_dir, process_points=procs, switch_interval=args.switch_interval)
    print_summary(s)
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=1) + "\n")
    return 0 if not any("error" in p for p in s["points"]) else 1


if __name__ == "__main__":
    sys.exit(main())
