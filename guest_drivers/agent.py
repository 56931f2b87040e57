"""The guest's driver agent: `python3 -m guest_drivers.agent` (root, inside a guest).

One process runs every driver of the partition, each on its own thread (a virtio port
opens for one process only, so they share one platform channel):

1. open the platform channel (the virtio-serial port `eeh.hcall`, or --port);
2. `query-functions`: which functions this partition owns;
3. the adapter (PF) driver first, if the partition owns the PF (one after the other, one
   per adapter, when it holds the PFs of several), then a VF driver per VF (probed in
   parallel; a VF waits for its mailbox's "PF reset done", its own adapter's);
4. print `drivers ready: <names>` and run until SIGTERM/SIGINT (or --duration);
   optionally a traffic loop (--traffic PPS: every VF sends PPS probes a second to the
   uplink and counts what it receives). VF drivers answer the host's test-traffic probes
   (eeh_abi.traffic) with echoes unless --no-echo;
5. on the way out: `drivers stopped` and `summary: <JSON>` (every driver's counters),
   also written to --summary FILE.

Hot-plug: a driver without error handlers is detached when the platform removes its
function (udev `remove` in a guest, `function-removed` in the harness) and probed again
when it comes back. `python -m guest_drivers.harness` runs the same agent on the host.
"""

from __future__ import annotations

import argparse
import json
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eeh_abi import traffic
from eeh_abi.vocabulary import Kind
from guest_drivers.driver import Driver, DriverError, DriverState
from guest_drivers.pf import PfDriver
from guest_drivers.platform.base import FunctionInfo, PlatformBackend
from guest_drivers.platform.errors import PlatformError
from guest_drivers.poll import PollConfig
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver

log = logging.getLogger("guest_drivers.agent")

TRAFFIC_DST = bytes.fromhex("02feeeeeee01")  # unknown unicast: the switch sends it uplink
UPLINK_TARGET = 0xFFFF  # eeh_abi.traffic target of a probe to the uplink (no VF)
# The drivers of one group (VFs, then the adapter) stop within this, all together
STOP_TIMEOUT_S = 30.0


