"""MMIO round trips from a real guest under TCG, through vfio-user to the device model.

    python -m bench.guest_mmio [--n N]

Reports p50/p99 of 32-bit BAR0 reads (a full vfio-user round trip each) and posted
writes, and the same Python loop over guest RAM as the baseline measured in the same
guest, so the ratio shows the transport's share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys

from bench.stats import describe
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from hypervisor_shim.vm.assets import REPO, AssetConfig, ensure_assets
from hypervisor_shim.vm.config import MachineConfig
from hypervisor_shim.vm.machine import Machine
from hypervisor_shim.vm.run import new_run_dir, resolve_accel

GOAL_READ_P50_US = 100.0


async def run(n: int) -> dict[str, list[float]]:
    cfg_assets = AssetConfig.from_env()
    assets = ensure_assets(cfg_assets)
    runs = REPO / "runs" / "bench"
    accel, _ = await resolve_accel("auto", assets, cfg_assets, runs)
    d = new_run_dir(runs, "guest-mmio")
    with AdapterHost(AdapterHostConfig(enabled_vfs=0)) as host:
        cfg = host.machine_config(MachineConfig(name="bench-mmio", accel=accel), ["pf"])
        async with Machine(cfg, assets, run_dir=d, repo=REPO,
                           command=f"python3 -m guest_drivers.mmio_bench {n}") as vm:
            r = await vm.wait_exit(600)
    if r.status != 0:
        raise RuntimeError(f"guest benchmark failed ({r.status}): {r.output[-500:]}")
    data: dict[str, list[float]] = json.loads((d / "results" / "mmio.json").read_text())
    return data


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    data = asyncio.run(run(args.n))
    base = statistics.median(data["ram_read_us"])
    for key, label in (("mmio_read_us", "BAR0 read (round trip)"),
                       ("mmio_write_us", "BAR0 posted write     "),
                       ("ram_read_us", "guest RAM read (base) ")):
        v = data[key]
        print(f"guest_mmio: {label} {describe(v, 'us')}  "
              f"x{statistics.median(v) / base:.1f} of baseline")
    print(f"guest_mmio: goal read p50 <= {GOAL_READ_P50_US:.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
