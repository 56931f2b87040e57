"""The stock qmp-shell binary (.venv/bin/qmp-shell, qemu.qmp 0.0.6) against the console.

qmp-shell prints a reply as JSON on the line after its prompt and the events it holds,
as Python dicts, one per line, when it reads an empty line. It collects events only while
it waits for a reply; the console sends the events a command causes before its reply, so
an empty line right after `eeh-inject` shows them.
"""

from __future__ import annotations

import ast
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from test_console_fakes import FakePlatformApi, GuestRig, run_console, sock_dir

from hypervisor_shim.console import Console

__all__ = ["sock_dir"]
QMP_SHELL = Path(sys.executable).parent / "qmp-shell"
PROMPT = "(QEMU) "


async def shell(path: Path, lines: list[str], *options: str,
                home: Path) -> tuple[str, list[str]]:
    """Run qmp-shell on `path` with `lines` as its input; (banner, output per line)."""
    proc = await asyncio.create_subprocess_exec(
        str(QMP_SHELL), *options, str(path), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "HOME": str(home)})  # its history file goes there
    out, err = await asyncio.wait_for(proc.communicate("\n".join(lines).encode() + b"\n"), 60)
    assert proc.returncode == 0, (out, err)
    assert not err, err
    banner, *answers = out.decode().split(PROMPT)
    assert answers[-1] == "\n"  # end of input: qmp-shell prints a newline and leaves
    return banner, answers[:-1]


def qmp(answer: str) -> dict[str, Any]:
    out = json.loads(answer)
    assert isinstance(out, dict)
    return out


def events(answer: str) -> list[dict[str, Any]]:
    return [ast.literal_eval(line) for line in answer.splitlines()]


def test_stock_qmp_shell_on_the_platform_socket(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        banner, out = await shell(console.platform_path, [
            "query-pes",
            "eeh-inject pe=adapter kind=adapter-fatal",
            "",
            "query-pes",
            "eeh-inject pe=vf1 function=dma-write-target-abort address=0xfee00000",
            "eeh-reset-pe pe=vf0 kind=warm",
            "__org.eeh-sriov_eeh-set-policy max-freezes=5000",
            "",
        ], home=sock_dir)
        assert banner == "Welcome to the QMP low-level shell!\nConnected to QEMU 0.1.0\n\n"
        pes = qmp(out[0])["return"]
        assert [(p["pe"], p["state"]) for p in pes] == [("adapter", 0), ("vf0", 0), ("vf1", 0)]
        assert qmp(out[1]) == {"return": {"pe": "adapter", "kind": "adapter-fatal",
                                          "frozen": ["adapter", "vf0", "vf1"]}}
        evs = events(out[2])
        assert [(e["event"], e["data"]["pe"], e["data"]["state"]) for e in evs] == [
            ("EEH_PE_STATE_CHANGED", "adapter", 2), ("EEH_PE_STATE_CHANGED", "vf0", 2),
            ("EEH_PE_STATE_CHANGED", "vf1", 2)]
        assert all(set(e["timestamp"]) == {"seconds", "microseconds"} for e in evs)
        assert [p["state"] for p in qmp(out[3])["return"]] == [2, 2, 2]
        assert qmp(out[4])["return"]["frozen"] == ["vf1"]
        assert ("inject", "vf1", "errinjct", 19, 0xFEE00000, 0) in api.calls
        assert qmp(out[5]) == {"error": {"class": "GenericError",
                                         "desc": "Parameter 'kind' does not accept value 'warm'"}}
        assert qmp(out[6]) == {"return": {"max-freezes": 5000, "window-s": 3600.0}}
        assert [e["data"]["pe"] for e in events(out[7])] == ["vf1"]
        for _ in range(100):  # the shell has left: its session ends
            if console.session_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert console.session_count() == 0

    run_console(sock_dir, body)


def test_stock_qmp_shell_on_a_guest_socket_qmp_and_hmp(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir) as g:
            banner, out = await shell(g.path, ["query-status", "query-pes",
                                               "device_del id=vf3"], home=sock_dir)
            assert "Connected to QEMU 10.1.1" in banner
            assert qmp(out[0])["return"]["status"] == "running"
            assert qmp(out[1])["return"][0]["pe"] == "adapter"
            assert qmp(out[2]) == {"error": {"class": "DeviceNotFound",
                                             "desc": "Device 'vf3' not found"}}
            banner, out = await shell(g.path, ["info status"], "-H", home=sock_dir)
            assert banner.startswith("Welcome to the HMP shell!")
            assert out == ["VM status: running\r\n "]

    run_console(sock_dir, body)
