"""Boot benchmark: QEMU start to guest ready under TCG, and the root fs build time.

    python -m bench.boot [--runs N] [--rebuild-rootfs]

Each run boots a guest that runs `true`, twice: restored from its saved state (the
default: qemu_launcher.snapshot; a first boot, not counted, saves it if there is none)
and cold (EEH_BOOT=cold: the kernel boots). Reported per run: QEMU start to the
readiness marker (host clock); for a restore the load's own time; for a cold boot the
guest's own uptime when its kernel handed over to stage 2 and when it was ready, so the
split between firmware+kernel and userspace is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import re
import sys
import tempfile
import time
from pathlib import Path

from bench import goals
from bench.stats import describe
from eeh_sriov.system import asset_config
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


def rebuild_rootfs() -> float:
    with tempfile.TemporaryDirectory(prefix="eeh-bench-rootfs-") as tmp:
        t0 = time.monotonic()
        ensure_rootfs(AssetConfig(cache_dir=Path(tmp)))
        return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rebuild-rootfs", action="store_true",
                    help="also build a fresh root fs into a temporary cache and time it")
    args = ap.parse_args()
    res = asyncio.run(boot_runs(args.runs))
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
