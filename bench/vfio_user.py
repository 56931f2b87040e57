"""vfio-user MMIO round trips: host client -> server (another process) -> client.

    .venv/bin/python -m bench.vfio_user [--quick] [--n 3000] [--json FILE]

Measured side by side in one run (the machine is shared and noisy), in interleaved
rounds: a bare AF_UNIX ping-pong between two Python processes (32-byte request, 36-byte
reply, the size of a 4-byte REGION_READ) as the baseline; 4-byte region reads; 4-byte
non-posted writes; posted writes (issue cost, and drain rate measured by a read after a
burst). The server reports its own time per message (receive + frame + process + reply,
`Endpoint.busy_ns`), and the protocol core alone (`Session.process`, no syscalls) is
timed in-process. Goal: server cost per message <= 30 us. The whole measurement runs twice:
"spread" (the processes on any CPU) and "colocated" (all on one CPU, as AdapterHost places
the device model and its guests), and the ratio of their read p50s is reported. The goals
are judged in the colocated placement (AdapterHost's default); `--json FILE` writes every
figure of both placements and the goals (a part of make bench's results.json).
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import goals
from bench.stats import dist, one_line, percentile, scalar
from hypervisor_shim.adapter_host import colocated_cpu
from vfio_user import Client, ServerConfig, Session, serve
from vfio_user import codec as c
from vfio_user.contract import IrqFlag, IrqInfo, IrqSink, RegionFlag, RegionInfo
from vfio_user.framing import Frame
from vfio_user.memory import GuestMemory

GOAL_US = goals.VFIO_USER_SERVER.limit
PING_REQ, PING_REPLY = 32, 36


class RegisterFile:
    """The smallest PciFunction: BAR0 4 KiB of plain registers, config space."""

    name = "bench"

    def __init__(self) -> None:
        self.regs = {0: bytearray(4096), 7: bytearray(4096)}

    def regions(self) -> Sequence[RegionInfo]:
        rw = RegionFlag.READ | RegionFlag.WRITE
        return [RegionInfo(i, len(self.regs[i]) if i in self.regs else 0,
                           rw if i in self.regs else RegionFlag(0)) for i in range(9)]

    def irqs(self) -> Sequence[IrqInfo]:
        return [IrqInfo(i, 0, IrqFlag(0)) for i in range(5)]

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        return bytes(self.regs[index][offset:offset + size])

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        self.regs[index][offset:offset + len(data)] = data

    def device_reset(self) -> None:
        pass

    def attach(self, memory: GuestMemory, irqs: IrqSink) -> None:
        pass

    def detach(self) -> None:
        pass


# ------------------------------------------------------------------ child processes


def _serve(sock_dir: str) -> int:
    async def main() -> None:
        server = await serve({"bench": RegisterFile()}, sock_dir, ServerConfig())
        ep = server.endpoints["bench"]
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def stdin() -> None:
            for line in sys.stdin:
                if line.strip() == "stats":
                    loop.call_soon_threadsafe(lambda: print(json.dumps(
                        {"messages": ep.messages, "busy_ns": ep.busy_ns,
                         "cpu_ns": time.process_time_ns()}), flush=True))
                else:
                    break
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=stdin, daemon=True).start()
        print("ready", flush=True)
        await done.wait()
        await server.stop()

    asyncio.run(main())
    return 0


def _echo_asyncio(path: str) -> int:
    """The same echo on an asyncio loop (add_reader), as the server runs: the floor for
    any server on this loop. Its wall time per message is kept the way `Endpoint.busy_ns`
    keeps the server's, and reported on stdin's "stats" lines the same way."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    print("ready", flush=True)
    conn, _ = listener.accept()
    conn.setblocking(False)
    reply = bytes(PING_REPLY)
    pending = bytearray()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        busy = [0, 0]  # ns, messages: the same wall-clock measure as Endpoint.busy_ns

        def readable() -> None:
            t0 = time.perf_counter_ns()
            data = conn.recv(65536)
            if not data:
                loop.remove_reader(conn.fileno())
                done.set()
                return
            pending.extend(data)
            while len(pending) >= PING_REQ:
                del pending[:PING_REQ]
                conn.send(reply)
                busy[1] += 1
            busy[0] += time.perf_counter_ns() - t0

        def stdin() -> None:
            for line in sys.stdin:
                if line.strip() != "stats":
                    break
                loop.call_soon_threadsafe(lambda: print(json.dumps(
                    {"messages": busy[1], "busy_ns": busy[0],
                     "cpu_ns": time.process_time_ns()}), flush=True))

        threading.Thread(target=stdin, daemon=True).start()
        loop.add_reader(conn.fileno(), readable)
        await done.wait()
        print(json.dumps({"messages": busy[1], "busy_ns": busy[0]}), flush=True)

    asyncio.run(main())
    return 0


