"""The peer: QEMU's own SR-IOV NIC (igb, an 82576) with Linux's igb/igbvf and AER.

    .venv/bin/python -m bench.peer [--quick] [--nonfatal N] [--fatal N] [--limit S]
                                   [--vfs 3] [--json FILE]

What a user would pick instead of this project, on the same machine, under TCG, from
the same root fs and kernel, with the same traffic: a guest with `-device igb` behind a
`pcie-root-port` with `x-speed=5` (../shared/reference/peer-igb-notes.md: without it the
fatal path cannot even reset the link), Linux's igb driver on the PF and igbvf on VFs
created through sysfs (bench.peer_guest: `sriov_numvfs`, VF MACs set from the PF), and
every function answering the host's numbered probes (eeh_abi.traffic, `--rate` Hz per
function, from the host through a `-netdev dgram` unix socket into igb's wire side) with
echoes. Errors are injected as the notes say they reach Linux: on the PF's root port,
over QMP `human-monitor-command` `pcie_aer_inject_error prp0 COMP_ABORT` (uncorrectable,
non-fatal) and `... MALF_TLP` (fatal). Linux's AER core then runs its recovery
(error_detected / slot_reset / resume on igb and igbvf).

Each injection runs in a guest of its own (a second AER error in the same guest may not
reach Linux: the first one's status can stay latched). Per injection and function: the
outage, from the injection until the function passes traffic again, i.e. the first echo
of a probe sent after the last run of lost probes
(at least 3 within 0.5 s of each other; 0 if there was none within `--quiet` seconds,
for a non-fatal error only: a fatal one always has Linux reset the link, which with 7 VFs
came ~7.7 s after the injection, after igbvf's "PF still resetting" waits, so a fatal
error is watched for the whole `--limit`: `quiet_window`);
or "not back" if it has not answered again within `--limit` seconds; the probes it lost
and when (spans). The guest's kernel log is kept (results/dmesg.txt). Fatal errors run
last (the notes say the VFs never come back from one). Skipped, with the reason, if
QEMU has no igb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.stats import dist, scalar
from eeh_abi import traffic as T
from eeh_sriov.system import asset_config
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine
from qemu_launcher.run import new_run_dir, resolve_accel

PF_MAC = "02:ee:00:00:02:00"
HOST_MAC = bytes.fromhex("02aabbccdd03")
ERRORS = {"nonfatal": "COMP_ABORT", "fatal": "MALF_TLP"}
ROOT_PORT = "prp0"
SPAN_GAP_S = 0.5  # lost probes closer than this belong to one outage
MIN_SPAN = 3  # fewer lost probes in a row: a stray loss, not an outage


def has_igb(assets: GuestAssets) -> tuple[bool, str]:
    env = dict(os.environ) | dict(assets.qemu.env)
    try:
        p = subprocess.run([*assets.qemu.argv, "-device", "help"], capture_output=True,
                           text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"cannot run QEMU: {e}"
    if '"igb"' not in p.stdout + p.stderr:
        return False, f"{assets.qemu.describe()} has no igb device"
    return True, ""


class Probes:
    """The host's end of igb's wire: probes to every function, echoes stamped."""

    def __init__(self, sock_dir: Path, macs: list[bytes], rate_hz: float) -> None:
        self.host_path = sock_dir / "host.sock"
        self.qemu_path = sock_dir / "qemu.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.host_path))
        self.sock.settimeout(0.005)
        self.macs = macs
        self.period = 1.0 / rate_hz
        self.sent: list[dict[int, float]] = [{} for _ in macs]  # seq -> host time
        self.echoes: list[list[tuple[float, int]]] = [[] for _ in macs]
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._tx = threading.Thread(target=self._send_loop, name="peer-probes", daemon=True)
        self._rx = threading.Thread(target=self._recv_loop, name="peer-echoes", daemon=True)
        self.send_errors = 0

    def start(self) -> None:
        self._tx.start()
        self._rx.start()

    def stop(self) -> None:
        self._stop.set()
        for t in (self._tx, self._rx):
            if t.is_alive():
                t.join(2)
        self.sock.close()

    def _send_loop(self) -> None:
        seq = 0
        next_t = time.monotonic()
        while not self._stop.is_set():
            seq += 1
            for i, mac in enumerate(self.macs):
                frame = T.build(T.Probe(mac, HOST_MAC, T.PROBE, 0, i, seq, time.monotonic_ns()))
                now = time.monotonic()
                try:
                    self.sock.sendto(frame, str(self.qemu_path))
                    with self.lock:
                        self.sent[i][seq] = now
                except OSError:  # QEMU not there yet (or gone)
                    self.send_errors += 1
            next_t += self.period
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def _recv_loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame = self.sock.recv(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            p = T.parse(frame)
            if p is None or p.kind != T.ECHO or p.stream != 0 or not 0 <= p.target < len(
                    self.macs):
                continue
            with self.lock:
                self.echoes[p.target].append((time.monotonic(), p.seq))

    def echoed_after(self, i: int, t: float) -> bool:
        with self.lock:
            return any(et > t for et, _ in self.echoes[i])

    def outage(self, i: int, t0: float, t_end: float) -> dict[str, Any]:
        """The probes sent in [t0, t_end - 1 s] that were lost, grouped into spans (losses
        less than SPAN_GAP_S apart); the outage ends at the first echo of a probe sent
        after the last span of at least MIN_SPAN probes (a stray single loss later is
        reported, not counted as the error's outage)."""
        with self.lock:
            seen = {s for _, s in self.echoes[i]}
            sent_all = dict(self.sent[i])
            echoes = list(self.echoes[i])
        sent = sorted((t, s) for s, t in sent_all.items() if t0 <= t <= t_end - 1.0)
        lost = [(t, s) for t, s in sent if s not in seen]
        spans: list[list[float]] = []  # [first, last, count]
        for t, _ in lost:
            if spans and t - spans[-1][1] <= SPAN_GAP_S:
                spans[-1][1] = t
                spans[-1][2] += 1
            else:
                spans.append([t, t, 1])
        real = [sp for sp in spans if sp[2] >= MIN_SPAN]
        out: dict[str, Any] = {
            "lost": len(lost), "spans": [[round((a - t0) * 1000, 1), round((b - t0) * 1000, 1),
                                          int(n)] for a, b, n in spans]}
        if not real:
            return out | {"outage_ms": 0.0, "back": True}
        t_last = real[-1][1]
        after = {s for s, t in sent_all.items() if t > t_last}
        back = next((et for et, s in echoes if s in after), None)
        return out | {"back": back is not None,
                      "outage_ms": round((back - t0) * 1000, 1) if back is not None else None,
                      "first_loss_ms": round((real[0][0] - t0) * 1000, 1)}


def quiet_window(kind: str, quiet_s: float, limit_s: float) -> float:
    """How long without a lost probe means "no outage" for an error of this kind: a fatal
    error is never judged before `limit_s` (Linux resets the link, late: module docstring)."""
    return limit_s if kind == "fatal" else quiet_s


async def observe(probes: Probes, names: list[str], t0: float, limit_s: float,
                  quiet_s: float) -> list[dict[str, Any]]:
    """Wait until every function is back and stable (no probe lost for `settle_s` after
    it came back: Linux's recovery may stop a function twice, e.g. igb's transmit
    watchdog fires 5 s after the AER resume; or no loss at all for `quiet_s`), or
    `limit_s`."""
    settle_s = 6.0
    while True:
        now = time.monotonic()
        done = True
        for i in range(len(names)):
            o = probes.outage(i, t0, now)
            stable = (o["outage_ms"] == 0.0 and now - t0 >= quiet_s) or (
                o["back"] and o["outage_ms"] and now - t0 - o["outage_ms"] / 1000 >= settle_s)
            done &= bool(stable)
        if done or now - t0 >= limit_s:
            break
        await asyncio.sleep(0.2)
    end = time.monotonic()
    await asyncio.sleep(1.0)  # the last probes' echoes
    return [probes.outage(i, t0, end) | {"function": n} for i, n in enumerate(names)]


async def run_peer_once(assets: GuestAssets, accel: str, run_dir: Path, kind: str,
                        nvfs: int, rate_hz: float, limit_s: float, quiet_s: float,
                        say: Any = print) -> dict[str, Any]:
    """One guest, one injection (a second AER error in the same guest may not reach
    Linux at all: the first one's status can stay latched in the root port)."""
    vf_macs = [f"02:ee:00:00:02:{i + 1:02x}" for i in range(nvfs)]
    names = ["pf", *(f"vf{i}" for i in range(nvfs))]
    macs = [bytes.fromhex(m.replace(":", "")) for m in [PF_MAC, *vf_macs]]
    sock_dir = Path(tempfile.mkdtemp(prefix="eeh-peer-"))
    try:
        probes = Probes(sock_dir, macs, rate_hz)
    except BaseException:
        shutil.rmtree(sock_dir, ignore_errors=True)
        raise
    extra = ("-device", f"pcie-root-port,id={ROOT_PORT},chassis=30,slot=30,x-speed=5",
             "-netdev", f"dgram,id=peer0,local.type=unix,local.path={probes.qemu_path},"
                        f"remote.type=unix,remote.path={probes.host_path}",
             "-device", f"igb,id=peer-igb,bus={ROOT_PORT},netdev=peer0,mac={PF_MAC}")
    cfg = MachineConfig(name="peer-igb", accel=accel, extra_args=extra, boot_timeout=180)
    command = (f"python3 -m bench.peer_guest --pf-mac {PF_MAC} --macs {','.join(vf_macs)} "
               "--dir /mnt/results")
    out: dict[str, Any] = {"kind": kind, "run_dir": str(run_dir)}
    t_start = time.monotonic()
    try:
        async with Machine(cfg, assets, run_dir=run_dir, repo=REPO, command=command) as vm:
            ready_file = vm.paths.results / "peer-ready.json"
            deadline = time.monotonic() + 180
            while not ready_file.exists():
                if time.monotonic() > deadline or (vm.proc and vm.proc.returncode is not None):
                    raise RuntimeError("the peer guest did not set up igb/igbvf; see "
                                       f"{run_dir}/console.log")
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.1)
            info = json.loads(ready_file.read_text())
            if "error" in info:
                raise RuntimeError(f"peer set-up: {info['error']}")
            out["setup"] = info
            out["ready_s"] = round(time.monotonic() - t_start, 3)
            probes.start()
            deadline = time.monotonic() + 30
            while not all(probes.echoed_after(i, t_start) for i in range(len(names))):
                if time.monotonic() > deadline:
                    missing = [n for i, n in enumerate(names) if not probes.echoed_after(i, 0)]
                    raise RuntimeError(f"no baseline traffic through {missing}")
                await asyncio.sleep(0.1)
            await asyncio.sleep(2.0)  # steady traffic before the error
            cmd = f"pcie_aer_inject_error {ROOT_PORT} {ERRORS[kind]}"
            t0 = time.monotonic()
            out["reply"] = await vm.execute("human-monitor-command", {"command-line": cmd})
            out["hmp"] = cmd
            out["functions"] = await observe(probes, names, t0, limit_s,
                                             quiet_window(kind, quiet_s, limit_s))
            say(f"  peer: {kind} ({ERRORS[kind]}): " + ", ".join(
                f"{r['function']} " + (f"{r['outage_ms'] / 1000:.1f} s" if r["back"]
                                       else f"not back in {limit_s:.0f} s")
                + f" ({r['lost']} lost)" for r in out["functions"]))
            (vm.paths.results / "peer-stop").touch()
            deadline = time.monotonic() + 15
            while not (vm.paths.results / "dmesg.txt").exists() and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(0.3)
            dmesg = vm.paths.results / "dmesg.txt"
            if dmesg.exists():
                text = dmesg.read_text(errors="replace")
                out["aer_messages"] = text.count("AER: Uncorrectable")
                out["aer_recovery_successful"] = text.count("AER: device recovery successful")
    finally:
        probes.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    return out


