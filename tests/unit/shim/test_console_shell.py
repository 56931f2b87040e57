"""The stock qmp-shell binary (.venv/bin/qmp-shell, qemu.qmp 0.0.6) against the console
over the real platform, driven by tests/support/qmpshell.py as an operator types.

qmp-shell prints a reply as JSON on the line after its prompt and the events it holds,
as Python dicts, one per line, when it reads an empty line. It collects events only while
it waits for a reply; the console sends the events a command causes before its reply, so
an empty line right after `eeh-inject` shows them.
"""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path
from typing import Any

from eeh_console_rig import ADAPTER, run_console, sock_dir

from hypervisor_shim.console import Console
from hypervisor_shim.platform import Platform
from tests.support.qmpshell import run_qmp_shell
from tests.unit.qmp.qmp_fakes import GuestRig

__all__ = ["sock_dir"]
PROMPT = "(QEMU) "


async def shell(path: Path, lines: list[str | float], hmp: bool = False
                ) -> tuple[str, list[str]]:
    """(banner, what qmp-shell printed after each line typed)."""
    out = await asyncio.to_thread(run_qmp_shell, path, lines, hmp=hmp)
    banner, *answers = out.split(PROMPT)
    assert answers[-1] == "\n", out  # end of input: qmp-shell prints a newline and leaves
    return banner, answers[:-1]


def qmp(answer: str) -> dict[str, Any]:
    out = json.loads(answer)
    assert isinstance(out, dict)
    return out


def events(answer: str) -> list[dict[str, Any]]:
    return [ast.literal_eval(line) for line in answer.splitlines()]


