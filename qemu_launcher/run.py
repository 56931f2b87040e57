"""Running guests: artifacts directories, the accelerator probe, one-shot commands."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from qemu_launcher.assets import REPO, AssetConfig, GuestAssets
from qemu_launcher.config import MachineConfig
from qemu_launcher.errors import GuestError
from qemu_launcher.machine import GuestResult, Machine

KVM_PROBE_TIMEOUT = 40.0


def new_run_dir(base: Path, name: str) -> Path:
    """A fresh artifacts directory: BASE/<date>-<time>-<name>-<n>."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        d = base / f"{stamp}-{name}-{n}"
        try:
            d.mkdir(parents=True)
            return d
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run directory under {base}")


async def run_command(cfg: MachineConfig, assets: GuestAssets, command: str,
                      run_dir: Path, timeout: float, repo: Path = REPO) -> GuestResult:
    """Boot a guest, run `command` in it, return its status and output."""
    async with Machine(cfg, assets, run_dir=run_dir, repo=repo, command=command) as vm:
        return await vm.wait_exit(timeout)


async def resolve_accel(requested: str, assets: GuestAssets, cfg_assets: AssetConfig,
                        runs: Path) -> tuple[str, str]:
    """Pick the accelerator: KVM only if a probe boot proved it works here.

    Returns (accel, reason). The probe's verdict is cached per host kernel, CPU and QEMU.
    """
    if requested in ("tcg", "kvm"):
        return requested, "requested"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no usable /dev/kvm"
    key = hashlib.sha256(
        f"{platform.release()}|{assets.qemu.version}|{assets.kernel.name}|"
        f"{_cpu_model()}".encode()).hexdigest()[:16]
    cache = cfg_assets.cache_dir / f"kvm-probe-{key}.json"
    if cache.exists():
        verdict = json.loads(cache.read_text())
        return verdict["accel"], f"cached probe: {verdict['reason']}"
    cfg = MachineConfig(name="kvm-probe", accel="kvm", boot_timeout=KVM_PROBE_TIMEOUT)
    run_dir = new_run_dir(runs, "kvm-probe")
    try:
        result = await run_command(cfg, assets, "true", run_dir, KVM_PROBE_TIMEOUT)
        ok = result.status == 0
        reason = "probe boot succeeded" if ok else f"probe boot exit {result.status}"
    except GuestError as e:
        ok, reason = False, f"probe boot failed ({type(e).__name__}, see {run_dir})"
    verdict = {"accel": "kvm" if ok else "tcg", "reason": reason}
    cache.write_text(json.dumps(verdict) + "\n")
    return verdict["accel"], reason


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def with_accel(cfg: MachineConfig, accel: str) -> MachineConfig:
    return dataclasses.replace(cfg, accel=accel)
