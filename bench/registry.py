"""Every benchmark of `make bench` and `make bench-quick`, once: what it measures and how
the run (`python -m bench`) calls it.

A benchmark is a module `bench.<name>` runnable on its own (`--help`). Two kinds:

- built-in parts (recovery, guests, peer, scale): called in-process by `bench.__main__` with the
  arguments it gives them; each one's summary is a part of results.json that
  `bench.report` lays out in its own tables;
- JSON parts (every other): run as `python -m MODULE [ARGS] --json FILE`, each in a process
  of its own; the JSON (`{"figures": {...}, "goals": {...}, "config": {...}}`: figures
  made with `bench.stats.dist` / `scalar`, goals with `bench.goals.Goal.result`) becomes
  the part `part` of results.json, its text output `<part>.txt` next to it; the report and
  docs/benchmarks.md show it as it is (its goals, and its `headline` figures, also in the
  table of ours against the goals and the peer).

Adding one: docs/howto-benchmark.md.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    module: str
    what: str  # what it measures (docs/benchmarks.md's table)
    part: str  # its key in results.json
    args: tuple[str, ...] = ()  # its arguments in make bench
    quick: tuple[str, ...] | None = None  # its arguments in make bench-quick; None: not run
    builtin: bool = False  # called in-process by bench.__main__
    # figures of a JSON part shown in the main table (ours vs goal vs peer), beside its goals
    headline: tuple[str, ...] = ()


BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(
        "bench.recovery",
        "harness mode (no VM), each point in a process of its own: platform, device model, "
        "vfio-user, PF driver and 1/4/16/64 VF drivers under traffic; 10 adapter errors a "
        "point (3 in bench-quick), fast and spec reset timing, VF drivers in parallel and one "
        "after another (`Agent(serial_recovery=True)`, as Linux's single recovery thread), "
        "and some points with the drivers in a process of their own; injection -> traffic "
        "through every VF, and its parts from the timeline; host CPU (whole process, and by "
        "thread) and peak RSS", part="recovery", quick=(), builtin=True),
    Benchmark(
        "bench.guests",
        "the default topology in real TCG guests, fast and spec timing: boot to drivers ready "
        "(split into kernel, python start, probe), adapter errors through the QMP console "
        "until every VF passes traffic, frames lost per VF, frames/s through one VF before "
        "and after (the agent's `--sender`)", part="guests", quick=(), builtin=True),
    Benchmark(
        "bench.peer",
        "the peer: QEMU's igb with Linux igb/igbvf (VFs through sysfs) behind an `x-speed=5` "
        "root port, same probe traffic, AER non-fatal and fatal over QMP "
        "(`pcie_aer_inject_error`): time until each function passes traffic again, or \"not "
        "back\" within 30 s", part="peer", quick=(), builtin=True),
    Benchmark(
        "bench.scale",
        "64 VFs in real TCG guests (`scale-8x8.toml`: the service guest and 8 client guests "
        "with 8 VFs each), fast and spec timing: boot to all 65 drivers ready, adapter errors "
        "through the QMP console until every VF passes traffic (5 fast and 3 spec; bench-quick: "
        "2 spec only), frames lost per VF, host CPU and memory per guest (each QEMU's "
        "/proc); side by side, the peer at 7 VFs (QEMU's igb offers 8, Linux's igb enables "
        "7), one non-fatal and one fatal error (make bench only)", part="scale", quick=(),
        builtin=True),
    Benchmark(
        "bench.hcall",
        "platform-call round trips: `read-slot-reset-state2` through the real platform-call "
        "server (the drivers' `Channel` client), the same call answered at once by a bare "
        "asyncio server, and the line echoed by a bare unix-socket server, interleaved in "
        "one process: distributions and ratios", part="hcall", args=("--n", "3000"),
        quick=("--n", "1000")),
    Benchmark(
        "bench.adapters",
        "two adapters in harness mode (no VM; `two-adapters-harness.toml`, 2 x 64 VFs, "
        "bench-quick 2 x 16): an adapter error on A while B's VFs pass traffic (A's "
        "injection -> traffic through every VF, B's probes lost, B's probe latency during "
        "A's recovery vs a quiet window), then both adapters failing at once (until every VF "
        "of both passes traffic); host CPU per error, peak RSS", part="adapters",
        quick=("--quick",),
        headline=("a_recovery", "both_recovery", "b_latency_quiet", "b_latency_during",
                  "a_cpu", "both_cpu")),
    Benchmark(
        "bench.boot",
        "QEMU start to guest ready (TCG), restored from the saved state and cold, split into "
        "kernel and userspace; root fs build time (recorded)", part="boot",
        args=("--runs", "3"), quick=("--quick",), headline=("cold_ready_s",)),
    Benchmark(
        "bench.platform_loop",
        "the platform loop's CPU (thread time) per platform-call line of each call of a VF's "
        "recovery (64 lines of one kind in one write after a real lift; 64 VFs, harness mode), "
        "per timeline entry and per VF PE reset, in situ: distributions over the rounds",
        part="platform_loop", args=("--rounds", "10"), quick=("--quick",)),
    Benchmark(
        "bench.device_model",
        "the device model alone: freeze propagation for 1, 8, 64 VFs against a plain loop; "
        "frames per second through one VF (TX, RX) against the same work inline",
        part="device_model", quick=("--quick",)),
    Benchmark(
        "bench.vfio_user",
        "host client MMIO round trips, server cost per message, vs a bare AF_UNIX ping-pong "
        "and an asyncio echo (server / echo wall and CPU per message, median of rounds), "
        "spread and colocated", part="vfio_user", quick=("--quick",),
        headline=("read_colocated", "ping_colocated")),
    Benchmark(
        "bench.guest_mmio",
        "BAR0 reads and posted writes from a TCG guest, vs guest RAM reads; QEMU and the "
        "device model on one host CPU (\"colocated\", the default) vs wherever the scheduler "
        "puts them (\"spread\"); a host AF_UNIX ping-pong in the same placement, read p50 / "
        "ping-pong p50", part="guest_mmio", args=("--rounds", "1"), quick=("--quick",),
        headline=("mmio_read_colocated", "host_pingpong_colocated")),
)

BY_PART: dict[str, Benchmark] = {b.part: b for b in BENCHMARKS}
BY_MODULE: dict[str, Benchmark] = {b.module: b for b in BENCHMARKS}


def json_parts() -> list[Benchmark]:
    """The benchmarks run as a process whose JSON is a part of results.json."""
    return [b for b in BENCHMARKS if not b.builtin]