def test_stock_qmp_shell_on_the_platform_socket(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        banner, out = await shell(console.platform_path, [
            "query-pes",
            "eeh-inject pe=adapter kind=adapter-fatal",
            "",
            "query-pes",
            "eeh-inject pe=vf1 function=dma-write-target-abort address=0xfee00000",
            "eeh-reset-pe pe=vf0 kind=warm",
            "__org.eeh-sriov_eeh-set-policy max-freezes=5000",
            "query-pe-error-log pe=adapter",
        ])
        assert banner == "Welcome to the QMP low-level shell!\nConnected to QEMU 0.1.0\n\n"
        pes = qmp(out[0])["return"]
        assert [(p["pe"], p["state"], p["owner"]) for p in pes] == [
            ("adapter", 0, "svc"), ("vf0", 0, "g1"), ("vf1", 0, "g2")]
        assert qmp(out[1]) == {"return": {"pe": "adapter", "kind": "adapter-fatal",
                                          "log-seq": 1}}
        evs = events(out[2])
        assert [(e["event"], e["data"]["pe"], e["data"].get("state")) for e in evs] == [
            ("EEH_PE_STATE_CHANGED", "adapter", 2), ("EEH_PE_STATE_CHANGED", "vf0", 5),
            ("EEH_PE_STATE_CHANGED", "vf1", 5), ("EEH_RECOVERY_STEP", "adapter", None)]
        assert all(set(e["timestamp"]) == {"seconds", "microseconds"} for e in evs)
        assert [p["state"] for p in qmp(out[3])["return"]] == [2, 5, 5]
        r = qmp(out[4])["return"]
        assert (r["pe"], r["kind"], r["function"], r["armed"]) == ("vf1", "errinjct", 19, True)
        assert qmp(out[5]) == {"error": {"class": "GenericError",
                                         "desc": "Parameter 'kind' does not accept value 'warm'"}}
        assert qmp(out[6])["return"]["max-freezes"] == 5000
        log = qmp(out[7])["return"]
        assert [(e["pe"], e["source"]) for e in log] == [(ADAPTER, "adapter-fatal")]
        for _ in range(100):  # the shell has left: its session ends
            if console.session_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert console.session_count() == 0

    run_console(sock_dir, body)


def test_stock_qmp_shell_on_a_guest_socket_qmp_and_hmp(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        async with GuestRig(console, sock_dir) as g:
            banner, out = await shell(g.path, ["query-status", "query-pes",
                                               "device_del id=vf3"])
            assert "Connected to QEMU 10.1.1" in banner
            assert qmp(out[0])["return"]["status"] == "running"
            assert qmp(out[1])["return"][0]["pe"] == "adapter"
            assert qmp(out[2]) == {"error": {"class": "DeviceNotFound",
                                             "desc": "Device 'vf3' not found"}}
            banner, out = await shell(g.path, ["info status"], hmp=True)
            assert banner.startswith("Welcome to the HMP shell!")
            assert out == ["VM status: running\n "]  # text mode: \r\n read as \n

    run_console(sock_dir, body)


def test_query_eeh_timeline_through_qmp_shell(sock_dir: Path) -> None:
    """The run's timeline from the console: the last entries, in the order recorded
    (as events.jsonl has them); `last` bounded."""
    async def body(console: Console, plat: Platform) -> None:
        _, out = await shell(console.platform_path, [
            "eeh-inject pe=vf0 kind=vf-error",
            "query-eeh-timeline last=1000",
            "query-eeh-timeline last=2",
            "query-eeh-timeline",
            "query-eeh-timeline last=0",
            "query-eeh-timeline last=1001",
            "query-eeh-timeline pe=vf0",
        ])
        everything = qmp(out[1])["return"]
        said = [(e["source"], e["kind"], e.get("pe")) for e in everything]
        assert said[0] == ("shim", "platform-started", None)
        # the console's request, then the hardware's freeze, then the policy's, in order
        asked = said.index(("console", "inject", "vf0"))
        assert said.index(("model", "pe-frozen", "vf0")) > asked
        assert said.index(("policy", "pe-frozen", "vf0")) > asked
        frozen = everything[said.index(("policy", "pe-frozen", "vf0"))]
        assert frozen["data"]["to"] == ["g1"] and isinstance(frozen["t"], float)
        assert all(set(e) <= {"t", "source", "kind", "pe", "owner", "data", "guest_time"}
                   for e in everything)
        assert qmp(out[2])["return"] == everything[-2:]
        assert qmp(out[3])["return"] == everything[-20:]
        assert qmp(out[4]) == {"error": {"class": "GenericError",
                                         "desc": "Parameter 'last' does not accept value '0'"}}
        assert qmp(out[5])["error"]["desc"] == \
            "Parameter 'last' does not accept value '1001'"
        assert qmp(out[6])["error"]["desc"] == "Parameter 'pe' is unexpected"

    run_console(sock_dir, body)


def test_stock_qmp_shell_hmp_mode_on_the_platform_socket(sock_dir: Path) -> None:
    """qmp-shell -H on platform.qmp (no QEMU behind it) used to die on the CommandNotFound
    reply (KeyError: 'return'); the platform socket's small HMP answers text instead."""
    async def body(console: Console, plat: Platform) -> None:
        await plat.inject("vf0", "vf-error")
        banner, out = await shell(console.platform_path, [
            "help", "info pes", "info policy", "info timeline 1", "info nothing", "frobnicate",
        ], hmp=True)
        assert banner.startswith("Welcome to the HMP shell!"), banner
        assert out[0].startswith("help ") and "info pes" in out[0]
        pes = [line.split() for line in out[1].splitlines() if line.strip()]
        assert pes[0] == ["pe", "state", "flags", "owner", "freezes"]
        vf0 = next(row for row in pes if row[0] == "vf0")
        assert vf0[1] in ("2", "4", "5") and vf0[-1] == "1"  # frozen once by the VF error
        assert "max-freezes: 5" in out[2]
        assert len([line for line in out[3].splitlines() if line.strip()]) == 1
        assert out[4].startswith("info: unknown subcommand: 'nothing'")
        assert out[5].startswith("unknown command: 'frobnicate'")

    run_console(sock_dir, body)