class Agent:
    def __init__(self, backend: PlatformBackend, *, handlers: bool | None = None,
                 vfs: int | None = None, poll: PollConfig | None = None,
                 echo: Callable[[str], None] | None = None,
                 vf_options: dict[str, Any] | None = None,
                 serial_recovery: bool = False) -> None:
        """`handlers`: None follows each function's `handlers` from query-functions;
        `vfs`: drive at most this many of the partition's VFs (lowest numbers first);
        `serial_recovery`: the VF drivers share one lock held for a whole recovery, so
        they recover one after another, as Linux's single EEH recovery thread does (a
        baseline for benchmarks; the default is every VF driver on its own, in parallel).
        """
        self.backend = backend
        self.services = Services(backend.channel, echo=echo)
        self.handlers = handlers
        self.vf_limit = vfs
        self.poll = poll
        self.vf_options = dict(vf_options or {})
        self.serial_recovery = serial_recovery
        self.recovery_lock = threading.Lock() if serial_recovery else None
        self.infos: dict[str, FunctionInfo] = {}
        self.drivers: dict[str, Driver] = {}
        self.failed: dict[str, str] = {}
        self.selected: set[str] = set()
        self.hotplug_log: list[tuple[float, str, str, str]] = []
        self._hotplug: queue.Queue[tuple[str, str] | None] = queue.Queue()
        self._hotplug_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, probe_timeout: float = 120.0) -> list[str]:
        infos = self.backend.query_functions()
        self.infos = {i.name: i for i in infos}
        pfs = [i for i in infos if i.kind == "pf"]
        # adapter by adapter ("nic1.vf3": several adapters, one PF driver each; a VF
        # driver waits on its own adapter's PF, through its own function's mailbox)
        vfs = sorted((i for i in infos if i.kind == "vf"),
                     key=lambda i: (i.name.rpartition(".")[0], i.vf or 0))
        if self.vf_limit is not None:
            vfs = vfs[:self.vf_limit]
        self.selected = {i.name for i in pfs + vfs}
        for info in pfs:  # the adapter first: VFs wait for its "PF reset done"
            self._start_driver(info, probe_timeout)
        started = [d for d in (self._create(i) for i in vfs) if d is not None]
        for d in started:
            d.start(wait=None)
        for d in started:
            try:
                d.wait_probed(probe_timeout)
            except DriverError as e:
                self.failed[d.name] = str(e)
                log.error("%s", e)
        self.backend.watch_hotplug(self._on_hotplug)
        self._hotplug_thread = threading.Thread(target=self._hotplug_loop, name="hotplug",
                                                daemon=True)
        self._hotplug_thread.start()
        return self.ready()

    def ready(self) -> list[str]:
        return [n for n, d in self.drivers.items() if d.state in
                (DriverState.UP, DriverState.RECOVERING)]

    def _create(self, info: FunctionInfo) -> Driver | None:
        try:
            fn = self.backend.open_function(info)
        except PlatformError as e:
            self.failed[info.name] = str(e)
            log.error("%s: %s", info.name, e)
            return None
        d: Driver
        if info.kind == "pf":
            d = PfDriver(fn, self.services, poll=self.poll)
        else:
            handlers = info.handlers if self.handlers is None else self.handlers
            d = VfDriver(fn, self.services, handlers=handlers, poll=self.poll,
                         recovery_lock=self.recovery_lock, **self.vf_options)
        self.drivers[info.name] = d
        return d

    def _start_driver(self, info: FunctionInfo, timeout: float) -> None:
        d = self._create(info)
        if d is None:
            return
        try:
            d.start(wait=timeout)
        except DriverError as e:
            self.failed[info.name] = str(e)
            log.error("%s", e)

    def stop(self) -> None:
        self._hotplug.put(None)
        if self._hotplug_thread is not None:
            self._hotplug_thread.join(10)
        # VFs first: the adapter driver outlives them. Each group is asked at once and
        # waited for within one deadline, so a stuck driver costs STOP_TIMEOUT_S once,
        # not once per driver (Driver.stop logs where a stuck one was)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for group in ([d for d in self.drivers.values() if d.kind != "pf"],
                      [d for d in self.drivers.values() if d.kind == "pf"]):
            for d in group:
                d.request_stop()
            for d in group:
                d.stop(deadline - time.monotonic())
        for d in self.drivers.values():
            try:
                d.fn.close()
            except Exception:  # stopping anyway: a function that will not close is let go
                log.warning("closing %s failed", d.name, exc_info=True)
        self.services.close()

    def restart_driver(self, name: str) -> Driver | None:
        """The driver of function `name` died (its thread stopped where it was, its
        connection to the function closed, as a crashed process's): a new driver probes it
        on a new connection, as a reloaded module would (the fault campaigns' driver
        crash). Returns the new driver (None: the function could not be opened)."""
        old = self.drivers[name]
        old.stop()
        try:
            old.fn.close()
        except Exception:  # a dead driver's connection may be half gone already
            log.debug("closing %s after its crash failed", name, exc_info=True)
        d = self._create(self.infos[name])
        if d is not None:
            d.start(wait=None)
        return d

    # ------------------------------------------------------------------ hot-plug
    def _on_hotplug(self, kind: str, name: str) -> None:
        # called on the channel's reader (or udev) thread: a probe makes platform calls,
        # whose replies that very thread delivers, so the work is done elsewhere
        self._hotplug.put((kind, name))

    def _hotplug_loop(self) -> None:
        while True:
            item = self._hotplug.get()
            if item is None:
                return
            kind, name = item
            try:
                self._handle_hotplug(kind, name)
            except Exception as e:
                log.exception("hot-plug %s %s failed", kind, name)
                self.hotplug_log.append((time.monotonic(), kind, name, f"failed: {e}"))

    def _handle_hotplug(self, kind: str, name: str) -> None:
        d = self.drivers.get(name)
        info = self.infos.get(name)
        if info is None:
            return
        if kind == "removed":
            if d is not None and d.state is not DriverState.DETACHED:
                d.detach("removed by the platform")
                self.hotplug_log.append((time.monotonic(), kind, name, "detached"))
        elif kind == "added":
            if name not in self.selected:
                return  # not one this agent drives (--vfs)
            if d is None:  # it could not be reached at start
                self.failed.pop(name, None)
                d = self._create(info)
                if d is None:
                    return
                d.start()
            elif d.state in (DriverState.DETACHED, DriverState.FAILED, DriverState.STOPPED):
                d.reattach(self.backend.open_function(info))
            else:
                return
            self.hotplug_log.append((time.monotonic(), kind, name, "probed"))

    # ------------------------------------------------------------------ reporting
    def vf_drivers(self) -> list[VfDriver]:
        return [d for d in self.drivers.values() if isinstance(d, VfDriver)]

    def summary(self) -> dict[str, Any]:
        return {"drivers": {n: d.counters() for n, d in self.drivers.items()},
                "failed": dict(self.failed),
                "hotplug": [list(h) for h in self.hotplug_log],
                "reports": {"sent": self.services.reports_sent,
                            "failed": self.services.reports_failed}}


