"""The platform's subcommands: `up`, `status`, `inject` (wired into `__main__`).

    python -m eeh_sriov up [TOPOLOGY]        # bring a topology up; Ctrl-C takes it down
    python -m eeh_sriov status               # PE states, through the platform console
    python -m eeh_sriov inject adapter adapter-fatal
    python -m eeh_sriov inject vf1 errinjct --function 14

`up` writes `consoles.json` in its run directory and points `runs/latest` at it;
`status` and `inject` find the platform console there unless `--console` names one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient, QMPError

from eeh_sriov.interrupt import Interrupted, until_signal
from eeh_sriov.system import System, asset_config
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from hypervisor_shim.errors import ShimError
from hypervisor_shim.injection import INJECT_KINDS
from hypervisor_shim.platform_api import PeInfo
from qemu_launcher.assets import ensure_assets
from qemu_launcher.run import new_run_dir, resolve_accel

COMMANDS = ("up", "status", "inject")
STATE_NAMES = {0: "normal", 1: "reset", 2: "frozen", 4: "dma-stopped", 5: "unavailable"}


class ConsoleNotFound(ShimError):
    """No running topology's platform console could be found."""


def add_subcommands(sub: Any) -> None:
    up = sub.add_parser("up", help="bring a topology up (guests, drivers, consoles)")
    up.add_argument("topology", nargs="?", type=Path, default=DEFAULT_TOPOLOGY,
                    help="topology file (default: the shipped default.toml)")
    up.add_argument("--command", default=None,
                    help="guest command instead of the drivers' agent")
    for name, text in (("status", "PE states of a running topology"),
                       ("inject", "inject an error into a running topology")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--console", type=Path, default=None,
                       help="platform console socket (default: from runs/latest)")
        if name == "inject":
            p.add_argument("pe", help="adapter, vf0, vf1, ...")
            p.add_argument("kind", choices=[str(k) for k in INJECT_KINDS],
                           help="; ".join(f"{k}: {spec.summary}"
                                          for k, spec in INJECT_KINDS.items()))
            p.add_argument("--function", default=None,
                           help="the error function 0-19 or its name (kinds that take one: "
                                + ", ".join(k for k, spec in INJECT_KINDS.items()
                                            if spec.takes_function) + ")")
            p.add_argument("--address", type=lambda s: int(s, 0), default=0)
            p.add_argument("--mask", type=lambda s: int(s, 0), default=0)


def _latest(runs: Path) -> Path:
    return runs / "latest"


def find_console(args: argparse.Namespace) -> Path:
    if args.console is not None:
        return Path(args.console)
    info = _latest(args.runs) / "consoles.json"
    try:
        return Path(json.loads(info.read_text())["platform"])
    except (OSError, ValueError, KeyError) as e:
        raise ConsoleNotFound(f"no running topology found ({info}: {e}); start one with "
                              "`python -m eeh_sriov up` or pass --console") from None


def format_pes(pes: list[dict[str, Any]]) -> str:
    lines = [f"{'PE':<8} {'address':>9} {'state':<22} {'owner':<8} {'freezes':>7}  flags"]
    for p in pes:
        state = f"{p['state']} {STATE_NAMES.get(p['state'], '?')}"
        if p["state"] == 5:
            state += f" {p['retry_ms']}ms" if p["retry_ms"] else " perm"
        lines.append(f"{p['pe']:<8} {p['address']:>#9x} {state:<22} {p['owner'] or '-':<8} "
                     f"{p['freeze_count']:>7}  {','.join(p['flags']) or '-'}")
    return "\n".join(lines)


async def _qmp(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    client = QMPClient("eeh-cli")
    try:
        await asyncio.wait_for(client.connect(str(path)), 10)
    except (TimeoutError, OSError, QMPError) as e:
        raise ConsoleNotFound(f"cannot connect to the platform console {path}: {e}") from None
    try:
        return await client.execute(cmd, args)
    finally:
        await client.disconnect()


async def status(args: argparse.Namespace) -> int:
    pes = await _qmp(find_console(args), "query-pes")
    print(format_pes(pes))
    return 0


async def inject(args: argparse.Namespace) -> int:
    from qemu.qmp import ExecuteError

    qargs: dict[str, Any] = {"pe": args.pe, "kind": args.kind}
    if args.function is not None:
        qargs["function"] = int(args.function) if str(args.function).isdigit() \
            else args.function
    if args.address:
        qargs["address"] = args.address
    if args.mask:
        qargs["mask"] = args.mask
    try:
        result = await _qmp(find_console(args), "eeh-inject", qargs)
    except ExecuteError as e:
        raise ShimError(f"eeh-inject refused: {e.error.error.desc}") from None
    print(json.dumps(result))
    return 0


async def up(args: argparse.Namespace) -> int:
    topo = load_topology(args.topology)
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    accel, why = await resolve_accel(args.accel, assets, cfg_assets, args.runs)
    print(f"up: {topo.source}: {len(topo.guests)} guest(s); {assets.qemu.describe()}; "
          f"accelerator {accel} ({why})", flush=True)
    print(f"up: {assets.qemu.removal()}", flush=True)
    run_dir = new_run_dir(args.runs, "up")
    command = (lambda g: args.command) if args.command else None
    system = System(topo, run_dir, assets, accel=accel, guest_command=command)
    try:
        return await until_signal(_up(args, system, run_dir), lambda: system.stopping)
    except Interrupted:
        print("up: interrupted; everything is down", flush=True)
        return 130


async def _up(args: argparse.Namespace, system: System, run_dir: Path) -> int:
    t0 = time.monotonic()
    boot = asyncio.ensure_future(_progress(t0, "booting guests"))
    try:
        async with system:
            boot.cancel()
            latest = _latest(args.runs)
            with contextlib.suppress(OSError):
                if latest.is_symlink() or latest.exists():
                    latest.unlink()
                os.symlink(run_dir.resolve(), latest)
            print(f"up: guests ready after {time.monotonic() - t0:.1f} s; artifacts in "
                  f"{run_dir}")
            if system.platform.uplink_name != "queue":
                print(f"  uplink:            tcpdump -i {system.platform.uplink_name}")
            print(f"  platform console:  qmp-shell {system.console.platform_path}")
            for name in system.machines:
                print(f"  {name + ' console:':<18} qmp-shell {system.console.path(name)}   "
                      f"(-H for HMP)")
            print("  try: query-pes | eeh-inject pe=adapter kind=adapter-fatal | "
                  "query-pe-error-log pe=adapter")
            print("  Ctrl-C takes everything down.", flush=True)
            await _watch(system)
    finally:
        boot.cancel()
    return 0


async def _progress(t0: float, what: str) -> None:
    while True:
        await asyncio.sleep(5)
        print(f"up: {what} ... {time.monotonic() - t0:.0f} s", flush=True)


async def _watch(system: System) -> None:
    """Print the PE states whenever they change, until cancelled (Ctrl-C)."""
    last: list[PeInfo] = []
    while True:
        pes = await system.platform.query_pes()
        if pes != last:
            stamp = time.strftime("%H:%M:%S")
            print(f"[{stamp}] " + "  ".join(
                f"{p.pe}={p.state}{'(' + ','.join(p.flags) + ')' if p.flags else ''}"
                for p in pes), flush=True)
            last = pes
        await asyncio.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    fn = {"up": up, "status": status, "inject": inject}[args.cmd]
    try:
        return asyncio.run(fn(args))
    except KeyboardInterrupt:
        print("up: interrupted; everything is down" if args.cmd == "up" else "interrupted",
              file=sys.stderr)
        return 130
