"""Boot benchmark: QEMU start to guest ready under TCG, and the root fs build time.

    python -m bench.boot [--quick] [--runs N] [--rebuild-rootfs] [--json FILE]
    python -m bench.boot --drivers [default|scale-8x8|TOPOLOGY.toml] [--runs N]

Each run boots a guest that runs `true`, twice: restored from its saved state (the
default: qemu_launcher.snapshot; a first boot, not counted, saves it if there is none)
and cold (EEH_BOOT=cold: the kernel boots). Reported per run: QEMU start to the
readiness marker (host clock); for a restore the load's own time; for a cold boot the
guest's own uptime when its kernel handed over to stage 2 and when it was ready, so the
split between firmware+kernel and userspace is visible.

With --drivers, each run instead boots a topology's guests (eeh_sriov.system.System,
every guest running the drivers' agent, no traffic; the topology's saved states made
first if the cache lacks them, bench.guests.save_states) until every driver has probed
(hypervisor_shim.readiness), then stops: start -> drivers ready (bench.goals
DRIVERS_READY for the default topology, SCALE_READY for scale-8x8), and per guest
bench.guests' split (restore, to the readiness marker, python3 start + imports to the
agent's first call, probe; in the guest, the go line to its hot-plugged functions all
present: functions_wait_s), each QEMU's CPU time to drivers ready, and how the agent
started (`started`: "zygote" for the interpreter started before the save,
qemu_launcher.guest_zygote, else "exec"); per run the CPU time of this process (the
platform and the device model) to drivers ready.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

from bench import goals
from bench.stats import describe, dist, scalar
from eeh_sriov.system import System, asset_config
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from hypervisor_shim.readiness import wait_drivers_ready_async
from qemu_launcher.assets import COMPLETE, REPO, AssetConfig, ensure_assets, ensure_rootfs
from qemu_launcher.config import MachineConfig
from qemu_launcher.run import new_run_dir, resolve_accel, run_command

GOAL_READY_S = goals.BOOT_READY.limit


def _uptime(console: str, marker: str) -> float | None:
    m = re.search(rf"^{marker} uptime=([\d.]+)", console, re.M)
    return float(m.group(1)) if m else None


async def boot_runs(n: int) -> dict[str, object]:
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    runs = REPO / "runs" / "bench"
    accel, why = await resolve_accel("auto", assets, cfg_assets, runs)
    cfg = MachineConfig(name="bench-boot", accel=accel)
    staged = dataclasses.replace(assets, snapshots=cfg_assets.cache_dir / "snapshots")
    cold = dataclasses.replace(assets, snapshots=None)
    await run_command(cfg, staged, "true", new_run_dir(runs, "boot-save"), timeout=120)
    out: dict[str, list[float]] = {k: [] for k in (
        "ready_s", "restore_s", "cold_ready_s", "kernel_to_stage2_s", "guest_uptime_ready_s",
        "boot_run_poweroff_s", "cold_boot_run_poweroff_s")}
    for _ in range(n):
        d = new_run_dir(runs, "boot")
        r = await run_command(cfg, staged, "true", d, timeout=120)
        boot = json.loads((d / "machine.json").read_text()).get("boot", {})
        out["ready_s"].append(r.ready_s)
        out["boot_run_poweroff_s"].append(r.total_s)
        if boot.get("how") == "restored":
            out["restore_s"].append(boot["restore_s"])
        d = new_run_dir(runs, "boot-cold")
        r = await run_command(cfg, cold, "true", d, timeout=120)
        out["cold_ready_s"].append(r.ready_s)
        out["cold_boot_run_poweroff_s"].append(r.total_s)
        console = (d / "console.log").read_text()
        s2, gr = _uptime(console, "EEH-GUEST-STAGE2"), _uptime(console, "EEH-GUEST-READY")
        if s2 is not None and gr is not None:
            out["kernel_to_stage2_s"].append(s2)
            out["guest_uptime_ready_s"].append(gr)
    info = json.loads((cfg_assets.rootfs_dir / COMPLETE).read_text())
    return {"accel": accel, "accel_reason": why, "qemu": assets.qemu.describe(), **out,
            "rootfs_build_s_recorded": info.get("build_seconds")}


TOPOLOGIES = {"default": DEFAULT_TOPOLOGY,
              "scale-8x8": REPO / "eeh_sriov" / "topologies" / "scale-8x8.toml"}
DRIVERS_TIMEOUT_S = 300.0  # a hang guard: nine TCG guests on a loaded host need ~70 s


class QemuCpu:
    """Each guest's QEMU CPU time (user + system, s), sampled every PERIOD_S from /proc
    while a topology boots: QEMU processes are this process's children, named by their
    `-name`. `at(guest, t)` is the CPU of the last sample at or before t (s from start),
    so a boot's phases (bench.guests.boot_phases) get their CPU (`phase_cpu`)."""

    PERIOD_S = 0.1
    _TCK = os.sysconf("SC_CLK_TCK")

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self._names: dict[int, str] = {}

    async def run(self) -> None:
        while True:
            t = time.monotonic() - self.t0
            for pid in self._children():
                name = self._name(pid)
                try:
                    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                if name:
                    self.samples.setdefault(name, []).append(
                        (t, (int(stat[11]) + int(stat[12])) / self._TCK))
            await asyncio.sleep(self.PERIOD_S)

    @staticmethod
    def _children() -> list[int]:
        pids: list[int] = []
        for task in Path("/proc/self/task").iterdir():
            try:
                pids += map(int, (task / "children").read_text().split())
            except OSError:
                continue
        return pids

    def _name(self, pid: int) -> str:
        if pid not in self._names:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                return ""
            i = argv.index(b"-name") if b"-name" in argv else -1
            self._names[pid] = argv[i + 1].decode() if 0 <= i < len(argv) - 1 else ""
        return self._names[pid]

    def at(self, guest: str, t: float | None) -> float | None:
        before = [c for ts, c in self.samples.get(guest, []) if t is not None and ts <= t]
        return before[-1] if before else None

    def phase_cpu(self, guest: str, g: dict[str, object]) -> dict[str, float | None]:
        """The guest's QEMU CPU in each phase: to the go (restore, hot-plug), go -> ready
        marker (functions, mounts, stage 2), python3 start, probe."""
        def num(k: str) -> float | None:
            v = g.get(k)
            return float(v) if isinstance(v, int | float) else None

        marker, py = num("start_to_marker_s"), num("python_start_s")
        query = marker + py if marker is not None and py is not None else None
        marks = [self.at(guest, t) for t in (num("go_s"), marker, query,
                                             num("drivers_ready_s"))]
        out: dict[str, float | None] = {}
        prev: float | None = 0.0
        for key, c in zip(("cpu_to_go_s", "cpu_go_to_marker_s", "cpu_python_start_s",
                           "cpu_probe_s"), marks, strict=True):
            out[key] = round(c - prev, 2) if c is not None and prev is not None else None
            prev = c
        return out


