"""The platform loop's CPU per platform-call line, per timeline entry and per PE reset.

    .venv/bin/python -m bench.platform_loop [--rounds 10] [--vfs 64] [--json FILE]
        [--profile STEP]

Harness mode, one adapter of `--vfs` VFs (fast timing), every VF held by the host's
owner: each round injects an adapter error, recovers the adapter PE as its driver does
(over the service guest's channel), lifts the lockout (`open-sriov-allow-unfreeze`),
then sends the VFs' recovery calls the way the drivers' process does, one kind at a
time, the `--vfs` lines of a kind in ONE write on the host's channel (as a lift's
retries, `eeh_abi.lift_retries`). Measured: the platform loop thread's CPU
(`time.thread_time` on it) while it answers them, divided by the lines: the first
`set-slot-reset` 1 after the lift is the "first unfreeze accepted" of issue 22 (the
VF's FLR, its pe-reset-asserted and reset-hot entries and notice, the call's entry),
the quiet posted `report` the lines a VF sends after the release. Then, on the loop
thread itself, `per_entry` (Timeline.record of a call entry, the platform's listeners
included) and `per_reset` (a VF PE's hot reset on the model, asserted and released at
once, with every event, entry and notice it makes).

Figures are per line / entry / reset in microseconds, a distribution over the rounds
(`--json`: the JSON part format of bench/registry.py; the machine is shared: compare
runs made alternately). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import socket
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import dist
from device_model.reset import ResetKind
from eeh_abi.hcall import Channel
from eeh_abi.papr import SlotReset
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Source
from eeh_sriov.system import settle_heap
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig

SVC = "svc"


class RawChannel:
    """The host's channel as a plain socket: a burst of request lines in one write, then
    every reply read (quiet requests get none: a last query closes the burst)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.buf = b""
        self.next_id = 1

    def burst(self, reqs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        lines = []
        for r in reqs:
            self.next_id += 1
            lines.append(json.dumps({"v": 1, "id": self.next_id, **r}).encode() + b"\n")
        last = self.next_id
        self.sock.sendall(b"".join(lines))
        got = []
        while True:
            while b"\n" not in self.buf:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise ConnectionError("the platform closed the channel")
                self.buf += data
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if "id" in msg:
                got.append(msg)
                if msg["id"] == last:
                    return got

    def close(self) -> None:
        self.sock.close()


def _steps(vfs: Sequence[int]) -> list[tuple[str, list[dict[str, Any]]]]:
    def each(call: str, **args: Any) -> list[dict[str, Any]]:
        return [{"call": call, "args": {"pe": v, **args}} for v in vfs]
    report = [{"call": "report", "quiet": True,
               "args": {"step": "reset", "pe": v, "guest_time": 1.0 + i / 1000,
                        "detail": {"driver": "vfx", "ms": 1.5}}} for i, v in enumerate(vfs)]
    return [("set-slot-reset-1", each(Call.SET_SLOT_RESET, function=int(SlotReset.HOT))),
            ("report-quiet", report),
            ("set-slot-reset-0", each(Call.SET_SLOT_RESET, function=0)),
            ("read-slot-reset-state2", each(Call.READ_SLOT_RESET_STATE2)),
            ("configure-pe", each(Call.CONFIGURE_PE))]


def run(rounds: int, n_vfs: int, profile: str | None = None) -> dict[str, Any]:
    owners = {"pf": SVC, **{f"vf{n}": HOST for n in range(n_vfs)}}
    cfg = PlatformConfig(total_vfs=n_vfs, enabled_vfs=n_vfs, owners=owners,
                         policy=PolicyConfig(max_freezes=1_000_000))
    per: dict[str, list[float]] = {}
    prof = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as d, Platform(cfg, Path(d)) as plat:
        pf = plat.adapter.pes.adapter.address
        vfs = [pe.address for pe in plat.adapter.pes.vfs]
        svc = Channel.unix(str(plat.hcall_path(SVC)), timeout=10)
        host = RawChannel(plat.hcall_path(HOST))
        settle_heap()  # (as bench.recovery and the CLI do once the drivers are ready)
        try:
            for _ in range(rounds):
                _recover_adapter(plat, svc, pf, vfs)
                for name, reqs in _steps(vfs):
                    if name == "read-slot-reset-state2":
                        time.sleep(0.02)  # every VF's reset done
                    # a quiet report gets no reply: a query closes the burst (not counted)
                    tail = [{"call": "read-slot-reset-state2", "args": {"pe": vfs[0]}}] \
                        if name.startswith("report") else []
                    if prof is not None and name == profile:
                        plat.call(prof.enable)
                    c0 = plat.call(time.thread_time)
                    got = host.burst(reqs + tail)
                    c1 = plat.call(time.thread_time)
                    if prof is not None and name == profile:
                        plat.call(prof.disable)
                    bad = [g for g in got if g.get("status") != 0]
                    if bad:
                        raise RuntimeError(f"{name}: refused: {bad[:2]}")
                    per.setdefault(f"line_{name}", []).append((c1 - c0) / len(reqs))
                per.setdefault("per_entry", []).append(plat.call(lambda: _entries(plat, 256)))
                per.setdefault("per_reset", []).append(plat.call(lambda: _resets(plat, vfs)))
        finally:
            host.close()
            svc.close()
    if prof is not None:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(60)
    # a JSON part of `make bench` (bench/registry.py): each figure's rounds, in us
    return {"figures": {k: dist([x * 1e6 for x in v], "us", 2)
                        for k, v in per.items()},
            "goals": {}, "config": {"rounds": rounds, "vfs": n_vfs}}


def _recover_adapter(plat: Platform, svc: Channel, pf: int, vfs: list[int]) -> None:
    """An adapter error recovered by the service guest's calls, the VFs' lockout lifted."""
    plat.inject_adapter_error()
    deadline = time.monotonic() + 10
    while svc.call(Call.READ_SLOT_RESET_STATE2, pe=pf).get("state") == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the adapter PE did not freeze")
        time.sleep(0.002)
    for call, args in ((Call.SET_SLOT_RESET, {"function": int(SlotReset.HOT)}),
                       (Call.SET_SLOT_RESET, {"function": 0})):
        if svc.call(call, pe=pf, **args).status != 0:
            raise RuntimeError(f"{call} refused on the adapter PE")
    while svc.call(Call.READ_SLOT_RESET_STATE2, pe=pf).get("state") != 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the adapter PE did not come back")
        time.sleep(0.002)
    if svc.call(Call.CONFIGURE_PE, pe=pf).status != 0 or \
            svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=pf, vf_pes=vfs).status != 0:
        raise RuntimeError("the adapter PE's configure or the lift was refused")