async def run_peer(assets: GuestAssets, accel: str, run_dir: Path, kinds: list[str],
                   nvfs: int, rate_hz: float, limit_s: float, quiet_s: float,
                   say: Any = print) -> dict[str, Any]:
    names = ["pf", *(f"vf{i}" for i in range(nvfs))]
    out: dict[str, Any] = {"functions": names, "rate_hz": rate_hz, "limit_s": limit_s,
                           "injections": [], "run_dir": str(run_dir)}
    for k, kind in enumerate(kinds):
        d = run_dir / f"{k + 1}-{kind}"
        d.mkdir(parents=True, exist_ok=True)
        res = await run_peer_once(assets, accel, d, kind, nvfs, rate_hz, limit_s, quiet_s,
                                  say)
        out["injections"].append(res)
        out.setdefault("ready_s_each", []).append(res.get("ready_s"))
        out["setup"] = res.get("setup")
    ready = [r for r in out.get("ready_s_each", []) if r is not None]
    out["ready_s"] = min(ready) if ready else None
    return out


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    if "skipped" in raw or "error" in raw:
        return raw
    s: dict[str, Any] = {"by_kind": {}, "limit_s": raw["limit_s"], "rate_hz": raw["rate_hz"],
                         "setup": raw.get("setup"), "setup_s": raw.get("ready_s"),
                         "setup_s_each": raw.get("ready_s_each"),
                         "aer_delivered": [i.get("aer_messages") for i in raw["injections"]],
                         "run_dir": raw.get("run_dir")}
    for kind in ERRORS:
        inj = [i for i in raw["injections"] if i["kind"] == kind]
        if not inj:
            continue
        per: dict[str, Any] = {}
        for name in raw["functions"]:
            rs = [f for i in inj for f in i["functions"] if f["function"] == name]
            back = [f["outage_ms"] for f in rs if f["back"]]
            per[name] = {"outage": dist(back, "ms"),
                         "not_back": scalar(sum(1 for f in rs if not f["back"]),
                                            "injections", len(rs),
                                            what=f"no traffic again within {raw['limit_s']} s"),
                         "lost": dist([f["lost"] for f in rs], "frames")}
        vf_rs = [f for i in inj for f in i["functions"] if f["function"] != "pf"]
        vf_back = [f["outage_ms"] for f in vf_rs if f["back"]]
        s["by_kind"][kind] = {
            "error": ERRORS[kind], "n": len(inj), "functions": per,
            "every_vf_back": dist([max(f["outage_ms"] for f in i["functions"]
                                       if f["function"] != "pf")
                                   for i in inj if all(f["back"] for f in i["functions"]
                                                       if f["function"] != "pf")], "ms"),
            "vfs_never_back": scalar(sum(1 for f in vf_rs if not f["back"]), "VF outages",
                                     len(vf_rs), what=f"not back within {raw['limit_s']} s"),
            "vf_outage": dist(vf_back, "ms"),
            "vf_lost": dist([f["lost"] for f in vf_rs], "frames")}
    return s


