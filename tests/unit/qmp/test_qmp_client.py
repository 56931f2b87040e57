"""The server through qemu.qmp's own client, as scripts and qmp-shell meet it."""

from __future__ import annotations

import asyncio
import inspect
import typing
from pathlib import Path

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient
from qmp_fakes import (
    COMMAND_NAMES,
    QEMU_VERSION,
    Backend,
    FakeTarget,
    GuestRig,
    run_server,
    sock_dir,
)

from qemu_launcher.machine import Machine
from qmp_server import EventSource, QemuTarget, Server

__all__ = ["sock_dir"]


def _types(backend: Backend, target: FakeTarget, machine: Machine) -> None:
    """For mypy: the fakes and Machine, as it is, satisfy the protocols. Never called."""
    _events: EventSource = backend
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


def test_qmpclient_on_the_local_socket(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        qmp = QMPClient("operator")
        await qmp.connect(str(server.local_path))
        assert qmp.greeting is not None and qmp.greeting.QMP.capabilities == []
        with qmp.listener("SLOW_DONE") as listener:
            assert await qmp.execute("slow") == {}
            got = await asyncio.wait_for(listener.get(), 5)
        assert got["data"] == {"calls": 1}
        with pytest.raises(ExecuteError) as ei:
            await qmp.execute("refuse", {"why": "sideways"})
        assert (ei.value.error.error.class_, ei.value.error.error.desc) == \
            ("GenericError", "sideways")
        with pytest.raises(ExecuteError) as ei:
            await qmp.execute("query-status")
        assert ei.value.error.error.class_ == "CommandNotFound"
        # qemu.qmp's pipelined commands (ids of its own) come back to the right caller
        results = await asyncio.gather(*(qmp.execute("echo", {"value": n}) for n in range(10)))
        assert results == list(range(10))
        await qmp.disconnect()

    run_server(sock_dir, body)


def test_qmpclient_on_a_guest_socket(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            qmp = QMPClient("operator")
            await qmp.connect(str(g.path))
            assert qmp.greeting is not None
            assert dict(qmp.greeting.QMP.version) == QEMU_VERSION
            assert await qmp.execute("query-status") == {
                "status": "running", "singlestep": False, "running": True}
            hmp = await qmp.execute("human-monitor-command", {"command-line": "info status"})
            assert hmp == "VM status: running\r\n"
            with pytest.raises(ExecuteError) as ei:
                await qmp.execute("device_del", {"id": "vf3"})
            assert (ei.value.error.error.class_, ei.value.error.error.desc) == \
                ("DeviceNotFound", "Device 'vf3' not found")
            names = {c["name"] for c in await qmp.execute("query-commands")}  # type: ignore
            assert {"query-status", "human-monitor-command", *COMMAND_NAMES} <= names
            listener = EventListener()
            with qmp.listen(listener):
                g.qemu.event("DEVICE_DELETED", {"device": "vf2", "path": "/machine/x"})
                be.emit("FAILED", {"pe": "vf1", "freezes": 6})
                got = [await asyncio.wait_for(listener.get(), 5) for _ in range(2)]
            got.sort(key=lambda e: e["event"])  # two sources: no order between them
            first, second = got
            assert dict(first) == {"event": "DEVICE_DELETED",
                                   "data": {"device": "vf2", "path": "/machine/x"},
                                   "timestamp": {"seconds": 1700000000, "microseconds": 42}}
            assert second["event"] == "FAILED"
            # a second client at the same time, and the first leaving, change nothing
            other = QMPClient("second")
            await other.connect(str(g.path))
            await qmp.disconnect()
            assert await other.execute("echo", {"value": "x"}) == "x"
            await other.disconnect()

    run_server(sock_dir, body)


def test_guest_socket_when_qemu_is_gone(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            qmp = QMPClient("operator")
            await qmp.connect(str(g.path))
            await g.client.disconnect()  # QEMU's connection is lost (QEMU died)
            with pytest.raises(ExecuteError) as ei:
                await qmp.execute("query-status")
            assert ei.value.error.error.class_ == "GenericError"
            assert ei.value.error.error.desc.startswith("QEMU did not answer query-status")
            # the server's own commands do not need QEMU
            assert await qmp.execute("ping") == {"pong": 1}
            await qmp.disconnect()
            # a client arriving now still gets a well-formed greeting
            late = QMPClient("late")
            await late.connect(str(g.path))
            assert late.greeting is not None
            await late.disconnect()

    run_server(sock_dir, body)
