"""MMIO round trips from a real guest under TCG, through vfio-user to the device model.

    python -m bench.guest_mmio [--n N] [--rounds R]

Reports p50/p99 of 32-bit BAR0 reads (a full vfio-user round trip each) and posted
writes, and the same Python loop over guest RAM as the baseline measured in the same
guest, so the ratio shows the transport's share. Two placements are measured in
alternating rounds of the same run: "colocated" (the default: QEMU and the device model's
thread pinned to one host CPU, see AdapterHostConfig.host_cpus) and "spread" (no pinning,
the scheduler decides); their ratio is reported. The server's own time per message
(Endpoint.busy_ns, over every message of the run, boot included) is reported for each.
Before each guest run, a bare AF_UNIX ping-pong between two host processes is measured in
the same placement (both on the colocated CPU, or unpinned): the guest read's p50 over the
ping-pong's p50 is judged against its goal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys

from bench import goals
from bench.stats import describe
from bench.vfio_user import pingpong
from eeh_sriov.system import asset_config
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig, colocated_cpu
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine
from qemu_launcher.run import new_run_dir, resolve_accel

GOAL_READ_P50_US = goals.GUEST_MMIO_READ.limit
PLACEMENTS: dict[str, tuple[int, ...] | None] = {"colocated": None, "spread": ()}


def host_pingpong(n: int, placement: str) -> list[float]:
    """A bare AF_UNIX ping-pong (us) between two host processes placed as the guest is."""
    allowed = os.sched_getaffinity(0)
    cpus = PLACEMENTS[placement]
    os.sched_setaffinity(0, set(colocated_cpu() if cpus is None else cpus or allowed))
    try:
        return [t * 1e6 for t in pingpong(n)]
    finally:
        os.sched_setaffinity(0, allowed)


async def one_run(assets: GuestAssets, accel: str, n: int, placement: str
                  ) -> tuple[dict[str, list[float]], float]:
    d = new_run_dir(REPO / "runs" / "bench", f"guest-mmio-{placement}")
    host_cfg = AdapterHostConfig(enabled_vfs=0, host_cpus=PLACEMENTS[placement])
    with AdapterHost(host_cfg) as host:
        cfg = host.machine_config(MachineConfig(name="bench-mmio", accel=accel), ["pf"])
        async with Machine(cfg, assets, run_dir=d, repo=REPO,
                           command=f"python3 -m guest_drivers.mmio_bench {n}") as vm:
            r = await vm.wait_exit(600)
        ep = host.server.server.endpoints["pf"]
        busy_us = ep.busy_ns / max(ep.messages, 1) / 1000
    if r.status != 0:
        raise RuntimeError(f"guest benchmark failed ({r.status}): {r.output[-500:]}")
    data: dict[str, list[float]] = json.loads((d / "results" / "mmio.json").read_text())
    return data, busy_us


async def run(n: int, rounds: int) -> dict[str, tuple[dict[str, list[float]], list[float]]]:
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    accel, _ = await resolve_accel("auto", assets, cfg_assets, REPO / "runs" / "bench")
    out: dict[str, tuple[dict[str, list[float]], list[float]]] = {
        p: ({}, []) for p in PLACEMENTS}
    for _ in range(rounds):
        for placement in PLACEMENTS:
            ping = host_pingpong(n, placement)
            data, busy = await one_run(assets, accel, n, placement)
            pooled, busies = out[placement]
            for key, values in {**data, "host_pingpong_us": ping}.items():
                pooled.setdefault(key, []).extend(values)
            busies.append(busy)
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    results = asyncio.run(run(args.n, args.rounds))
    p50, vs_ping = {}, {}
    for placement, (data, busies) in results.items():
        base = statistics.median(data["ram_read_us"])
        for key, label in (("mmio_read_us", "BAR0 read (round trip)"),
                           ("mmio_write_us", "BAR0 posted write     "),
                           ("ram_read_us", "guest RAM read (base) ")):
            v = data[key]
            print(f"guest_mmio: {placement:9} {label} {describe(v, 'us')}  "
                  f"x{statistics.median(v) / base:.1f} of baseline")
        ping = data["host_pingpong_us"]
        print(f"guest_mmio: {placement:9} host AF_UNIX ping-pong {describe(ping, 'us')}")
        print(f"guest_mmio: {placement:9} server time per message "
              f"{', '.join(f'{b:.1f}' for b in busies)} us (one value per run)")
        p50[placement] = statistics.median(data["mmio_read_us"])
        vs_ping[placement] = p50[placement] / statistics.median(ping)
        print(f"guest_mmio: {placement:9} read p50 / host ping-pong p50 = "
              f"{vs_ping[placement]:.2f}x")
    print(f"guest_mmio: read p50 spread / colocated = "
          f"{p50['spread'] / p50['colocated']:.2f}x")
    print(f"guest_mmio: goal read p50 <= {GOAL_READ_P50_US:.0f} us (default placement: "
          f"colocated, {p50['colocated']:.1f} us)")
    goal = goals.GUEST_READ_VS_PINGPONG
    print(f"guest_mmio: goal read p50 / host ping-pong p50 {goal.text()}: "
          f"{'met' if goal.met(vs_ping['colocated']) else 'MISSED'} "
          f"(colocated, {vs_ping['colocated']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