def _topology_path(name: str) -> Path:
    return TOPOLOGIES.get(name) or Path(name)


async def drivers_runs(topology: str, n: int) -> dict[str, object]:
    """`n` boots of `topology` to drivers ready (guests run the agent), one after another."""
    from bench.guests import boot_kind, boot_phases, save_states  # bench.guests' split
    from bench.scale import qemu_usage  # each QEMU's CPU time from /proc

    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    runs = REPO / "runs" / "bench"
    accel, why = await resolve_accel("auto", assets, cfg_assets, runs)
    path = _topology_path(topology)
    topo = load_topology(path)
    ready: list[float] = []
    phases: dict[str, list[float]] = {}
    boots: list[dict[str, object]] = []
    # the saved states first, if the cache lacks them: every boot below restores
    first = await save_states(path, assets, accel, new_run_dir(runs, "drivers-first-boot"))
    for i in range(n):
        d = new_run_dir(runs, f"drivers-{path.stem}")
        pcfg = topo.platform_config(host_cpus=(), tap_name=f"eehd{os.getpid() % 10**6}")
        t0 = time.monotonic()
        system = System(topo, d, assets, accel=accel, platform_config=pcfg,
                        boot_timeout=DRIVERS_TIMEOUT_S)
        host0 = os.times()
        cpu = QemuCpu()
        cpu.t0 = t0
        sampler = asyncio.ensure_future(cpu.run())
        try:
            async with system:
                await wait_drivers_ready_async(system.platform.timeline, topo.guest_pes,
                                               DRIVERS_TIMEOUT_S)
                ready.append(round(time.monotonic() - t0, 3))
                host1 = os.times()
                per_guest = boot_phases(system, t0)
                for name, use in qemu_usage(system).items():  # each QEMU's CPU to ready
                    per_guest[name]["qemu_cpu_s"] = round(use["cpu_s"], 2)
                    per_guest[name] |= cpu.phase_cpu(name, per_guest[name])
        finally:
            sampler.cancel()
        for name, g in per_guest.items():
            g["started"] = _agent_start(system.machines[name].paths.console_log)
            g["functions_wait_s"] = _functions_wait(system.machines[name].paths.console_log)
            for k in ("restore_s", "start_to_marker_s", "functions_wait_s", "python_start_s",
                      "probe_s", "qemu_cpu_s", "cpu_to_go_s", "cpu_go_to_marker_s",
                      "cpu_python_start_s", "cpu_probe_s"):
                if isinstance(g.get(k), float):
                    phases.setdefault(k, []).append(g[k])
        # this process: the platform, the device model and the benchmark, to ready
        host_cpu = round(host1.user + host1.system - host0.user - host0.system, 2)
        kind = boot_kind({"boot": per_guest})
        boots.append({"run_dir": str(d), "drivers_ready_s": ready[-1], "kind": kind,
                      "guests": per_guest, "load": round(os.getloadavg()[0], 1),
                      "platform_cpu_s": host_cpu})
        print(f"boot: drivers ready run {i + 1}/{n}: {ready[-1]:.2f} s, {kind} (load "
              f"{os.getloadavg()[0]:.1f}; platform process CPU {host_cpu:.1f} s; {d})")
    return {"accel": accel, "accel_reason": why, "qemu": assets.qemu.describe(),
            "topology": path.stem, "drivers_ready_s": ready, "phases": phases,
            "boots": boots, "first_boot": first}


