"""The platform's subcommands: `up`, `status`, `inject` (wired into `__main__`).

    python -m eeh_sriov up [TOPOLOGY]        # bring a topology up; Ctrl-C takes it down
    python -m eeh_sriov status               # PE states, through the platform console
    python -m eeh_sriov inject adapter adapter-fatal
    python -m eeh_sriov inject vf1 errinjct --function 14

`up` writes `consoles.json` in its run directory and points `runs/latest` at it;
`status` and `inject` find the platform console there unless `--console` names one.
`up --traffic` runs the test traffic (eeh_sriov.traffic): the agents' own probes and the
host's probes from the uplink to every VF (of several adapters, each VF through its own
adapter's uplink), echoed back; after each recovery of a VF the first echo through it is
a `traffic-back` step (timeline and live output, the VF named with its adapter:
nic1.vf3). When `up` ends (Ctrl-C, SIGTERM, every guest gone) it leaves what `demo`
leaves: events.jsonl, timeline.md and summary.json (eeh_sriov.report, the session's
steps) and the uplink's capture, with or without --traffic: uplink.pcap, or of several
adapters one per adapter (uplink-nic0.pcap, uplink-nic1.pcap).
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

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.interrupt import Interrupted, until_signal
from eeh_sriov.report import (
    session_injections,
    session_steps,
    versions,
    write_summary,
    write_timeline_md,
)
from eeh_sriov.system import System, asset_config, settle_heap
from eeh_sriov.topology import DEFAULT_TOPOLOGY, Topology, load_topology
from eeh_sriov.traffic import (
    Target,
    TrafficBack,
    UplinkTraffic,
    guest_traffic_command,
    vf_targets,
    write_pcaps,
)
from hypervisor_shim.errors import ShimError
from hypervisor_shim.injection import INJECT_KINDS
from hypervisor_shim.platform_api import PeInfo
from hypervisor_shim.readiness import DriversNotReady, wait_drivers_ready_async
from hypervisor_shim.timeline import Entry
from qemu_launcher.assets import ensure_assets
from qemu_launcher.run import new_run_dir, resolve_accel

COMMANDS = ("up", "status", "inject")
STATE_NAMES = {0: "normal", 1: "reset", 2: "frozen", 4: "dma-stopped", 5: "unavailable"}
HOST_PROBES_HZ = 25.0  # up --traffic: host probes per VF per second (as demo)
GUEST_PPS = 10.0  # up --traffic: each VF's own probes per second (as demo)
READY_TIMEOUT_S = 180.0
# what up --traffic prints as it happens (besides the PE state lines)
LIVE = {(Source.CONSOLE, Kind.INJECT), (Source.CONSOLE, Kind.RESET_PE),
        (Source.POLICY, Kind.PE_FROZEN), (Source.DRIVER, Kind.RECOVERED),
        (Source.DRIVER, Kind.PERMANENT_FAILURE), (Source.TRAFFIC, Kind.TRAFFIC_BACK)}


class ConsoleNotFound(ShimError):
    """No running topology's platform console could be found."""


def add_subcommands(sub: Any) -> None:
    up = sub.add_parser("up", help="bring a topology up (guests, drivers, consoles)")
    up.add_argument("topology", nargs="?", type=Path, default=DEFAULT_TOPOLOGY,
                    help="topology file (default: the shipped default.toml)")
    up.add_argument("--command", default=None,
                    help="guest command instead of the drivers' agent")
    up.add_argument("--traffic", action="store_true",
                    help="test traffic: every VF probes the uplink and its peers, the host "
                         f"probes every VF ({HOST_PROBES_HZ:g}/s; of several adapters, each "
                         "VF through its own adapter's uplink) and prints when traffic "
                         "comes back after each recovery (a traffic-back step, the VF "
                         "named with its adapter: nic1.vf3). Without it (the default) no "
                         "traffic runs; the uplinks are only captured")
    for name, text in (("status", "PE states of a running topology"),
                       ("inject", "inject an error into a running topology")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--console", type=Path, default=None,
                       help="platform console socket (default: from runs/latest)")
        if name == "inject":
            p.add_argument("pe", help="adapter, vf0, vf1, ... (of several adapters: nic0, "
                                      "nic0.vf0, nic1, nic1.vf3, ...)")
            p.add_argument("kind", choices=[str(k) for k in INJECT_KINDS],
                           help="; ".join(f"{k}: {spec.summary}"
                                          for k, spec in INJECT_KINDS.items()))
            p.add_argument("--function", default=None,
                           help="the error function 0-19 or its name (kinds that take one: "
                                + ", ".join(k for k, spec in INJECT_KINDS.items()
                                            if spec.takes_function) + ")")
            p.add_argument("--address", type=_integer, default=0,
                           help="errinjct: the address to match (decimal or 0x...)")
            p.add_argument("--mask", type=_integer, default=0,
                           help="errinjct: the address mask (decimal or 0x...)")


