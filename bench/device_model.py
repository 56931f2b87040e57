"""Device model benchmarks (in-process, no transport).

    .venv/bin/python -m bench.device_model [--quick] [--json FILE]

1. Freeze propagation: time for `adapter PE.freeze()` to mark the adapter PE and every VF
   PE frozen and deliver every event to a history listener, for 1, 8 and 64 VFs; and the
   time until the first PE_FROZEN event, by which point every VF gate is already closed.
   Goal: p99 <= 1 ms at 64 VFs. Baseline: a plain loop setting a flag on n+1 objects and
   appending n+1 records.
2. Packets per second through one VF, 64-byte frames: TX (prebuilt descriptors, the
   driver only rings the tail doorbell; the model reads descriptors and buffers by DMA,
   forwards through the switch to a queue uplink and writes status back) and RX (frames
   from the uplink into posted buffers, descriptors written back, interrupts to a sink).
   Goal: >= 50k frames/s. Baseline: the same per-frame work done inline in plain Python
   (unpack a descriptor, copy the buffer, append it to a queue, pack a status).
Ratios are measured side by side in one run (the machine is shared and noisy). Exit status
1 when a goal is missed; `--json FILE` writes the figures and goals (a part of make bench's
results.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import goals
from bench.stats import dist, one_line, scalar
from device_model import Adapter, AdapterConfig, EventHistory, EventKind, ManualClock, QueueUplink
from device_model.nic import registers as R
from device_model.testkit import IrqRecorder, MiniDriver, PfDriver, RamGuest, frame
from vfio_user.contract import RegionIndex

FREEZE_GOAL_S = goals.FREEZE_64.limit / 1e3  # the goal is in ms
PPS_GOAL = goals.PPS_ONE_VF.limit


def freeze_run(num_vfs: int, repeats: int) -> tuple[list[float], list[float]]:
    adapter = Adapter(AdapterConfig(total_vfs=num_vfs), ManualClock())
    guest = RamGuest(size=1 << 16)
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.enable_vfs(num_vfs)
    history = EventHistory()
    adapter.events.add_listener(history)
    top = adapter.pes.adapter
    first_event: list[float] = []

    def first(e: object) -> None:
        if not first_event:
            first_event.append(time.perf_counter())

    adapter.events.add_listener(first)
    total, gate = [], []
    for _ in range(repeats):
        history.clear()
        first_event.clear()
        t0 = time.perf_counter()
        top.freeze("bench")
        t1 = time.perf_counter()
        assert all(pe.frozen for pe in adapter.pes)
        assert len(history.of(EventKind.PE_FROZEN)) == num_vfs + 1
        total.append(t1 - t0)
        gate.append(first_event[0] - t0)
        top.thaw_mmio()
        top.thaw_dma()
        for pe in adapter.pes.vfs:
            pe.thaw_mmio()
            pe.thaw_dma()
    return total, gate


def freeze_baseline(num_vfs: int, repeats: int) -> list[float]:
    class Flag:
        frozen = False

    objs = [Flag() for _ in range(num_vfs + 1)]
    out = []
    for _ in range(repeats):
        log: list[tuple[float, int]] = []
        t0 = time.perf_counter()
        for i, o in enumerate(objs):
            o.frozen = True
            log.append((time.perf_counter(), i))
        out.append(time.perf_counter() - t0)
        for o in objs:
            o.frozen = False
    return out


def vf_rig(ring: int) -> tuple[Adapter, MiniDriver, QueueUplink]:
    uplink = QueueUplink(maxlen=ring)
    adapter = Adapter(AdapterConfig(total_vfs=1), ManualClock(), uplink)
    guest = RamGuest(size=4 << 20)
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.enable_vfs(1)
    pf.reset_done()
    vf = MiniDriver(adapter.vf(0), guest, IrqRecorder())
    vf.enable()
    vf.setup_rings(tx_count=ring, rx_count=ring, buf_size=256)
    return adapter, vf, uplink


def tx_pps(frames: int, batch: int = 128, ring: int = 256) -> float:
    adapter, vf, uplink = vf_rig(ring)
    vf.prebuild_tx(frame(bytes.fromhex("020000000099"), vf.mac()))
    fn, tail = adapter.vf(0), 0
    t0 = time.perf_counter()
    for _ in range(frames // batch):
        tail = (tail + batch) % ring
        fn.region_write(RegionIndex.BAR0, R.TX_TAIL, tail.to_bytes(4, "little"))
        vf.irqs.fired.clear()
    dt = time.perf_counter() - t0
    sent = fn.nic.ledger.tx_sent
    assert sent == frames // batch * batch and fn.nic.balanced and len(uplink.sent) == ring
    return sent / dt


def rx_pps(frames: int, batch: int = 128, ring: int = 256) -> float:
    adapter, vf, uplink = vf_rig(ring)
    f = frame(vf.mac(), bytes.fromhex("020000000099"))
    fn = adapter.vf(0)
    vf.prebuild_rx()
    tail = vf.rx_tail
    t0 = time.perf_counter()
    for _ in range(frames // batch):
        for _ in range(batch):
            uplink.inject(f)
        tail = (tail + batch) % ring  # give the buffers back (prebuilt descriptors)
        fn.region_write(RegionIndex.BAR0, R.RX_TAIL, tail.to_bytes(4, "little"))
        vf.irqs.fired.clear()
    dt = time.perf_counter() - t0
    got = fn.nic.ledger.rx_delivered
    assert got == frames // batch * batch and fn.nic.ledger.rx_missed == 0
    return got / dt


def baseline_pps(frames: int, ring: int = 256) -> float:
    ram = bytearray(ring * 16 + ring * 256)
    desc = struct.Struct("<QHHHH")
    for i in range(ring):
        desc.pack_into(ram, i * 16, ring * 16 + i * 256, 64, 0, 0, 0)
    out: deque[bytes] = deque(maxlen=ring)
    t0 = time.perf_counter()
    for n in range(frames):
        i = n % ring
        addr, length, _, _, _ = desc.unpack_from(ram, i * 16)
        out.append(bytes(ram[addr : addr + length]))
        struct.pack_into("<H", ram, i * 16 + 12, 1)
    return frames / (time.perf_counter() - t0)


def measure(quick: bool) -> dict[str, Any]:
    """Both measurements; the figures, the goals judged and the configuration, as
    results.json keeps a part (bench.registry)."""
    repeats = 60 if quick else 400
    frames = 20_000 if quick else 100_000
    runs = 2 if quick else 5
    figures: dict[str, Any] = {}
    for n in (1, 8, 64):
        total, gate = freeze_run(n, repeats)
        base = freeze_baseline(n, repeats)
        figures[f"freeze_{n}_vfs"] = dist([t * 1e6 for t in total], "us", 1) | {
            "what": f"{n} VFs: adapter PE freeze -> every PE marked, events delivered"}
        figures[f"freeze_{n}_vfs_first_event"] = dist([t * 1e6 for t in gate], "us", 1) | {
            "what": f"{n} VFs: freeze -> first pe-frozen event (every gate closed)"}
        figures[f"freeze_{n}_vfs_baseline"] = dist([t * 1e6 for t in base], "us", 1) | {
            "what": f"{n} VFs: a plain loop setting a flag on n+1 objects (baseline)"}
        figures[f"freeze_{n}_vfs_vs_baseline"] = scalar(
            statistics_ratio(total, base), "x", repeats, what=f"{n} VFs: model / baseline p50")
    tx, rx, base_pps = [], [], []
    for _ in range(runs):
        base_pps.append(baseline_pps(frames))
        tx.append(tx_pps(frames))
        rx.append(rx_pps(frames))
    for name, vals, what in (("tx_fps", tx, "TX through one VF, 64-byte frames"),
                             ("rx_fps", rx, "RX through one VF, 64-byte frames"),
                             ("baseline_fps", base_pps,
                              "the same per-frame work inline in plain Python (baseline)")):
        figures[name] = dist(vals, "frames/s", 0) | {"what": what}
    tx50, rx50, b50 = (statistics.median(v) for v in (tx, rx, base_pps))
    figures["baseline_vs_tx"] = scalar(b50 / tx50, "x", runs, what="baseline / TX p50")
    figures["baseline_vs_rx"] = scalar(b50 / rx50, "x", runs, what="baseline / RX p50")
    freeze_p99_ms = figures["freeze_64_vfs"]["p99"] / 1000
    return {"figures": figures,
            "goals": {goals.FREEZE_64.name: goals.FREEZE_64.result(freeze_p99_ms),
                      goals.PPS_ONE_VF.name: goals.PPS_ONE_VF.result(
                          min(tx50, rx50), what=f"{goals.PPS_ONE_VF.figure}, lower of TX "
                          "and RX p50")},
            "config": {"quick": quick, "repeats": repeats, "frames": frames, "runs": runs}}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--json", default=None, help="write the results here (bench.registry)")
    args = ap.parse_args(argv)
    res = measure(args.quick)
    f, cfg = res["figures"], res["config"]
    print("freeze propagation (adapter PE -> every VF PE, events delivered)")
    for n in (1, 8, 64):
        print(f"  {n:2d} VFs  all marked: {one_line(f[f'freeze_{n}_vfs'])}")
        first = f[f"freeze_{n}_vfs_first_event"]
        print(f"          gates closed (first event): {one_line(first)}")
        print(f"          baseline loop: {one_line(f[f'freeze_{n}_vfs_baseline'])}")
        print(f"          model/baseline p50 = {f[f'freeze_{n}_vfs_vs_baseline']['value']:.1f}x")
    g = res["goals"][goals.FREEZE_64.name]
    print(f"  goal p99 <= {FREEZE_GOAL_S * 1e3:.0f} ms at 64 VFs: "
          f"{'met' if g['met'] else 'MISSED'} ({g['value'] * 1000:.0f} us)")
    print(f"\npackets per second through one VF, 64-byte frames ({cfg['runs']} runs of "
          f"{cfg['frames']})")
    for name, key in (("TX", "tx_fps"), ("RX", "rx_fps"), ("baseline", "baseline_fps")):
        print(f"  {name:8s} {one_line(f[key], 'kfps', 1e-3)}")
    print(f"  baseline/model p50: TX {f['baseline_vs_tx']['value']:.1f}x, RX "
          f"{f['baseline_vs_rx']['value']:.1f}x (the plain-Python floor is that many times "
          "faster)")
    g = res["goals"][goals.PPS_ONE_VF.name]
    print(f"  goal >= {PPS_GOAL:.0f} fps: {'met' if g['met'] else 'MISSED'} "
          f"(TX p50 {f['tx_fps']['p50']:.0f}, RX p50 {f['rx_fps']['p50']:.0f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0 if all(g["met"] for g in res["goals"].values()) else 1


def statistics_ratio(model: list[float], base: list[float]) -> float:
    m, b = statistics.median(model), statistics.median(base)
    return m / b if b else float("inf")


if __name__ == "__main__":
    sys.exit(main())
