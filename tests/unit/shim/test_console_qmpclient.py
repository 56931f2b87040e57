"""The console over the real platform through qemu.qmp's own client, as scripts meet it
(the eeh_sriov CLI's `status` and `inject`, the pytest plugin's `eeh_console`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from eeh_console_rig import run_console, sock_dir
from qemu.qmp import ExecuteError, QMPClient

from hypervisor_shim.console import Console, pe_command_names
from hypervisor_shim.platform import Platform
from tests.unit.qmp.qmp_fakes import GuestRig

__all__ = ["sock_dir"]


def test_qmpclient_on_the_platform_socket(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        qmp = QMPClient("operator")
        await qmp.connect(str(console.platform_path))
        assert qmp.greeting is not None
        assert qmp.greeting.QMP.capabilities == []
        pes = await qmp.execute("query-pes")
        assert isinstance(pes, list) and [p["pe"] for p in pes] == ["adapter", "vf0", "vf1"]
        with qmp.listener("EEH_PE_STATE_CHANGED") as listener:
            r = await qmp.execute("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
            assert r == {"pe": "adapter", "kind": "adapter-fatal", "log-seq": 1}
            got = [await asyncio.wait_for(listener.get(), 5) for _ in range(3)]
        assert [(e["data"]["pe"], e["data"]["state"]) for e in got] == \
            [("adapter", 2), ("vf0", 5), ("vf1", 5)]
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
        assert len(results[0]) == 1 and all(r == results[0] for r in results)
        await qmp.disconnect()

    run_console(sock_dir, body)


def test_qmpclient_on_a_guest_socket(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        async with GuestRig(console, sock_dir, name="g1") as g:
            qmp = QMPClient("operator")
            await qmp.connect(str(g.path))
            names = {c["name"] for c in await qmp.execute("query-commands")}  # type: ignore
            assert {"query-status", "human-monitor-command", *pe_command_names()} <= names
            assert await qmp.execute("query-status") == {
                "status": "running", "singlestep": False, "running": True}
            with qmp.listener("EEH_PE_PERMANENT_FAILURE") as listener:
                await qmp.execute("eeh-set-policy", {"max-freezes": 0})
                await qmp.execute("eeh-inject", {"pe": "vf0", "kind": "vf-error"})
                got = await asyncio.wait_for(listener.get(), 5)
            assert got["data"] == {"pe": "vf0", "freeze-count": 1}
            # the PE commands do not need QEMU
            await g.client.disconnect()  # QEMU's connection is lost (QEMU died)
            assert len(await qmp.execute("query-pes")) == 3  # type: ignore[arg-type]
            await qmp.disconnect()

    run_console(sock_dir, body)
