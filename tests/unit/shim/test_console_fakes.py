"""Fakes for the console tests: a PlatformApi, a QEMU QMP server and a QemuTarget over
it, and a raw client that reads the wire as it is. (Imported by the test_console_*
modules; the tests here check the fakes themselves, so the others can trust them.)"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import shutil
import tempfile
import threading
import typing
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import QMPClient

from hypervisor_shim.console import Console, PlatformApi, PlatformApiError, QemuTarget
from hypervisor_shim.console.backend import PlatformListener
from qemu_launcher.machine import Machine

TIMEOUT = 10.0


# ---- the platform ----------------------------------------------------------------------

class FakePlatformApi:
    """An adapter PE and `vfs` VF PEs with just enough behaviour to see commands land:
    injection freezes (the adapter's freeze reaches every VF), a reset thaws, events say so.
    `gate`: when set, inject() waits for it (a command that is in progress)."""

    def __init__(self, vfs: int = 2) -> None:
        names = ["adapter", *(f"vf{i}" for i in range(vfs))]
        self.pes: dict[str, dict[str, Any]] = {
            n: {"pe": n, "address": 0x100 * (i + 1), "state": 0, "retry_ms": 0,
                "owner": None if n == "adapter" else f"guest{i}", "freeze_count": 0,
                "flags": []}
            for i, n in enumerate(names)}
        self.logs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        self.policy: dict[str, Any] = {"max-freezes": 5, "window-s": 3600.0}
        self.calls: list[tuple[Any, ...]] = []
        self.listeners: list[PlatformListener] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.boom: Exception | None = None  # raised by the next call, once

    def emit(self, name: str, data: dict[str, Any]) -> None:
        for cb in self.listeners:
            cb(name, data)

    def emit_from_thread(self, name: str, data: dict[str, Any]) -> None:
        t = threading.Thread(target=self.emit, args=(name, data))
        t.start()
        t.join()

    def _pe(self, pe: str) -> dict[str, Any]:
        if self.boom is not None:
            e, self.boom = self.boom, None
            raise e
        if pe not in self.pes:
            raise PlatformApiError(f"no PE named {pe!r} (have {', '.join(self.pes)})")
        return self.pes[pe]

    def _set(self, pe: dict[str, Any], state: int, reason: str) -> None:
        pe["state"] = state
        if state == 2:
            pe["freeze_count"] += 1
            pe["flags"] = ["isolated"]
        else:
            pe["flags"] = []
        self.emit("EEH_PE_STATE_CHANGED",
                  {"pe": pe["pe"], "address": pe["address"], "state": state, "reason": reason})

    async def query_pes(self) -> list[dict[str, Any]]:
        self.calls.append(("query_pes",))
        if self.boom is not None:
            self._pe("adapter")
        return copy.deepcopy(list(self.pes.values()))

    async def inject(self, pe: str, kind: str, function: int | None, address: int,
                     mask: int) -> dict[str, Any]:
        target = self._pe(pe)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if kind == "vf-error" and pe == "adapter":
            raise PlatformApiError("vf-error needs a VF PE")
        self.calls.append(("inject", pe, kind, function, address, mask))
        hit = list(self.pes.values()) if kind == "adapter-fatal" else [target]
        if kind == "adapter-fatal" and pe != "adapter":
            raise PlatformApiError("adapter-fatal needs the adapter PE")
        for p in hit:
            self._set(p, 2, kind)
        self.logs[pe].append({"seq": len(self.logs[pe]) + 1, "kind": kind,
                              "function": function, "address": address})
        return {"pe": pe, "kind": kind, "frozen": [p["pe"] for p in hit]}

    async def reset_pe(self, pe: str, kind: str) -> dict[str, Any]:
        target = self._pe(pe)
        if kind == "fundamental" and pe != "adapter":
            raise PlatformApiError("a VF PE has no fundamental reset")
        self.calls.append(("reset_pe", pe, kind))
        self._set(target, 0, f"{kind} reset")
        return {"pe": pe, "kind": kind, "state": 0}

    async def error_log(self, pe: str) -> list[dict[str, Any]]:
        self._pe(pe)
        self.calls.append(("error_log", pe))
        return copy.deepcopy(self.logs[pe])

    async def set_policy(self, max_freezes: int | None,
                         window_s: float | None) -> dict[str, Any]:
        self.calls.append(("set_policy", max_freezes, window_s))
        if max_freezes is not None:
            self.policy["max-freezes"] = max_freezes
        if window_s is not None:
            self.policy["window-s"] = window_s
        return dict(self.policy)

    async def query_policy(self) -> dict[str, Any]:
        self.calls.append(("query_policy",))
        return dict(self.policy)

    def add_listener(self, callback: PlatformListener) -> None:
        self.listeners.append(callback)


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


# ---- running a console in a test ------------------------------------------------------

@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eeh-con-", dir="/tmp"))  # AF_UNIX paths are short
    yield d
    shutil.rmtree(d, ignore_errors=True)


Body = Callable[[Console, FakePlatformApi], Awaitable[None]]


def run_console(sock_dir: Path, body: Body, api: FakePlatformApi | None = None,
                **kwargs: Any) -> None:
    """Start a console over a FakePlatformApi, run `body`, stop it; fail after 60 s."""
    api = api or FakePlatformApi()

    async def main() -> None:
        console = Console(sock_dir / "console", api, **kwargs)
        await console.start()
        try:
            await asyncio.wait_for(body(console, api), 60)
        finally:
            await console.stop()
        assert not list((sock_dir / "console").iterdir()), "sockets left behind"

    asyncio.run(main())


class GuestRig:
    """A FakeQemu, a QMPClient connected to it, and the console socket in front."""

    def __init__(self, console: Console, sock_dir: Path, name: str = "guest0") -> None:
        self.console = console
        self.qemu = FakeQemu(sock_dir / f"{name}-qemu.sock")
        self.client = QMPClient(name)
        self.target = FakeTarget(self.client)
        self.name = name
        self.path = Path()

    async def __aenter__(self) -> GuestRig:
        await self.qemu.start()
        await self.client.connect(str(self.qemu.path))
        self.path = await self.console.add_guest(self.name, self.target)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.name in self.console.guests:
            await self.console.remove_guest(self.name)
        await self.client.disconnect()
        await self.qemu.stop()


# ---- the fakes are what they claim -----------------------------------------------------

def _types(api: FakePlatformApi, target: FakeTarget, machine: Machine) -> None:
    """For mypy (`.venv/bin/mypy --strict tests/unit/shim/test_console_fakes.py`): the
    fakes and Machine, as it is, satisfy the protocols. Never called."""
    _api: PlatformApi = api
    _target: QemuTarget = target
    _machine: QemuTarget = machine


def test_machine_has_what_a_qemu_target_needs() -> None:
    """The runtime half of _types: Machine.execute is a coroutine taking (cmd, args) and
    a Machine carries a QMPClient as qmp_client."""
    sig = inspect.signature(Machine.execute)
    assert inspect.iscoroutinefunction(Machine.execute)
    assert list(sig.parameters)[:3] == ["self", "cmd", "args"]
    assert "qmp_client" in inspect.getsource(Machine.__init__)
    hints = typing.get_type_hints(QemuTarget.qmp_client.fget)  # type: ignore[attr-defined]
    assert hints["return"] is QMPClient


def test_fake_platform_freezes_and_emits() -> None:
    api = FakePlatformApi()
    seen: list[tuple[str, dict[str, Any]]] = []
    api.add_listener(lambda n, d: seen.append((n, d)))
    asyncio.run(api.inject("adapter", "adapter-fatal", None, 0, 0))
    assert [p["state"] for p in api.pes.values()] == [2, 2, 2]
    assert [d["pe"] for _, d in seen] == ["adapter", "vf0", "vf1"]
    with pytest.raises(PlatformApiError, match="no PE named"):
        asyncio.run(api.reset_pe("vf9", "hot"))