async def run_all(kinds: list[str], nvfs: int, rate_hz: float, limit_s: float,
                  quiet_s: float, out_dir: Path | None, say: Any = print,
                  name: str = "peer-igb") -> dict[str, Any]:
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    runs_dir = REPO / "runs" / "bench"
    ok, why = has_igb(assets)
    if not ok:
        say(f"peer: skipped: {why}")
        return {"skipped": why}
    accel, _ = await resolve_accel("auto", assets, cfg_assets, runs_dir)
    d = (out_dir / name) if out_dir else new_run_dir(runs_dir, name)
    d.mkdir(parents=True, exist_ok=True)
    say(f"peer: QEMU igb + Linux igb/igbvf, {nvfs} VFs, AER {', '.join(kinds)}")
    try:
        raw = await run_peer(assets, accel, d, kinds, nvfs, rate_hz, limit_s, quiet_s, say)
    except Exception as e:
        say(f"peer: failed: {e}")
        return {"error": f"{type(e).__name__}: {e}", "run_dir": str(d)}
    (d / "peer-raw.json").write_text(json.dumps(raw, indent=1, default=str) + "\n")
    s = summarize(raw)
    s["accel"] = accel
    s["qemu"] = assets.qemu.describe()
    s["vfs"] = nvfs
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one non-fatal, one fatal")
    ap.add_argument("--nonfatal", type=int, default=None)
    ap.add_argument("--fatal", type=int, default=1)
    ap.add_argument("--vfs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--limit", type=float, default=30.0, help="seconds to wait per error")
    ap.add_argument("--quiet", type=float, default=5.0,
                    help="no loss for this long after an injection: no outage")
    ap.add_argument("--json", default=None)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    nonfatal = args.nonfatal if args.nonfatal is not None else (1 if args.quick else 2)
    kinds = ["nonfatal"] * nonfatal + ["fatal"] * args.fatal
    s = asyncio.run(run_all(kinds, args.vfs, args.rate, args.limit, args.quiet,
                            Path(args.dir) if args.dir else None))
    print(json.dumps(s, indent=1, default=str)[:4000])
    if args.json:
        Path(args.json).write_text(json.dumps(s, indent=1, default=str) + "\n")
    return 0 if "error" not in s else 1


if __name__ == "__main__":
    sys.exit(main())
