"""What the qmp_server tests run the server with: a command table of test commands, an
event source the test fires, a QEMU QMP server and a QemuTarget over it, and a raw client
that reads the wire as it is. (Imported by the test_qmp_* modules; test_qmp_fakes.py
checks the fakes themselves, so the others can trust them.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from qmp_server import Command, CommandTable, EventCallback, QmpError, Server
from qmp_server import args as a

TIMEOUT = 10.0
PREFIX = "__org.test_"
VERSION = {"qemu": {"major": 7, "minor": 8, "micro": 9}, "package": "qmp_server tests"}


# ---- the caller's side: commands and events ---------------------------------------------

class Backend:
    """The test commands (every call recorded in `calls`) and the event source.

    ping                  -> {"pong": <number of pings so far>}
    echo value=<any>      -> that value
    slow                  -> waits for `gate` (when set; `entered` says it is waiting),
                             emits SLOW_DONE, returns {}
    boom                  -> a bug: RuntimeError("oops")
    refuse why=<string>   -> QmpError(why): the command's own refusal
    """

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.listeners: list[EventCallback] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    # the event source
    def add_listener(self, callback: EventCallback) -> None:
        self.listeners.append(callback)

    def emit(self, name: str, data: dict[str, Any]) -> None:
        for cb in self.listeners:
            cb(name, data)

    def emit_from_thread(self, name: str, data: dict[str, Any]) -> None:
        t = threading.Thread(target=self.emit, args=(name, data))
        t.start()
        t.join()

    # the commands
    async def _ping(self, args: a.Args) -> object:
        self.calls.append(("ping",))
        return {"pong": sum(1 for c in self.calls if c == ("ping",))}

    async def _echo(self, args: a.Args) -> object:
        self.calls.append(("echo", args.get("value")))
        return args.get("value")

    async def _slow(self, args: a.Args) -> object:
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(("slow",))
        self.emit("SLOW_DONE", {"calls": len(self.calls)})
        return {}

    async def _boom(self, args: a.Args) -> object:
        raise RuntimeError("oops")

    async def _refuse(self, args: a.Args) -> object:
        raise QmpError(a.string(args, "why"))

    def table(self) -> CommandTable:
        return CommandTable([
            Command("ping", self._ping),
            Command("echo", self._echo, ("value",)),
            Command("slow", self._slow),
            Command("boom", self._boom),
            Command("refuse", self._refuse, ("why",)),
        ], prefix=PREFIX)


COMMAND_NAMES = [n for c in ("ping", "echo", "slow", "boom", "refuse")
                 for n in (PREFIX + c, c)]


# ---- a QEMU ----------------------------------------------------------------------------

QEMU_VERSION = {"qemu": {"major": 10, "minor": 1, "micro": 1}, "package": "fake"}
QEMU_COMMANDS = ["qmp_capabilities", "query-status", "query-version", "query-commands",
                 "human-monitor-command", "device_del", "stop"]


class FakeQemu:
    """A QMP server answering a few commands as QEMU does (and offering oob, as QEMU
    does, which the console must not pass on). `hold`: when set, commands wait for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: list[dict[str, Any]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.hold: asyncio.Event | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in self.writers:
            w.close()

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"event": name,
                               "timestamp": {"seconds": 1700000000, "microseconds": 42}}
        if data is not None:
            msg["data"] = data
        for w in self.writers:
            w.write(json.dumps(msg).encode() + b"\r\n")

    def _answer(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        if cmd == "query-status":
            return {"return": {"status": "running", "singlestep": False, "running": True}}
        if cmd == "query-version":
            return {"return": QEMU_VERSION}
        if cmd == "query-commands":
            return {"return": [{"name": n} for n in QEMU_COMMANDS]}
        if cmd == "human-monitor-command":
            line = args.get("command-line", "")
            if line == "info status":
                return {"return": "VM status: running\r\n"}
            return {"return": f"unknown command: '{line}'\r\n"}
        if cmd == "device_del":
            return {"error": {"class": "DeviceNotFound",
                              "desc": f"Device '{args.get('id')}' not found"}}
        if cmd == "stop":
            self.event("STOP")
            return {"return": {}}
        return {"error": {"class": "CommandNotFound",
                          "desc": f"The command {cmd} has not been found"}}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        greeting = {"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}}
        writer.write(json.dumps(greeting).encode() + b"\r\n")
        decoder = json.JSONDecoder()
        buf = ""
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                buf += data.decode()
                while True:
                    buf = buf.lstrip()
                    try:
                        msg, end = decoder.raw_decode(buf)
                    except ValueError:
                        break
                    buf = buf[end:]
                    self.received.append(msg)
                    if msg["execute"] == "qmp_capabilities":
                        reply: dict[str, Any] = {"return": {}}
                    else:
                        if self.hold is not None:
                            await self.hold.wait()
                        reply = self._answer(msg["execute"], msg.get("arguments", {}))
                    if "id" in msg:
                        reply["id"] = msg["id"]
                    writer.write(json.dumps(reply).encode() + b"\r\n")


class FakeTarget:
    """A QemuTarget as Machine is one: a connected QMPClient and execute()."""

    def __init__(self, client: QMPClient) -> None:
        self.qmp_client = client

    async def execute(self, cmd: str, args: dict[str, object] | None = None) -> object:
        return await self.qmp_client.execute(cmd, args)


# ---- a raw client ----------------------------------------------------------------------

class RawClient:
    """Reads the server's lines as they are; keeps events apart from replies."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.lines: list[bytes] = []

    @classmethod
    async def connect(cls, path: Path, negotiate: bool = True) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 24)
        c = cls(reader, writer)
        c.greeting = await c.recv()
        if negotiate:
            assert await c.command("qmp_capabilities") == {"return": {}}
        return c

    async def send(self, data: bytes | dict[str, Any]) -> None:
        self.writer.write(data if isinstance(data, bytes) else json.dumps(data).encode())
        await self.writer.drain()

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("server closed the connection")
        assert line.endswith(b"\r\n"), line
        line.decode("ascii")  # the server's output is ASCII
        self.lines.append(line)
        msg = json.loads(line)
        assert isinstance(msg, dict)
        return msg

    async def reply(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next message that is not an event."""
        while True:
            msg = await self.recv(timeout)
            if "event" in msg:
                self.events.append(msg)
                continue
            return msg

    async def command(self, name: str, args: dict[str, Any] | None = None,
                      **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": name, **extra}
        if args is not None:
            msg["arguments"] = args
        await self.send(msg)
        return await self.reply()

    async def event(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        if self.events:
            return self.events.pop(0)
        msg = await self.recv(timeout)
        assert "event" in msg, msg
        return msg

    async def nothing_pending(self, wait: float = 0.1) -> bool:
        try:
            line = await asyncio.wait_for(self.reader.readline(), wait)
        except TimeoutError:
            return True
        self.lines.append(line)
        return False

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# ---- running a server in a test --------------------------------------------------------

@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eeh-qmp-"))  # the session's short temp dir
    yield d
    shutil.rmtree(d, ignore_errors=True)


Body = Callable[[Server, Backend], Awaitable[None]]


def run_server(sock_dir: Path, body: Body, backend: Backend | None = None,
               **kwargs: Any) -> None:
    """Start a server ("local" socket: `<sock_dir>/server/local.qmp`) with the Backend's
    commands and events, run `body`, stop it; fail after 60 s."""
    backend = backend or Backend()

    async def main() -> None:
        server = Server(sock_dir / "server", backend.table(), backend, local="local",
                        version=VERSION, **kwargs)
        await server.start()
        try:
            await asyncio.wait_for(body(server, backend), 60)
        finally:
            await server.stop()
        assert not list((sock_dir / "server").iterdir()), "sockets left behind"

    asyncio.run(main())


class GuestRig:
    """A FakeQemu, a QMPClient connected to it, and the server's socket in front."""

    def __init__(self, server: Server, sock_dir: Path, name: str = "guest0") -> None:
        self.server = server
        self.qemu = FakeQemu(sock_dir / f"{name}-qemu.sock")
        self.client = QMPClient(name)
        self.target = FakeTarget(self.client)
        self.name = name
        self.path = Path()

    async def __aenter__(self) -> GuestRig:
        await self.qemu.start()
        await self.client.connect(str(self.qemu.path))
        self.path = await self.server.add_guest(self.name, self.target)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.name in self.server.guests:
            await self.server.remove_guest(self.name)
        await self.client.disconnect()
        await self.qemu.stop()