def _entries(plat: Platform, n: int) -> float:
    """On the loop thread: CPU per timeline entry (a call's entry, as a VF's)."""
    c0 = time.thread_time()
    for i in range(n):
        plat.timeline.record(Source.CALL, Call.SET_SLOT_RESET.value, owner=HOST, pe="vf3",
                             data={"args": {"pe": 0x18300 + i, "function": 1}, "status": 0})
    return (time.thread_time() - c0) / n


def _resets(plat: Platform, vfs: list[int]) -> float:
    """On the loop thread: CPU per VF PE hot reset (asserted and released at once)."""
    pes = [plat.adapter.pes.get(v) for v in vfs]
    c0 = time.thread_time()
    for pe in pes:
        pe.reset(ResetKind.HOT)
    return (time.thread_time() - c0) / len(pes)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 rounds (make bench-quick)")
    ap.add_argument("--vfs", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--profile", default=None,
                    help="cProfile the lines of this step (set-slot-reset-1, report-quiet...)")
    a = ap.parse_args(argv)
    if a.quick:
        a.rounds = 3
    if a.profile is not None:
        a.profile = a.profile.removeprefix("line_")
        if a.profile not in {name for name, _ in _steps([])}:
            ap.error(f"--profile: no step {a.profile!r} "
                     f"(one of {', '.join(name for name, _ in _steps([]))})")
    out = run(a.rounds, a.vfs, a.profile)
    for k, v in out["figures"].items():
        print(f"{k:34} median {v['p50']:7.1f} us   min {v['min']:7.1f} us")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