def _integer(text: str) -> int:
    """--address/--mask: an integer as Python writes one (12, 0x1000); the console checks
    the range. Named, so argparse's error names the value, not "<lambda>"."""
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an integer (decimal, or hexadecimal as 0x...)") from None


def _latest(runs: Path) -> Path:
    return runs / "latest"


def find_console(args: argparse.Namespace) -> Path:
    if args.console is not None:
        return Path(args.console)
    info = _latest(args.runs) / "consoles.json"
    try:
        path = Path(json.loads(info.read_text())["platform"])
    except (OSError, ValueError, KeyError) as e:
        raise ConsoleNotFound(f"no running topology found ({info}: {e}); start one with "
                              "`python -m eeh_sriov up` or pass --console") from None
    # `up` removes its sockets when it ends, and runs/latest stays: say that, not ENOENT
    if not path.exists():
        raise ConsoleNotFound(f"no running topology: the last `up` ({info.parent.resolve()}) "
                              f"has ended (its console {path} is gone); start one with "
                              "`python -m eeh_sriov up` or pass --console")
    return path


def format_pes(pes: list[dict[str, Any]]) -> str:
    w = max([8, *(len(str(p["pe"])) for p in pes)])  # "nic1.vf63" of several adapters
    lines = [f"{'PE':<{w}} {'address':>9} {'state':<22} {'owner':<8} {'freezes':>7}  flags"]
    for p in pes:
        state = f"{p['state']} {STATE_NAMES.get(p['state'], '?')}"
        if p["state"] == 5:
            state += f" {p['retry_ms']}ms" if p["retry_ms"] else " perm"
        lines.append(f"{p['pe']:<{w}} {p['address']:>#9x} {state:<22} {p['owner'] or '-':<8} "
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
    command = (lambda g: args.command) if args.command else (
        (lambda g: guest_traffic_command(topo, g.name, GUEST_PPS)) if args.traffic else None)
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
            for adapter, uplink in system.platform.uplink_names.items():
                if uplink != "queue":
                    label = f"uplink {adapter}:" if adapter else "uplink:"
                    print(f"  {label:<18} tcpdump -i {uplink}")
            print(f"  platform console:  qmp-shell {system.console.platform_path}")
            for name in system.machines:
                print(f"  {name + ' console:':<18} qmp-shell {system.console.path(name)}   "
                      f"(-H for HMP)")
            pe = system.topo.adapter_pes[0]
            print(f"  try: query-pes | eeh-inject pe={pe} kind=adapter-fatal | "
                  f"query-pe-error-log pe={pe}")
            print("  Ctrl-C takes everything down.", flush=True)
            session = Session(args, system, run_dir, t0)
            with UplinkTraffic(system.platform, probed(system.topo), rate_hz=HOST_PROBES_HZ,
                               probing=args.traffic) as traffic:
                session.start(traffic)
                try:
                    await _watch(system)
                finally:  # no await here: a second Ctrl-C cannot cut it short
                    session.finish(traffic)
    finally:
        boot.cancel()
    return 0


async def _progress(t0: float, what: str) -> None:
    while True:
        await asyncio.sleep(5)
        print(f"up: {what} ... {time.monotonic() - t0:.0f} s", flush=True)


class Session:
    """What `up` does besides its PE state lines: the drivers' readiness, the live steps,
    with --traffic the traffic-back watch, and the artifacts when it ends."""

    def __init__(self, args: argparse.Namespace, system: System, run_dir: Path,
                 t0: float) -> None:
        self.args = args
        self.system = system
        self.run_dir = run_dir
        self.t0 = t0
        self.back: TrafficBack | None = None
        self._loop = asyncio.get_running_loop()
        self._tasks: list[asyncio.Future[None]] = []

    def start(self, traffic: UplinkTraffic) -> None:
        if self.args.traffic:
            self.back = TrafficBack(traffic, self.system.platform.timeline)
            self.back.start()
            self.system.platform.timeline.add_listener(self._live)
        if not self.args.command:  # the drivers' agent runs: say when it is ready
            self._tasks.append(asyncio.ensure_future(self._ready(traffic)))

    async def _ready(self, traffic: UplinkTraffic) -> None:
        plat = self.system.platform
        try:
            await wait_drivers_ready_async(plat.timeline, self.system.topo.guest_pes,
                                           READY_TIMEOUT_S, interval=0.2)
        except DriversNotReady as e:
            print(f"up: {e}", flush=True)
            return
        plat.timeline.record(Source.SHIM, Kind.DRIVERS_READY,
                             data={"s": round(time.monotonic() - self.t0, 3)})
        settle_heap()
        print(f"up: drivers ready after {time.monotonic() - self.t0:.1f} s", flush=True)
        if not self.args.traffic:
            return
        for name in traffic.targets:
            if await asyncio.to_thread(traffic.wait_echo_after, name, 0.0, 60) is None:
                print(f"up: no traffic through {name} (no echo within 60 s)", flush=True)
                return
        print(traffic_flows_line(self.system.topo, list(traffic.targets)), flush=True)

    def _live(self, e: Entry) -> None:  # any thread: printed on the loop's
        if (e.source, e.kind) in LIVE and not e.data.get("side_effect"):
            with contextlib.suppress(RuntimeError):  # the loop is closing
                self._loop.call_soon_threadsafe(_say, live_line(e))

    def finish(self, traffic: UplinkTraffic) -> None:
        """Stop watching, then write timeline.md, summary.json and the uplink captures
        (blocking: nothing here may be interrupted half-way); events.jsonl is written as
        it goes."""
        plat = self.system.platform
        plat.timeline.remove_listener(self._live)
        for task in self._tasks:
            task.cancel()
        if self.back is not None:
            self.back.stop()
        traffic.stop()
        stats = traffic.stats(in_flight_s=0.5) if self.args.traffic else {}
        pcaps = write_pcaps(traffic, self.run_dir)
        system = self.system
        paths = write_session(self.run_dir, system.topo, plat.timeline.snapshot(),
                              traffic=self.args.traffic, stats=stats, pcaps=pcaps,
                              t0=self.t0, extra={
                                  "accel": system.accel,
                                  "guests": {n: vm.summary for n, vm in
                                             system.machines.items()},
                                  "versions": versions({"qemu": system.assets.qemu.describe()})})
        print(f"up: wrote {', '.join(p.name for p in paths)} "
              f"({sum(pcaps.values())} frames) and events.jsonl in {self.run_dir}", flush=True)


def _say(line: str) -> None:
    print(line, flush=True)


def live_line(e: Entry) -> str:
    """One step as `up --traffic` prints it as it happens."""
    who = e.owner or e.source
    extra = ""
    if e.kind == Kind.TRAFFIC_BACK:
        extra = f", {e.data.get('ms', '?')} ms after its driver's {e.data.get('after', '?')}"
    elif e.source == Source.CONSOLE:
        extra = "".join(f" {k}={v}" for k, v in e.data.items() if v is not None)
    elif e.kind == Kind.PE_FROZEN:
        extra = f" ({e.data.get('reason') or 'frozen'})"
    return f"[{time.strftime('%H:%M:%S')}] {e.kind:<18} {e.pe or '':<8} {who}{extra}"


def traffic_flows_line(topo: Topology, probed_vfs: list[str]) -> str:
    """What `up --traffic` says once every probed VF has echoed (of several adapters,
    each through its own adapter's uplink)."""
    line = f"up: traffic flows through every VF ({', '.join(probed_vfs)})"
    if len(topo.adapters) > 1:
        line += ", each through its own adapter's uplink"
    return line


def probed(topo: Topology) -> dict[str, Target]:
    """The VFs the host's probes go to: every VF a guest holds (of several adapters,
    each through its own adapter's uplink: UplinkTraffic routes it by its name)."""
    return vf_targets(topo)


def write_session(run_dir: Path, topo: Topology, entries: list[Entry], *, traffic: bool,
                  stats: dict[str, dict[str, int]], pcaps: dict[str, int], t0: float,
                  extra: dict[str, Any]) -> list[Path]:
    """timeline.md and summary.json of an `up` session (eeh_sriov.report's writers):
    the steps since the drivers were ready (or, if they never were, since the guests);
    `pcaps`: the uplink captures written (file name -> frames); `extra`: what the
    summary says of the system (accelerator, guests, versions)."""
    ready = next((e for e in entries if e.kind == Kind.DRIVERS_READY), None)
    start = ready.t if ready is not None else t0
    steps = session_steps(entries, probed(topo), traffic=traffic)
    md, js = run_dir / "timeline.md", run_dir / "summary.json"
    write_timeline_md(md, f"Operator session (up {topo.source})", steps, entries, start,
                      since="drivers ready" if ready is not None else "guests ready")
    injections = session_injections(entries, start)
    first = injections[0]["traffic_back_ms"] if injections else {}
    ledgers = {e.pe: e.data.get("ledger") for e in entries
               if e.source == Source.DRIVER and e.kind == Kind.RECOVERED}
    write_summary(js, steps=steps, t0=start, counters={
        n: {"uplink_probes": st, "driver_ledger": ledgers.get(n)} for n, st in stats.items()},
        extra={"kind": "up", "topology": topo.source, "traffic": traffic,
               # the first console action's: until the last VF's traffic came back
               "recovery_ms": max(first.values()) if first else None,
               "injections": injections,
               "timing": {a.name or "adapter": a.timing for a in topo.all_adapters}
               if len(topo.adapters) > 1 else topo.adapter.timing,
               "drivers_ready_s": ready.data.get("s") if ready is not None else None,
               "uplink_pcap_frames": sum(pcaps.values()), "uplink_pcaps": pcaps,
               **extra})
    return [md, js, *(run_dir / name for name in pcaps)]


def state_line(pes: list[PeInfo]) -> str:
    """The PE states as `up` prints them: PE=state(flags) for each PE."""
    return "  ".join(f"{p.pe}={p.state}{'(' + ','.join(p.flags) + ')' if p.flags else ''}"
                     for p in pes)


class StateLines:
    """The state lines `up` prints: a line only when it differs from the last one printed
    (what it shows, not the PEs' other fields: a freeze count or retry hint that moved
    alone printed the same line twice)."""

    def __init__(self) -> None:
        self.last = ""

    def changed(self, pes: list[PeInfo]) -> str | None:
        line = state_line(pes)
        if line == self.last:
            return None
        self.last = line
        return line


async def _watch(system: System) -> None:
    """Print the PE states whenever they change, until cancelled (Ctrl-C) or every
    guest is gone."""
    lines = StateLines()
    while True:
        line = lines.changed(await system.platform.query_pes())
        if line is not None:
            print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
        if system.machines and len(system.dead) == len(system.machines):
            print("up: every guest is gone", flush=True)
            return
        await asyncio.sleep(0.5)


def run(args: argparse.Namespace) -> int:
    fn = {"up": up, "status": status, "inject": inject}[args.cmd]
    try:
        return asyncio.run(fn(args))
    except KeyboardInterrupt:
        print("up: interrupted; everything is down" if args.cmd == "up" else "interrupted",
              file=sys.stderr)
        return 130