def _echo(path: str) -> int:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    print("ready", flush=True)
    conn, _ = listener.accept()
    reply = bytes(PING_REPLY)
    buf = bytearray(PING_REQ)
    view = memoryview(buf)
    messages, cpu0 = 0, time.process_time_ns()
    while True:
        got = 0
        while got < PING_REQ:
            n = conn.recv_into(view[got:])
            if n == 0:
                print(json.dumps({"messages": messages,
                                  "cpu_ns": time.process_time_ns() - cpu0}), flush=True)
                return 0
            got += n
        conn.sendall(reply)
        messages += 1


def _spawn(*args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-m", "bench.vfio_user", *args],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        raise RuntimeError(f"child {args} did not start")
    return p


# ------------------------------------------------------------------ measurements


def _timed(fn: Callable[[], object], n: int, out: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        fn()
        out.append(clock() - t0)


def _server_stats(server: subprocess.Popen[str]) -> tuple[int, int, int]:
    """(messages, wall ns busy, CPU ns) of a child that answers "stats" (the server, the
    asyncio echo)."""
    assert server.stdin is not None and server.stdout is not None
    server.stdin.write("stats\n")
    server.stdin.flush()
    s = json.loads(server.stdout.readline())
    return s["messages"], s["busy_ns"], s["cpu_ns"]


def pingpong(n: int) -> list[float]:
    """`n` bare AF_UNIX ping-pongs (s each) with an echo process of its own, on the CPUs
    this process may use: the floor of any round trip between two processes here."""
    tmp = Path(tempfile.mkdtemp(prefix="eeh-pp-", dir="/tmp"))
    echo = _spawn("--echo", str(tmp / "echo.sock"))
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(tmp / "echo.sock"))
            out: list[float] = []
            _timed(lambda: _exchange(sock, bytes(PING_REQ)), n, out)
        assert echo.stdout is not None
        echo.stdout.readline()  # its stats: it saw the socket close
        return out
    finally:
        _reap([echo])
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(sock: socket.socket, request: bytes) -> None:
    sock.sendall(request)
    got = 0
    while got < PING_REPLY:
        got += len(sock.recv(PING_REPLY - got))


def _reap(children: list[subprocess.Popen[str]]) -> None:
    for p in children:
        if p.stdin is not None:
            p.stdin.close()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()


def _core_cost(n: int) -> float:
    """Session.process alone (no sockets): seconds per 4-byte REGION_READ."""
    session = Session(RegisterFile(), ServerConfig())
    session.process(Frame(c.Header(0, c.Command.VERSION, 20, 0, 0), c.encode_version(0, 0)))
    frame = Frame(c.Header(1, c.Command.REGION_READ, 32, 0, 0), c.RegionAccess(16, 0, 4).pack())
    t0 = time.perf_counter()
    for _ in range(n):
        session.process(frame)
    return (time.perf_counter() - t0) / n


KINDS = {"ping": "bare AF_UNIX ping-pong", "aping": "ping-pong, asyncio echo",
         "read": "MMIO read 4B", "write": "MMIO write 4B (non-posted)",
         "posted": "posted write 4B (issue)"}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--n", type=int, default=None, help="samples per kind (3000)")
    ap.add_argument("--quick", action="store_true", help="fewer samples (1000 per kind)")
    ap.add_argument("--json", default=None, help="write the results here (bench.registry)")
    ap.add_argument("--serve", help=argparse.SUPPRESS)
    ap.add_argument("--echo", help=argparse.SUPPRESS)
    ap.add_argument("--echo-asyncio", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return _serve(args.serve)
    if args.echo:
        return _echo(args.echo)
    if args.echo_asyncio:
        return _echo_asyncio(args.echo_asyncio)
    res = measure(args.n or (1000 if args.quick else 3000))
    f = res["figures"]
    print(f"ratio read p50 spread / colocated = {f['read_spread_vs_colocated']['value']:.2f}")
    goals.finish_part(res, args.json)
    return 0


def measure(n: int) -> dict[str, Any]:
    """Both placements, one after the other (children inherit this process's CPU set:
    spread = any CPU, colocated = one CPU); the figures of each (`<figure>_<placement>`)
    and the goals, judged in the colocated placement (AdapterHost's default)."""
    allowed = os.sched_getaffinity(0)
    figures: dict[str, Any] = {}
    for placement, cpus in (("spread", allowed), ("colocated", set(colocated_cpu()))):
        os.sched_setaffinity(0, cpus)
        try:
            print(f"placement {placement}: this process and its children on CPUs "
                  f"{sorted(cpus)}")
            got = _measure(n)
        finally:
            os.sched_setaffinity(0, allowed)
        _report(got)
        figures |= {f"{k}_{placement}": v | {"what": f"{v['what']}, {placement}"}
                    for k, v in got.items()}
    figures["read_spread_vs_colocated"] = scalar(
        figures["read_spread"]["p50"] / figures["read_colocated"]["p50"], "x",
        figures["read_colocated"]["n"], what="MMIO read p50, spread / colocated")
    server_us = figures["server_wall_read_colocated"]["value"]
    vs_echo = figures["server_vs_asyncio_echo_colocated"]["value"]
    return {"figures": figures,
            "goals": {goals.VFIO_USER_SERVER.name: goals.VFIO_USER_SERVER.result(
                          server_us, what=f"{goals.VFIO_USER_SERVER.figure} (wall, 4-byte "
                          "read, colocated, median of rounds)"),
                      goals.VFIO_USER_VS_ECHO.name: goals.VFIO_USER_VS_ECHO.result(vs_echo)},
            "config": {"n": n, "rounds": ROUNDS, "placements": ["spread", "colocated"]}}


ROUNDS = 10


def _measure(n: int) -> dict[str, Any]:
    """One full measurement in the current placement: the figures (us)."""
    tmp = Path(tempfile.mkdtemp(prefix="eeh-vub-", dir="/tmp"))  # AF_UNIX paths are short
    children: list[subprocess.Popen[str]] = []
    try:
        server = _spawn("--serve", str(tmp))
        children.append(server)
        echo = _spawn("--echo", str(tmp / "echo.sock"))
        children.append(echo)
        aecho = _spawn("--echo-asyncio", str(tmp / "aecho.sock"))
        children.append(aecho)
        ping = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ping.connect(str(tmp / "echo.sock"))
        aping = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        aping.connect(str(tmp / "aecho.sock"))
        request = bytes(PING_REQ)

        def pingpong() -> None:
            _exchange(ping, request)

        def apingpong() -> None:
            _exchange(aping, request)

        dev = Client.open(tmp / "bench.sock")
        word = b"\x01\x02\x03\x04"
        samples: dict[str, list[float]] = {
            k: [] for k in ("ping", "aping", "read", "write", "posted")}
        drain: list[float] = []
        # wall and CPU time per message of the server (read, posted) and the asyncio echo
        busy: dict[str, list[float]] = {"read": [], "posted": [], "aecho": []}
        cpu: dict[str, list[float]] = {"read": [], "posted": [], "aecho": []}
        rounds, per = ROUNDS, max(1, n // ROUNDS)

        def server_phase(kind: str, phase: Callable[[], None],
                         child: subprocess.Popen[str] = server) -> None:
            m0, b0, c0 = _server_stats(child)
            phase()
            m1, b1, c1 = _server_stats(child)
            busy[kind].append((b1 - b0) / 1e9 / (m1 - m0))
            cpu[kind].append((c1 - c0) / 1e9 / (m1 - m0))

        def posted_burst() -> None:
            t0 = time.perf_counter()
            _timed(lambda: dev.region_write(0, 0x20, word, posted=True), per,
                   samples["posted"])
            dev.region_read(0, 0x20, 4)  # returns once every posted write was processed
            drain.append((time.perf_counter() - t0) / (per + 1))

        for _ in range(rounds):
            _timed(pingpong, per, samples["ping"])
            server_phase("aecho", lambda: _timed(apingpong, per, samples["aping"]), aecho)
            server_phase("read", lambda: _timed(lambda: dev.region_read(0, 0x10, 4), per,
                                                samples["read"]))
            _timed(lambda: dev.region_write(0, 0x10, word), per, samples["write"])
            server_phase("posted", posted_burst)
        core = _core_cost(20000)
        dev.close()
        ping.close()
        aping.close()
        assert echo.stdout is not None
        echo_stats = json.loads(echo.stdout.readline())
        echo_cpu = echo_stats["cpu_ns"] / 1e9 / max(1, echo_stats["messages"])
        assert aecho.stdout is not None
        aecho.stdout.readline()  # its totals: it saw the socket close
    finally:
        _reap(children)
        shutil.rmtree(tmp, ignore_errors=True)

    us = 1e6
    f: dict[str, Any] = {k: dist([v * us for v in samples[k]], "us", 1) | {"what": what}
                         for k, what in KINDS.items()}
    f["posted_drain"] = scalar(percentile(drain, 50) * us, "us", len(drain),
                               what="posted write drain rate per write (median of rounds)")
    med = {f"{k}-{kind}": percentile(v[kind], 50) * us
           for k, v in (("busy", busy), ("cpu", cpu)) for kind in ("read", "posted", "aecho")}
    for name, key, what in (
            ("server_wall_read", "busy-read", "server wall per message, 4B read "
             "(recv+frame+process+reply; median of rounds)"),
            ("server_wall_posted", "busy-posted", "server wall per message, posted write"),
            ("server_cpu_read", "cpu-read", "server CPU per message, 4B read (process time, "
             "with the event loop and the kernel's wake-up of the client)"),
            ("server_cpu_posted", "cpu-posted", "server CPU per message, posted write"),
            ("asyncio_echo_wall", "busy-aecho", "the asyncio echo's wall per message "
             "(recv+send only)"),
            ("asyncio_echo_cpu", "cpu-aecho", "the asyncio echo's CPU per message")):
        f[name] = scalar(med[key], "us", rounds, what=what)
    f["echo_cpu"] = scalar(echo_cpu * us, "us", 1, what="the bare echo process's CPU per "
                           "ping-pong message")
    f["core_read"] = scalar(core * us, "us", 20000, what="protocol core alone "
                            "(Session.process, 4B read, no sockets)")
    ratios = {"read_vs_pingpong": ("read", "ping", "MMIO read p50 / bare ping-pong p50"),
              "write_vs_pingpong": ("write", "ping", "MMIO write p50 / bare ping-pong p50"),
              "read_vs_asyncio_pingpong": ("read", "aping",
                                           "MMIO read p50 / asyncio ping-pong p50")}
    for name, (a, b, what) in ratios.items():
        f[name] = scalar(f[a]["p50"] / f[b]["p50"], "x", f[a]["n"], what=what)
    f["server_vs_asyncio_echo"] = scalar(
        med["busy-read"] / med["busy-aecho"], "x", rounds,
        what="server wall per read / the asyncio echo's per message")
    f["server_cpu_vs_asyncio_echo"] = scalar(
        med["cpu-read"] / med["cpu-aecho"], "x", rounds,
        what="server CPU per read / the asyncio echo's per message")
    return f


def _report(f: dict[str, Any]) -> None:
    """One placement's figures as text (what this module always printed)."""
    print(f"cpus={os.cpu_count()} n={f['read']['n']} per kind, interleaved in {ROUNDS} "
          "rounds")
    for name, label in KINDS.items():
        print(f"  {label:28s} {one_line(f[name])}")
    print(f"  {'posted write drain rate':28s} {f['posted_drain']['value']:.1f}us per write "
          "(median of rounds)")
    for name in ("read", "write"):
        print(f"  ratio {name} p50 / ping-pong p50 = {f[f'{name}_vs_pingpong']['value']:.2f}"
              f"  (p99 ratio {f[name]['p99'] / f['ping']['p99']:.2f})")
    print(f"  ratio read p50 / asyncio ping-pong p50 = "
          f"{f['read_vs_asyncio_pingpong']['value']:.2f}")
    v = {k: f[k]["value"] for k in f if "value" in f[k]}
    print("  server cost per message, median of rounds:")
    print(f"    wall (recv+frame+process+reply): read {v['server_wall_read']:.1f}us, "
          f"posted write {v['server_wall_posted']:.1f}us")
    print(f"    CPU (process time, incl. the event loop and the kernel's wake-up of the "
          f"client): read {v['server_cpu_read']:.1f}us, posted write "
          f"{v['server_cpu_posted']:.1f}us")
    print(f"    baseline: the echo process's CPU per ping-pong message {v['echo_cpu']:.1f}us"
          f" (ratio read/echo {v['server_cpu_read'] / v['echo_cpu']:.2f})")
    print(f"    baseline: the asyncio echo's wall time per message (recv+send only, median of "
          f"rounds) {v['asyncio_echo_wall']:.1f}us, CPU {v['asyncio_echo_cpu']:.1f}us (ratio "
          f"read/asyncio echo {v['server_vs_asyncio_echo']:.2f}, CPU "
          f"{v['server_cpu_vs_asyncio_echo']:.2f}; on one CPU a send that wakes the client "
          "may run the client before it returns, in either's wall time)")
    print(f"    protocol core alone (Session.process, 4B read, no sockets): "
          f"{v['core_read']:.1f}us ({v['core_read'] / v['server_wall_read']:.0%} of the "
          "server's wall time per read)")
    cost = v["server_wall_read"]
    print(f"  goal: server cost per message (wall, read) <= {GOAL_US:.0f}us: "
          f"{'met' if cost <= GOAL_US else 'MISSED'} ({cost:.1f}us)")
    vs = v["server_vs_asyncio_echo"]
    print(f"  goal: server wall per read / asyncio echo's per message "
          f"{goals.VFIO_USER_VS_ECHO.text()}: "
          f"{'met' if goals.VFIO_USER_VS_ECHO.met(vs) else 'MISSED'} ({vs:.2f}x)")


if __name__ == "__main__":
    sys.exit(main())
