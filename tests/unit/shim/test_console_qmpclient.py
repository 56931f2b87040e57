"""The console through qemu.qmp's own client, as scripts and qmp-shell meet it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qemu.qmp import EventListener, ExecuteError, QMPClient
from test_console_fakes import QEMU_VERSION, FakePlatformApi, GuestRig, run_console, sock_dir

from hypervisor_shim.console import Console, pe_command_names

__all__ = ["sock_dir"]


def test_qmpclient_on_the_platform_socket(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        qmp = QMPClient("operator")
        await qmp.connect(str(console.platform_path))
        assert qmp.greeting is not None
        assert qmp.greeting.QMP.capabilities == []
        pes = await qmp.execute("query-pes")
        assert isinstance(pes, list) and [p["pe"] for p in pes] == ["adapter", "vf0", "vf1"]
        with qmp.listener("EEH_PE_STATE_CHANGED") as listener:
            r = await qmp.execute("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
            assert r == {"pe": "adapter", "kind": "adapter-fatal",
                         "frozen": ["adapter", "vf0", "vf1"]}
            got = [await asyncio.wait_for(listener.get(), 5) for _ in range(3)]
        assert [e["data"]["pe"] for e in got] == ["adapter", "vf0", "vf1"]
        assert all(e["data"]["state"] == 2 for e in got)
        with pytest.raises(ExecuteError) as ei:
            await qmp.execute("eeh-reset-pe", {"pe": "vf0", "kind": "sideways"})
        assert ei.value.error.error.class_ == "GenericError"
        assert ei.value.error.error.desc == "Parameter 'kind' does not accept value 'sideways'"
        with pytest.raises(ExecuteError) as ei:
            await qmp.execute("query-status")
        assert ei.value.error.error.class_ == "CommandNotFound"
        # qemu.qmp's pipelined commands (ids of its own) come back to the right caller
        results = await asyncio.gather(*(qmp.execute("query-pe-error-log", {"pe": "adapter"})
                                         for _ in range(10)))
        assert all(r == results[0] for r in results)
        await qmp.disconnect()

    run_console(sock_dir, body)


def test_qmpclient_on_a_guest_socket(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir) as g:
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
            assert {"query-status", "human-monitor-command", *pe_command_names()} <= names
            listener = EventListener()
            with qmp.listen(listener):
                g.qemu.event("DEVICE_DELETED", {"device": "vf2", "path": "/machine/x"})
                api.emit("EEH_PE_PERMANENT_FAILURE", {"pe": "vf1", "freezes": 6})
                got = [await asyncio.wait_for(listener.get(), 5) for _ in range(2)]
            got.sort(key=lambda e: e["event"])  # two sources: no order between them
            first, second = got
            assert dict(first) == {"event": "DEVICE_DELETED",
                                   "data": {"device": "vf2", "path": "/machine/x"},
                                   "timestamp": {"seconds": 1700000000, "microseconds": 42}}
            assert second["event"] == "EEH_PE_PERMANENT_FAILURE"
            # a second client at the same time, and the first leaving, change nothing
            other = QMPClient("second")
            await other.connect(str(g.path))
            await qmp.disconnect()
            assert (await other.execute("query-pes"))[1]["pe"] == "vf0"  # type: ignore
            await other.disconnect()

    run_console(sock_dir, body)


def test_guest_socket_when_qemu_is_gone(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir) as g:
            qmp = QMPClient("operator")
            await qmp.connect(str(g.path))
            await g.client.disconnect()  # QEMU's connection is lost (QEMU died)
            with pytest.raises(ExecuteError) as ei:
                await qmp.execute("query-status")
            assert ei.value.error.error.class_ == "GenericError"
            assert ei.value.error.error.desc.startswith("QEMU did not answer query-status")
            # the PE commands do not need QEMU
            assert len(await qmp.execute("query-pes")) == 3  # type: ignore[arg-type]
            await qmp.disconnect()
            # a client arriving now still gets a well-formed greeting
            late = QMPClient("late")
            await late.connect(str(g.path))
            assert late.greeting is not None
            await late.disconnect()

    run_console(sock_dir, body)
