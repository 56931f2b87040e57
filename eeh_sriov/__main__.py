"""Command line: `python -m eeh_sriov ...`. Environment and flags are read here only.

Errors end here: every exception of the project's packages (`ShimError`, the launcher's
`VmError`, the device model's `DeviceModelError`, the transport's `VfioUserError`, the
console server's `QmpServerError`), of qemu.qmp (`QMPError`:
QEMU refused a command, or its connection was lost) and of the OS is reported as one
line, `error: <message>`, on stderr with exit status 1 and no traceback. A guest
failure's evidence (artifacts directory, last console lines) follows on indented lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from qemu.qmp import QMPError

from device_model.errors import DeviceModelError
from eeh_sriov import operator_cli
from eeh_sriov.campaign import cli as campaign_cli
from eeh_sriov.interrupt import Interrupted, until_signal
from eeh_sriov.recovery_demo import KINDS, OUTCOME, Story, StoryConfig, check_story
from eeh_sriov.system import asset_config
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from eeh_sriov.transport_demo import GUEST_COMMAND, Echo, run_with_guest, summarize
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from hypervisor_shim.errors import ShimError
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.config import MachineConfig
from qemu_launcher.errors import VmError
from qemu_launcher.machine import GuestResult, Machine, MachineState
from qemu_launcher.run import new_run_dir, resolve_accel, with_accel
from qmp_server import QmpServerError
from vfio_user.errors import VfioUserError

# What the command line reports as `error: ...` rather than a traceback.
REPORTED = (ShimError, VmError, DeviceModelError, VfioUserError, QMPError, QmpServerError,
            OSError)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m eeh_sriov")
    p.add_argument("--runs", type=Path, default=REPO / "runs",
                   help="where run artifacts go (default: ./runs)")
    p.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
    sub = p.add_subparsers(dest="cmd", required=True)
    vm = sub.add_parser("vm", help="boot a guest and run one command in it")
    vm.add_argument("--show-command", action="store_true",
                    help="print the QEMU command line and exit")
    vm.add_argument("--timeout", type=float, default=300.0)
    vm.add_argument("--memory", type=int, default=512, help="MiB")
    vm.add_argument("command", nargs=argparse.REMAINDER,
                    help="guest shell command (after --)")
    demo = sub.add_parser("demo", help="the main job: the recovery story in three guests")
    demo.add_argument("topology", nargs="?", type=Path, default=DEFAULT_TOPOLOGY,
                      help="topology file (default: the shipped default.toml)")
    demo.add_argument("--timing", choices=("fast", "spec"), default=None,
                      help="reset timing (default: the topology's)")
    demo.add_argument("--kind", choices=KINDS, default="adapter",
                      help="adapter error (default), VF-only error, or permanent failure")
    demo.add_argument("--vf", default="vf0", help="the VF of a VF-only error")
    tdemo = sub.add_parser("transport-demo",
                           help="the transport alone: PF and VFs in one guest over vfio-user")
    tdemo.add_argument("--host-cpus", type=_host_cpus, default=None, metavar="auto|none|N,M",
                      help="host CPUs for the device model and the guest (default auto: "
                           "one CPU shared by both; none: no pinning)")
    operator_cli.add_subcommands(sub)
    campaign_cli.add_subcommand(sub)
    return p


async def _vm(args: argparse.Namespace) -> int:
    assets = ensure_assets(asset_config())
    command = " ".join(a for a in args.command if a != "--") or "true"
    cfg = MachineConfig(name="vm", memory_mib=args.memory)
    if args.show_command:
        m = Machine(cfg, assets, run_dir=Path("RUN_DIR"), repo=REPO, command=command)
        print(m.show_command())
        return 0
    accel, why = await resolve_accel(args.accel, assets, asset_config(), args.runs)
    print(f"vm: {assets.qemu.describe()}; accelerator {accel} ({why})", file=sys.stderr)
    _warn_drift(assets)
    run_dir = new_run_dir(args.runs, "vm")
    vm = Machine(with_accel(cfg, accel), assets, run_dir=run_dir, repo=REPO, command=command)

    async def run() -> GuestResult:
        async with vm:
            return await vm.wait_exit(args.timeout)
    try:
        result = await until_signal(run(), lambda: vm.state is MachineState.STOPPED)
    except Interrupted:
        print("vm: interrupted; QEMU stopped", file=sys.stderr)
        return 130
    sys.stdout.write(result.output)
    print(f"vm: exit status {result.status}; ready after {result.ready_s:.2f} s; "
          f"artifacts in {run_dir}", file=sys.stderr)
    return result.status


def _host_cpus(text: str) -> tuple[int, ...] | None:
    if text == "auto":
        return None
    if text == "none":
        return ()
    try:
        cpus = tuple(sorted({int(c) for c in text.split(",") if c.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r}") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not set(cpus) <= allowed:
        raise argparse.ArgumentTypeError(
            f"CPUs {text!r} are not among those allowed here ({sorted(allowed)})")
    return cpus


async def _story(args: argparse.Namespace) -> int:
    """The main job: the recovery story on a topology, told as it happens."""
    topo = load_topology(args.topology)
    if args.timing is not None:
        topo = topo.with_timing("spec" if args.timing == "spec" else "fast")
    check_story(topo, args.kind, args.vf)  # bad input refused before any set-up
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    accel, why = await resolve_accel(args.accel, assets, cfg_assets, args.runs)
    print(f"demo: {assets.qemu.describe()}; accelerator {accel} ({why})", flush=True)
    print(f"demo: {assets.qemu.removal()}", flush=True)
    _warn_drift(assets)
    run_dir = new_run_dir(args.runs, f"demo-{args.kind}")
    story = Story(StoryConfig(topo, kind=args.kind, vf=args.vf, accel=accel), assets, run_dir,
                  say=lambda line: print(line, flush=True))
    try:
        result = await until_signal(
            story.run(), lambda: story.system is not None and story.system.stopping)
    except Interrupted:
        print("demo: interrupted; everything is down", flush=True)
        return 130
    print(f"demo: {OUTCOME[args.kind] if result.ok else result.failure}")
    print(f"demo: artifacts in {run_dir} (events.jsonl, timeline.md, summary.json, "
          f"{', '.join(result.summary.get('uplink_pcaps', {})) or 'uplink.pcap'}; "
          "per guest: console.log, qmp.jsonl)")
    return 0 if result.ok else 1


async def _demo(args: argparse.Namespace) -> int:
    """The transport alone: the adapter's PF and two VFs in a real guest."""
    cfg_assets = asset_config()
    assets = ensure_assets(cfg_assets)
    accel, why = await resolve_accel(args.accel, assets, cfg_assets, args.runs)
    print(f"demo: {assets.qemu.describe()}; accelerator {accel} ({why})")
    _warn_drift(assets)
    run_dir = new_run_dir(args.runs, "demo")
    results = run_dir / "results"
    record: dict[str, object] = {}
    host_cfg = AdapterHostConfig(total_vfs=4, enabled_vfs=3, host_cpus=args.host_cpus)
    with AdapterHost(host_cfg) as host:
        cfg = host.machine_config(MachineConfig(name="demo", accel=accel), ["pf", "vf0", "vf1"])
        where = (f"host CPU(s) {','.join(map(str, host.host_cpus))} shared by the device "
                 "model and the guest" if host.host_cpus else "no CPU pinning")
        print(f"demo: serving pf, vf0, vf1 over vfio-user ({where}); booting the guest")
        echo = Echo(host)
        echo.start()
        try:
            async with Machine(cfg, assets, run_dir=run_dir, repo=REPO,
                               command=GUEST_COMMAND) as vm:
                print(f"demo: guest ready after {vm.summary['ready_s']:.1f} s")
                status = await run_with_guest(host, vm, results, record)
        finally:
            echo.stop.set()
    print(summarize(results, record, status))
    print(f"demo: artifacts in {run_dir}")
    return status


def _warn_drift(assets: GuestAssets) -> None:
    if assets.rootfs_lock.drift:
        print(f"warning: {assets.rootfs_lock.summary()}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "vm":
            return asyncio.run(_vm(args))
        if args.cmd in operator_cli.COMMANDS:
            return operator_cli.run(args)
        if args.cmd == campaign_cli.COMMAND:
            return campaign_cli.run(args, args.runs)
        if args.cmd == "demo":
            return asyncio.run(_story(args))
        return asyncio.run(_demo(args))
    except REPORTED as e:
        print(f"error: {str(e) or type(e).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
