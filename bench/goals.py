"""Every benchmark goal, once: what is measured, the limit, and why it is what it is.

    FAST_64.met(272.0)                 # False
    FAST_64.text()                     # "<= 150 ms p50"
    FAST_64.result(272.0, what="...")  # the results.json entry (value, goal, unit, met, ...)

Each benchmark module judges its figures with its goals (`Goal.bench` names it), the run's
report and plots draw them (`bench.report`), and docs/benchmarks.md lists them with the
latest run's values (`bench.docs`). A goal's `name` is its key under `goals` in its part
of results.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Goal:
    name: str  # its key in results.json (under its part's "goals")
    bench: str  # the module that measures it
    figure: str  # what is measured
    limit: float
    unit: str
    stat: str = ""  # which statistic of the distribution: "p50", "p99", "" (one value)
    at_most: bool = True  # the figure must be <= limit (False: >= limit)
    floor: float | None = None  # what the figure cannot go below (drawn on the plots)
    note: str = ""  # shown with the limit
    why: str = ""  # what limits the figure, for docs/benchmarks.md when it is missed

    def met(self, value: float | None) -> bool:
        if value is None:
            return False
        return value <= self.limit if self.at_most else value >= self.limit

    def text(self) -> str:
        """The goal as a table shows it: "<= 150 ms p50", ">= 5000 frames/s"."""
        stat = f" {self.stat}" if self.stat else ""
        note = f" ({self.note})" if self.note else ""
        return f"{'<=' if self.at_most else '>='} {self.limit:g} {self.unit}{stat}{note}"

    def result(self, value: float | None, what: str | None = None) -> dict[str, Any]:
        """The figure judged against the goal, as results.json keeps it."""
        return {"value": None if value is None else round(value, 3), "goal": self.limit,
                "unit": self.unit, "met": self.met(value), "what": what or self.figure,
                "goal_is": "<=" if self.at_most else ">="}


# ---- harness mode (bench.recovery): platform, model and drivers on the host, no VM
FAST_64 = Goal(
    "fast_64_vfs", "bench.recovery",
    "harness, fast timing, 64 VFs: injection -> traffic through every VF", 150.0, "ms", "p50",
    why="With everything in one interpreter (platform, device model and 65 drivers as "
        "threads) the recovery is paid for by one GIL: every VF's recovery is a few dozen "
        "vfio-user messages and platform-call lines (the run's counts are in its notes), "
        "each a Python-level round trip. The same recovery with the drivers in a process of "
        "their own, as drivers in guests are, is measured in the same run (the row \"drivers "
        "in a process of their own\").")
FAST_SLOPE = Goal(
    "fast_slope", "bench.recovery",
    "harness, fast timing: slope of recovery p50 over 1..64 VFs", 2.0, "ms/VF",
    why="The cost per VF is its messages (above) on the platform's one loop thread, "
        "contended in one interpreter by the drivers' threads.")
SPEC_64 = Goal(
    "spec_64_vfs", "bench.recovery",
    "harness, spec timing, 64 VFs: injection -> traffic through every VF", 2300.0, "ms",
    "p50", floor=2150.0, note="floor ~2150",
    why="The floor is one adapter reset (held 250 ms, settling 1.8 s) and one VF FLR "
        "(100 ms); what is left above it is the per-VF work of the fast timing.")
RESUME_P99 = Goal(
    "resume_p99_fast", "bench.recovery",
    "harness, fast timing: lockout release -> VF resumed, at every size", 10.0, "ms", "p99",
    why="One VF resumes within it on a quiet machine; N VFs released at once each do their "
        "own FLR and restore (~1.5-2 ms of CPU a VF), so the last resumes about N times that "
        "later.")
LOCKOUT_64 = Goal(
    "lockout_p99_64_vfs", "bench.recovery",
    "harness, fast timing, 64 VFs: the lockout's own latency, a VF PE's lockout-lifted -> "
    "the platform accepted that VF driver's first unfreeze (reset or thaw)", 5.0, "ms", "p99",
    why="Every VF's first unfreeze after the lift is one platform call answered on the "
        "platform's one loop thread, one after another: the last VF's waits for the 63 "
        "before it. The drivers' channel writes every locked-out VF's call again in one write "
        "as the lift arrives (eeh_abi/lift_retries.py); then the push's round trip (~0.4-1.3 "
        "ms) and ~60-65 us of loop CPU a call (the model's FLR and its entries, the call's "
        "checks, entry and reply: bench.platform_loop), ~4 ms for 64; in one interpreter "
        "the drivers' threads share the GIL with the loop (docs/reliability.md, the lockout "
        "at scale, 2026-12-08).")
RESUME_64_PROCESS = Goal(
    "resume_p99_64_vfs_drivers_process", "bench.recovery",
    "harness, fast timing, 64 VFs, drivers in a process of their own: lockout release -> "
    "VF resumed (1 ms a VF)", 64.0, "ms", "p99",
    why="After the release each VF's restore is 3 vfio-user round trips (4 messages) and 6 "
        "platform-call lines (set-slot-reset 1 and 0, configure-pe, the reports between "
        "them, the run from configure to recovered) with ~24 timeline entries, all "
        "answered on the platform's one loop thread, interleaved with the other VFs': the "
        "last VF resumes after the loop has done that for nearly every VF (~1.1 ms of loop "
        "CPU a VF; the run's CPU by thread: platform loop and drivers' process).")

# ---- real guests (bench.guests): the default topology in three TCG guests
DRIVERS_READY = Goal(
    "drivers_ready", "bench.guests",
    "real guests (3, TCG): start -> every guest's drivers ready, restored boots", 5.0, "s",
    "p50",
    why="Judged on the p50 of the boots in which every guest restored from its saved "
        "state; the first boot on a fresh machine (the saved states made) and any cold "
        "boot are reported apart (docs/setup.md). Three TCG guests share 2 host CPUs; "
        "restored, with python3 started and the agent's imports done before the save (the "
        "zygote), each guest's QEMU still needs ~2.0-2.3 s of host CPU (bench.boot "
        "--drivers, per phase: ~0.1 s restore and hot-plug, ~0.9-1.0 s the functions, "
        "mounts and stage 2, ~0.85-1.05 s python3's fork of the zygote to the agent's "
        "first call, ~0.1-0.3 s the probe); the VF guests' probes finish only after the "
        "service guest's PF driver is up.")
FPS_ONE_VF = Goal(
    "fps_one_vf", "bench.guests",
    "frames/s through one VF (60 bytes, TCG guest), lowest of before and after recovery",
    5000.0, "frames/s", at_most=False)

# ---- 64 VFs in real guests (bench.scale): scale-8x8.toml, nine TCG guests
SCALE_READY = Goal(
    "scale_drivers_ready", "bench.scale",
    "real guests (9, TCG), 64 VFs: start -> all 65 drivers ready, restored boots", 20.0,
    "s", "p50",
    why="Judged on the p50 of the restored boots (the first boot, which makes the saved "
        "states, apart). Nine TCG guests share the host's two CPUs: restored with python3 "
        "already started (the zygote), a client guest's QEMU still needs ~4-4.5 s of host "
        "CPU until its drivers are ready (bench.boot --drivers, per phase: ~0.2 s restore "
        "and hot-plug of 8 functions, ~1.3-1.5 s functions, mounts and stage 2, ~1.2-1.4 s "
        "the zygote's fork to the agent's first call, ~0.9-1.2 s the probe of its 8 VFs), "
        "the PF's guest ~3.7 s: ~36-39 s for nine, ~18-20 s on two idle CPUs: at the goal "
        "on a quiet machine, over it under load (27-30 s at a load of 13-16).")
SCALE_FAST = Goal(
    "scale_fast_64_vfs", "bench.scale",
    "real guests (9, TCG), 64 VFs, fast timing: injection -> traffic through every VF",
    400.0, "ms", "p50",
    why="A VF's recovery itself costs ~12-25 ms of host CPU in a TCG guest (docs/"
        "reliability.md, \"What a VF's recovery costs in a TCG guest\"); what fills the "
        "window is each client guest's steady state under the benchmark's probes (~0.16 s "
        "of host CPU a second, ~0.65 ms an echoed probe: eight client guests take ~1.3 of "
        "the two host CPUs; docs/reliability.md, \"A guest's steady state under probes\"), "
        "the service guest's adapter reset, and every VF's restore over vfio-user through "
        "QEMU.")
SCALE_SPEC = Goal(
    "scale_spec_64_vfs", "bench.scale",
    "real guests (9, TCG), 64 VFs, spec timing: injection -> traffic through every VF",
    2400.0, "ms", "p50", floor=2150.0, note="floor ~2150",
    why="The floor is one adapter reset and one VF FLR (2150 ms); above it is the fast "
        "timing's CPU-bound per-VF work in the guests (above), eight VFs per guest.")
SCALE_EVERY_VF = Goal(
    "scale_every_vf_back", "bench.scale",
    "real guests, 64 VFs: recoveries after which a VF did not pass traffic again (60 s)",
    0.0, "recoveries")

# ---- two adapters, harness mode (bench.adapters): two-adapters-harness.toml, 2 x 64 VFs
TWO_B_LOST = Goal(
    "two_adapters_b_lost", "bench.adapters",
    "harness, two adapters: adapter B's probes lost while adapter A recovers from its errors",
    0.0, "frames",
    why="Each adapter has its own PE tree, policy, switch and uplink; only the platform's "
        "loop thread (and the process's CPU) is shared, so A's recovery may delay B's frames "
        "(the latency figures) but must never drop one: a loss is a fault, not a cost.")
TWO_EVERY_VF_BACK = Goal(
    "two_adapters_every_vf_back", "bench.adapters",
    "harness, two adapters: errors (on A; on both at once) after which a VF did not pass "
    "traffic again (60 s)", 0.0, "recoveries")

# ---- the transport, boot and the device model alone (bench.boot, bench.device_model,
# bench.vfio_user, bench.guest_mmio: JSON parts of make bench)
BOOT_READY = Goal("boot_ready", "bench.boot", "QEMU start -> guest ready (TCG)", 6.0, "s",
                  "p50")
FREEZE_64 = Goal("freeze_64_vfs", "bench.device_model",
                 "freeze propagation to 64 VF PEs (the model alone)", 1.0, "ms", "p99")
PPS_ONE_VF = Goal("pps_one_vf", "bench.device_model",
                  "frames per second through one VF (the model alone, TX and RX)", 50000.0,
                  "frames/s", "p50", at_most=False)
GUEST_MMIO_READ = Goal("guest_mmio_read", "bench.guest_mmio",
                       "BAR0 read from a TCG guest, default placement (colocated)", 100.0,
                       "us", "p50")
VFIO_USER_SERVER = Goal("vfio_user_server_us", "bench.vfio_user",
                        "vfio-user server cost per message", 30.0, "us")
VFIO_USER_VS_ECHO = Goal(
    "vfio_user_server_vs_echo", "bench.vfio_user",
    "vfio-user server wall time per 4-byte read / an asyncio echo's per message (colocated, "
    "median of rounds)", 1.5, "x",
    why="Both are timed from the wake-up to the reply sent; the echo's work is one recv and "
        "one send, the server's adds one interpreted pass over the message: frame it, check "
        "it against the command table, decode the access, ask the function, encode the reply "
        "(~4 us of the ~10 us; bench.vfio_user prints the protocol core's share and the CPU "
        "ratio). On one CPU the send that wakes the client often runs the client before it "
        "returns, in either's wall time, so the ratio moves by 0.2-0.5 between runs. This "
        "is the server on a plain asyncio loop (serve()); QEMU is served from a thread per "
        "client on the model's loop (a ModelLoop), measured in bench.guest_mmio.")
GUEST_READ_VS_PINGPONG = Goal(
    "guest_mmio_read_vs_pingpong", "bench.guest_mmio",
    "BAR0 read from a TCG guest (colocated) / a bare AF_UNIX ping-pong on the host, p50", 3.0,
    "x", "p50",
    why="A guest read is three threads' round trip on one CPU (QEMU's vCPU thread sends and "
        "waits, the device model's connection thread answers, QEMU's vfio-user I/O thread "
        "receives and wakes the vCPU); the ping-pong is two processes, one wake-up each way. "
        "Per read (each thread's CPU from /proc schedstat over 150,000 reads, colocated): "
        "vCPU thread ~5.3 us (the guest's loop, TCG's MMIO exit, the send, the wait), QEMU's "
        "I/O thread ~2.6 us, the server ~4.8 us (receive, answer, send, with the kernel's "
        "wake-ups). The server answers from a thread per client (no asyncio wake-up, the "
        "model lock keeps one thread in the model) and a plain REGION_READ without building "
        "a frame: 19.4 -> 16.6 us p50, 3.34x -> 2.87x, alternating runs of one build on a "
        "loaded machine. QEMU has no setting that saves its I/O thread's hop "
        "(vfio_user/README.md).")

# ---- platform calls (bench.hcall)
HCALL_SERVER_WORK = Goal(
    "hcall_server_work_p50", "bench.hcall",
    "platform call round trip (read-slot-reset-state2) / the same call answered by a bare "
    "server, p50", 2.0, "x",
    why="The platform's server parses the line with the strict JSON parser, checks the "
        "arguments against the schema, authorizes the caller for the PE, reads the PE's "
        "state on the model's loop thread, records a timeline entry and writes the reply; "
        "the bare server only reads the id. The client (its reader thread: a thread "
        "wake-up per reply) is the same for both.")

GOALS: tuple[Goal, ...] = (FAST_64, FAST_SLOPE, SPEC_64, RESUME_P99, LOCKOUT_64,
                           RESUME_64_PROCESS, DRIVERS_READY, FPS_ONE_VF,
                           SCALE_READY, SCALE_FAST, SCALE_SPEC, SCALE_EVERY_VF, TWO_B_LOST,
                           TWO_EVERY_VF_BACK, BOOT_READY,
                           FREEZE_64, PPS_ONE_VF, GUEST_MMIO_READ, GUEST_READ_VS_PINGPONG,
                           VFIO_USER_SERVER, VFIO_USER_VS_ECHO, HCALL_SERVER_WORK)
BY_NAME: dict[str, Goal] = {g.name: g for g in GOALS}


def finish_part(res: dict[str, Any], json_path: str | None, prefix: str = "") -> None:
    """A JSON part's end (bench.registry): a line per goal it judged, then its JSON (the
    `--json` file) if asked for."""
    for name, g in res["goals"].items():
        value = g["value"] if g["value"] is None else f"{g['value']:.2f}"
        print(f"{prefix}goal {g['what']} {BY_NAME[name].text()}: "
              f"{'met' if g['met'] else 'MISSED'} ({value} {g['unit']})")
    if json_path:
        Path(json_path).write_text(json.dumps(res, indent=1) + "\n")