def _functions_wait(console: Path) -> float | None:
    """Guest seconds from the go line to its hot-plugged functions all present (stage
    1's `EEH-GUEST-GO uptime=<then> go=<go line read>`)."""
    try:
        m = re.search(r"^EEH-GUEST-GO uptime=([\d.]+) go=([\d.]+)",
                      console.read_text(errors="replace"), re.M)
    except OSError:
        return None
    return round(float(m.group(1)) - float(m.group(2)), 3) if m else None


def _agent_start(console: Path) -> str:
    """How the guest command started: "zygote" if the console has the zygote's line
    (qemu_launcher.guest_zygote: the interpreter started before the save), else "exec"."""
    try:
        text = console.read_text(errors="replace")
    except OSError:
        return "unknown"
    return "zygote" if re.search(r"^EEH-GUEST-ZYGOTE python3 -m .* started from", text,
                                 re.M) else "exec"


def rebuild_rootfs() -> float:
    with tempfile.TemporaryDirectory(prefix="eeh-bench-rootfs-") as tmp:
        t0 = time.monotonic()
        ensure_rootfs(AssetConfig(cache_dir=Path(tmp)))
        return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="one boot of each kind (--runs 1)")
    ap.add_argument("--rebuild-rootfs", action="store_true",
                    help="also build a fresh root fs into a temporary cache and time it")
    ap.add_argument("--drivers", metavar="TOPOLOGY", nargs="?", const="default",
                    help="boot a topology's guests to drivers ready instead (default, "
                    "scale-8x8 or a topology file)")
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    if args.drivers:
        return _main_drivers(args.drivers, args.runs, args.json)
    res = asyncio.run(boot_runs(1 if args.quick else args.runs))
    print(f"boot: {res['qemu']}, accelerator {res['accel']} ({res['accel_reason']})")
    ready = res["ready_s"]
    assert isinstance(ready, list)
    print(f"boot: {'restored: QEMU start -> ready':<34} {describe(ready)}  "
          f"(goal p50 <= {GOAL_READY_S} s)")
    for key, label in (("restore_s", "restored: load of the state"),
                       ("boot_run_poweroff_s", "restored: boot + run + poweroff"),
                       ("cold_ready_s", "cold: QEMU start -> ready"),
                       ("kernel_to_stage2_s", "cold: guest uptime at stage 2"),
                       ("guest_uptime_ready_s", "cold: guest uptime at ready"),
                       ("cold_boot_run_poweroff_s", "cold: boot + run + poweroff")):
        vals = res[key]
        assert isinstance(vals, list)
        if vals:
            print(f"boot: {label:<34} {describe(vals)}")
    print(f"boot: root fs build time (recorded when the cache was built): "
          f"{res['rootfs_build_s_recorded']} s")
    if args.rebuild_rootfs:
        print(f"boot: root fs build time (fresh, now): {rebuild_rootfs():.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(as_part(res), indent=1) + "\n")
    return 0


def as_part(res: dict[str, object]) -> dict[str, object]:
    """The boots as a part of make bench's results.json (bench.registry): each list a
    distribution (s), the goal judged on the restored boots' p50."""
    what = {"ready_s": "restored: QEMU start -> ready", "restore_s": "restored: the load",
            "boot_run_poweroff_s": "restored: boot + run + poweroff",
            "cold_ready_s": "cold: QEMU start -> ready",
            "kernel_to_stage2_s": "cold: guest uptime at stage 2",
            "guest_uptime_ready_s": "cold: guest uptime at ready",
            "cold_boot_run_poweroff_s": "cold: boot + run + poweroff"}
    figures: dict[str, object] = {k: dist(v, "s") | {"what": what.get(k, k)}
                                  for k, v in res.items() if isinstance(v, list)}
    build = res["rootfs_build_s_recorded"]
    figures["rootfs_build_s_recorded"] = scalar(
        build if isinstance(build, int | float) else None, "s", what="root fs build time, "
        "recorded when the cache was built")
    ready = figures["ready_s"]
    assert isinstance(ready, dict)
    return {"figures": figures,
            "goals": {goals.BOOT_READY.name: goals.BOOT_READY.result(ready.get("p50"))},
            "config": {k: v for k, v in res.items() if isinstance(v, str)}}


def _main_drivers(topology: str, n: int, out: str | None) -> int:
    res = asyncio.run(drivers_runs(topology, n))
    print(f"boot: {res['qemu']}, accelerator {res['accel']} ({res['accel_reason']})")
    ready = res["drivers_ready_s"]
    phases = res["phases"]
    assert isinstance(ready, list) and isinstance(phases, dict)
    goal = goals.SCALE_READY if res["topology"] == "scale-8x8" else goals.DRIVERS_READY
    print(f"boot: {res['topology']}: start -> drivers ready {describe(ready)}  "
          f"(goal {goal.limit} {goal.unit})")
    for key, vals in phases.items():
        print(f"boot:   per guest {key:<20} {describe(vals)}")
    if out:
        Path(out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
