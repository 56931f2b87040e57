"""Platform-call round trips: the real platform-call server against a bare unix-socket echo.

    .venv/bin/python -m bench.hcall [--quick] [--n 3000] [--json FILE]

Side by side in one process and one run, in interleaved rounds (the machine is shared and
noisy: compare within the run):

- `platform_call`: `read-slot-reset-state2` on the adapter PE (the call a recovering
  driver makes most) through `eeh_abi.hcall.Channel` (the client every driver uses: a
  writer, a reader thread, a reply slot) to a harness-mode `Platform` (one VF, the host's
  channel): the server's framing and strict JSON, the schema's argument check, the
  authorization, the PE state read on the device model's loop thread, the timeline entry
  and the reply;
- `bare_protocol`: the same call through the same client, answered at once (a success
  reply with the request's id, nothing checked) by an asyncio server on a loop thread of
  its own: the protocol's and the client's cost without the platform's work;
- `echo`: the request line echoed by such a server, read back by the caller with a
  blocking `socket.recv`: the floor for a line protocol over a unix socket served by an
  asyncio loop in this interpreter.

Reported: the three distributions (microseconds), `ratio_p50` (platform call p50 / echo
p50) and `server_work_ratio_p50` (platform call p50 / bare protocol p50: the platform's
own work, with its goal bench.goals.HCALL_SERVER_WORK).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench import goals
from bench.stats import dist, scalar
from eeh_abi.hcall import Channel, Reply, Request, encode
from eeh_abi.papr import Status
from eeh_abi.schema import Call
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform, PlatformConfig


class LineServer:
    """An asyncio unix-socket server on a loop thread of its own, answering each line with
    `answer(line)`."""

    def __init__(self, path: Path, answer: Callable[[bytes], bytes]) -> None:
        self.path = path
        self.answer = answer
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="bench-line-server",
                                        daemon=True)

    def _run(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(self.answer(line))
            writer.close()

        async def main() -> None:
            self._stop = asyncio.Event()
            server = await asyncio.start_unix_server(serve, str(self.path))
            self._ready.set()
            await self._stop.wait()
            server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.loop.run_until_complete(main())
        self.loop.close()

    def __enter__(self) -> LineServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the line server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        stop = self._stop
        assert stop is not None
        self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)


def echo(line: bytes) -> bytes:
    return line


def bare_reply(line: bytes) -> bytes:
    """A success reply to a request line, without looking at anything but its id."""
    return encode(Reply(json.loads(line)["id"], Status.SUCCESS))


def socket_client(path: Path, line: bytes) -> tuple[Callable[[], None], Callable[[], None]]:
    """One blocking round trip of `line` (up to the answer's newline), and a close."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(path))

    def once() -> None:
        sock.sendall(line)
        got = b""
        while not got.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed")
            got += chunk

    return once, sock.close


def timed(fn: Callable[[], None], n: int, out: list[float]) -> None:
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)


def measure(n: int, rounds: int = 10, warmup: int = 200) -> dict[str, Any]:
    """`n` round trips of each kind, in `rounds` interleaved rounds."""
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners={"pf": HOST, "vf0": HOST},
                         host_cpus=())
    with tempfile.TemporaryDirectory(prefix="eeh-bench-hcall-") as d, \
            Platform(cfg) as plat, LineServer(Path(d) / "echo.sock", echo) as echo_srv, \
            LineServer(Path(d) / "bare.sock", bare_reply) as bare_srv:
        pe = plat.policy.adapter_record.address
        line = encode(Request(1, Call.READ_SLOT_RESET_STATE2, {"pe": pe}))
        ch = Channel.unix(str(plat.hcall_path(HOST)))
        bare = Channel.unix(str(bare_srv.path))
        echo_once, echo_close = socket_client(echo_srv.path, line)

        def call(channel: Channel) -> Callable[[], None]:
            def once() -> None:
                r = channel.call(Call.READ_SLOT_RESET_STATE2, pe=pe)
                if r.status != Status.SUCCESS:
                    raise RuntimeError(f"read-slot-reset-state2: status {r.status}")
            return once

        kinds = {"platform_call": call(ch), "bare_protocol": call(bare), "echo": echo_once}
        times: dict[str, list[float]] = {k: [] for k in kinds}
        try:
            for fn in kinds.values():
                timed(fn, warmup, [])
            for _ in range(rounds):
                for k, fn in kinds.items():
                    timed(fn, max(1, n // rounds), times[k])
        finally:
            ch.close()
            bare.close()
            echo_close()
    ds = {k: dist(v, "us", 1) for k, v in times.items()}
    ratio = ds["platform_call"]["p50"] / ds["echo"]["p50"]
    own = ds["platform_call"]["p50"] / ds["bare_protocol"]["p50"]
    count = min(x["n"] for x in ds.values())
    return {
        "figures": {
            "platform_call": ds["platform_call"] | {
                "what": "read-slot-reset-state2 through the platform-call server (the "
                        "drivers' Channel client)"},
            "bare_protocol": ds["bare_protocol"] | {
                "what": "the same call answered at once by a bare asyncio server (same "
                        "client)"},
            "echo": ds["echo"] | {
                "what": "the request line echoed by an asyncio server (blocking socket "
                        "client)"},
            "ratio_p50": scalar(ratio, "x", count, what="platform call p50 / echo p50"),
            "server_work_ratio_p50": scalar(own, "x", count,
                                            what="platform call p50 / bare protocol p50"),
        },
        "goals": {goals.HCALL_SERVER_WORK.name: goals.HCALL_SERVER_WORK.result(own)},
        "config": {"n": n, "rounds": rounds, "warmup": warmup, "request_bytes": len(line)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer round trips (1000 of each)")
    ap.add_argument("--n", type=int, default=None, help="round trips of each kind (3000)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)
    res = measure(args.n or (1000 if args.quick else 3000))
    for name, f in res["figures"].items():
        if "p50" in f:
            print(f"hcall: {name:22} p50 {f['p50']:8.1f} us  p99 {f['p99']:8.1f} us  "
                  f"(n={f['n']})")
        else:
            print(f"hcall: {name:22} {f['value']:.2f} {f['unit']}  ({f['what']})")
    goal = goals.HCALL_SERVER_WORK
    print(f"hcall: goal server work {goal.text()}: "
          f"{'met' if res['goals'][goal.name]['met'] else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
