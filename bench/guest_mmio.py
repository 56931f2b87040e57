"""MMIO round trips from a real guest under TCG, through vfio-user to the device model.

    python -m bench.guest_mmio [--quick] [--n N] [--rounds R] [--json FILE]

Reports p50/p99 of 32-bit BAR0 reads (a full vfio-user round trip each) and posted
writes, and the same Python loop over guest RAM as the baseline measured in the same
guest, so the ratio shows the transport's share. Two placements are measured in
alternating rounds of the same run: "colocated" (the default: QEMU and the device model's
thread pinned to one host CPU, see AdapterHostConfig.host_cpus) and "spread" (no pinning,
the scheduler decides); their ratio is reported. The server's own time per message
(Endpoint.busy_ns, over every message of the run, boot included) is reported for each.
Before each guest run, a bare AF_UNIX ping-pong between two host processes is measured in
the same placement (both on the colocated CPU, or unpinned): the guest read's p50 over the
ping-pong's p50 is judged against its goal. The goals are judged in the default
placement (colocated); `--json FILE` writes every figure of both placements and the goals
(a part of make bench's results.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from bench import goals
from bench.stats import dist, one_line, scalar
from bench.vfio_user import pingpong
from eeh_sriov.system import asset_config
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig, colocated_cpu
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine
from qemu_launcher.run import new_run_dir, resolve_accel

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


LABELS = {"mmio_read_us": "BAR0 read (round trip)", "mmio_write_us": "BAR0 posted write",
          "ram_read_us": "guest RAM read (baseline)",
          "host_pingpong_us": "host AF_UNIX ping-pong, same placement"}


def summarize(results: dict[str, tuple[dict[str, list[float]], list[float]]],
              n: int, rounds: int) -> dict[str, Any]:
    """The figures of every placement (`<figure>_<placement>`), and the goals judged in
    the default placement (colocated)."""
    f: dict[str, Any] = {}
    for placement, (data, busies) in results.items():
        for key, label in LABELS.items():
            f[f"{key[:-3]}_{placement}"] = dist(data[key], "us", 1) | {
                "what": f"{label}, {placement}"}
        read = f[f"mmio_read_{placement}"]
        f[f"read_vs_ram_{placement}"] = scalar(
            read["p50"] / f[f"ram_read_{placement}"]["p50"], "x", read["n"],
            what=f"BAR0 read p50 / guest RAM read p50, {placement}")
        f[f"read_vs_pingpong_{placement}"] = scalar(
            read["p50"] / f[f"host_pingpong_{placement}"]["p50"], "x", read["n"],
            what=f"BAR0 read p50 / host ping-pong p50, {placement}")
        f[f"server_per_message_{placement}"] = dist(busies, "us", 1) | {
            "what": f"server time per message (Endpoint.busy_ns, every message of a run, "
                    f"boot included; one value per run), {placement}"}
    f["read_spread_vs_colocated"] = scalar(
        f["mmio_read_spread"]["p50"] / f["mmio_read_colocated"]["p50"], "x",
        f["mmio_read_colocated"]["n"], what="BAR0 read p50, spread / colocated")
    read, vs = f["mmio_read_colocated"]["p50"], f["read_vs_pingpong_colocated"]["value"]
    return {"figures": f,
            "goals": {goals.GUEST_MMIO_READ.name: goals.GUEST_MMIO_READ.result(read),
                      goals.GUEST_READ_VS_PINGPONG.name:
                          goals.GUEST_READ_VS_PINGPONG.result(vs)},
            "config": {"n": n, "rounds": rounds, "placements": list(results)}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=None, help="accesses of each kind a run (2000)")
    ap.add_argument("--rounds", type=int, default=None,
                    help="guest runs of each placement (2)")
    ap.add_argument("--quick", action="store_true", help="one round of 1000")
    ap.add_argument("--json", default=None, help="write the results here (bench.registry)")
    args = ap.parse_args(argv)
    n = args.n or (1000 if args.quick else 2000)
    rounds = args.rounds or (1 if args.quick else 2)
    res = summarize(asyncio.run(run(n, rounds)), n, rounds)
    f = res["figures"]
    for placement in PLACEMENTS:
        for key, label in LABELS.items():
            d = f[f"{key[:-3]}_{placement}"]
            print(f"guest_mmio: {placement:9} {label:38} {one_line(d)}  "
                  f"x{d['p50'] / f[f'ram_read_{placement}']['p50']:.1f} of baseline")
        busy = f[f"server_per_message_{placement}"]
        print(f"guest_mmio: {placement:9} server time per message p50 {busy['p50']:.1f} us "
              f"(n={busy['n']} runs)")
        print(f"guest_mmio: {placement:9} read p50 / host ping-pong p50 = "
              f"{f[f'read_vs_pingpong_{placement}']['value']:.2f}x")
    print(f"guest_mmio: read p50 spread / colocated = "
          f"{f['read_spread_vs_colocated']['value']:.2f}x")
    goals.finish_part(res, args.json, "guest_mmio: ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