class TrafficLoop:
    """Every VF sends `pps` test-traffic probes (eeh_abi.traffic; stream 1 + VF number,
    a sequence number each) a second to the uplink and to each of `peers` (VFs of other
    guests, through the adapter's switch; target = the peer's index), and drains what it
    receives, counting the echoes of its own probes exactly (per peer: sent, echoed,
    duplicates). Every `report_s` the counters go to the platform (`traffic` reports)."""

    def __init__(self, agent: Agent, pps: float, dst: bytes = TRAFFIC_DST,
                 peers: Sequence[bytes] = (), report_s: float = 2.0) -> None:
        self.agent = agent
        self.period = 1.0 / pps
        self.dst = dst
        self.peers = list(peers)
        self.report_s = report_s
        self.sent = 0
        self.refused = 0
        self.received = 0
        self.peer_sent: dict[tuple[str, int], int] = {}
        self.peer_seen: dict[tuple[str, int], set[int]] = {}
        self.peer_dups: dict[tuple[str, int], int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        seq = 0
        last_report = time.monotonic()
        while not self._stop.wait(self.period):
            seq += 1
            for vf in self.agent.vf_drivers():
                if vf.state is not DriverState.UP and vf.state is not DriverState.RECOVERING:
                    continue
                n = vf.fn.info.vf or 0
                now_ns = time.monotonic_ns()
                probe = traffic.Probe(self.dst, vf.mac, traffic.PROBE, 1 + n, UPLINK_TARGET,
                                      seq, now_ns)
                if vf.send(traffic.build(probe)):
                    self.sent += 1
                else:
                    self.refused += 1
                for i, peer in enumerate(self.peers):
                    if peer == vf.mac:
                        continue
                    key = (vf.name, i)
                    if vf.send(traffic.build(traffic.Probe(peer, vf.mac, traffic.PROBE, 1 + n,
                                                           i, seq, now_ns))):
                        self.peer_sent[key] = self.peer_sent.get(key, 0) + 1
                    else:
                        self.refused += 1
                for frame in vf.recv():
                    self.received += 1
                    self._count(vf.name, 1 + n, frame)
            if time.monotonic() - last_report >= self.report_s:
                last_report = time.monotonic()
                self.agent.services.report(Kind.TRAFFIC, None, self.counters())

    def _count(self, name: str, stream: int, frame: bytes) -> None:
        p = traffic.parse(frame)
        if p is None or p.kind != traffic.ECHO or p.stream != stream or \
                p.target >= len(self.peers):
            return
        key = (name, p.target)
        seen = self.peer_seen.setdefault(key, set())
        if p.seq in seen:
            self.peer_dups[key] = self.peer_dups.get(key, 0) + 1
        else:
            seen.add(p.seq)

    def counters(self) -> dict[str, Any]:
        peers = {}
        for (name, i), sent in sorted(self.peer_sent.items()):
            peers[f"{name}->{self.peers[i].hex(':')}"] = {
                "sent": sent, "echoed": len(self.peer_seen.get((name, i), ())),
                "duplicates": self.peer_dups.get((name, i), 0)}
        return {"uplink_probes_sent": self.sent, "refused": self.refused,
                "received": self.received, "peers": peers}


# ---------------------------------------------------------------------- command line
def arguments(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--no-handlers", dest="handlers", action="store_const", const=False,
                   default=None, help="VF drivers without error handlers (default: as the "
                                      "platform's query-functions says)")
    p.add_argument("--handlers", dest="handlers", action="store_const", const=True,
                   help="VF drivers with error handlers, whatever the platform says")
    p.add_argument("--vfs", type=int, default=None, help="drive at most N of the VFs")
    p.add_argument("--traffic", type=float, default=0.0, metavar="PPS",
                   help="each VF sends PPS frames a second to the uplink (and to --peers)")
    p.add_argument("--peers", default="", metavar="MAC,MAC",
                   help="VF MACs of other guests to probe through the adapter's switch")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds (default: at SIGTERM/SIGINT)")
    p.add_argument("--summary", default=None, metavar="FILE",
                   help="also write the summary JSON here")
    p.add_argument("--no-echo", dest="echo", action="store_false",
                   help="do not answer test-traffic probes (eeh_abi.traffic) with echoes")
    p.add_argument("--max-sleep-ms", type=float, default=30.0,
                   help="longest idle poll sleep (default 30)")
    p.add_argument("--settled-watch-ms", type=float, default=100.0,
                   help="how often parked drivers with sparse work are looked at "
                        "(default 100; guest_drivers.poll)")
    p.add_argument("--sender", action="store_true",
                   help="answer the platform's bench-send events: frames through a VF as "
                        "fast as its driver takes them (benchmarks; guest_drivers.sender)")
    p.add_argument("--serial-recovery", action="store_true",
                   help="VF drivers recover one after another (as Linux's single recovery "
                        "thread does), not in parallel: a baseline for benchmarks")
    p.add_argument("--verbose", action="store_true", help="print every step reported")
    p.add_argument("--cpu-every", type=float, default=0.0, metavar="S",
                   help="print `agent-cpu: {JSON}` (the process's and each thread's CPU "
                        "time) every S seconds (benchmarks; guest_drivers.profiling)")
    p.add_argument("--profile", default=None, metavar="FILE",
                   help="cProfile every thread, write the pstats to FILE at the end")
    return p


def run(backend: PlatformBackend, args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(threadName)s %(levelname)s %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    profiles = cpu_lines = None
    if args.profile or args.cpu_every > 0:
        from guest_drivers.profiling import CpuLines, ThreadProfiles

        if args.profile:
            profiles = ThreadProfiles()
            profiles.install()
        if args.cpu_every > 0:
            cpu_lines = CpuLines(args.cpu_every, lambda s: print(s, flush=True))
            cpu_lines.start()
    poll = PollConfig(max_sleep_s=args.max_sleep_ms / 1000,
                      settled_watch_s=args.settled_watch_ms / 1000)
    agent = Agent(backend, handlers=args.handlers, vfs=args.vfs, poll=poll,
                  echo=(lambda s: print(s, flush=True)) if args.verbose else None,
                  vf_options={"echo": args.echo}, serial_recovery=args.serial_recovery)
    try:
        names = agent.start()
    except (PlatformError, OSError) as e:
        print(f"agent: {e}", file=sys.stderr, flush=True)
        backend.close()
        return 1
    for name, why in agent.failed.items():
        print(f"driver {name} failed: {why}", flush=True)
    print(f"drivers ready: {' '.join(names)}", flush=True)
    peers = [bytes.fromhex(m.replace(":", "")) for m in args.peers.split(",") if m] \
        if args.peers else []
    traffic = TrafficLoop(agent, args.traffic, peers=peers) if args.traffic > 0 else None
    if traffic is not None:
        traffic.start()
    sender = None
    if args.sender:
        from guest_drivers.sender import BenchSender

        sender = BenchSender(agent.services, agent.drivers)
        sender.start()
    stop.wait(args.duration)
    if sender is not None:
        sender.stop()
    if traffic is not None:
        traffic.stop()
    agent.stop()
    if cpu_lines is not None:
        cpu_lines.stop()
    if profiles is not None:
        try:
            profiles.dump(args.profile)
        except OSError as e:
            print(f"agent: profile not written: {e}", file=sys.stderr, flush=True)
    summary = agent.summary()
    if traffic is not None:
        summary["traffic"] = traffic.counters()
    backend.close()
    text = json.dumps(summary, sort_keys=True, default=str)
    print("drivers stopped", flush=True)
    print(f"summary: {text}", flush=True)
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(text + "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = arguments("python3 -m guest_drivers.agent",
                  "Run this guest's adapter and VF drivers (root, inside a guest).")
    p.add_argument("--port", default=None,
                   help="the platform channel's device (default: the virtio-serial port "
                        "named eeh.hcall)")
    args = p.parse_args(argv)
    from guest_drivers.platform.guest import open_backend

    try:
        backend = open_backend(args.port)
    except PlatformError as e:
        print(f"agent: {e}", file=sys.stderr, flush=True)
        return 1
    return run(backend, args)


if __name__ == "__main__":
    sys.exit(main())
