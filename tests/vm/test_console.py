"""The console in front of a real QEMU guest, driven by the stock qmp-shell (issue 9.4).

One guest holds the PF and vf0 of the real platform (device model, PE policy, timeline).
The console's socket for it passes `query-status` and HMP (`qmp-shell -H`: `info
status`) to QEMU and adds the PE commands on the `Platform` facade: `query-pes` lists
the real PEs, `eeh-inject` freezes them, and the platform's events, sent from the device
model's thread, reach the shell as EEH_PE_STATE_CHANGED and EEH_RECOVERY_STEP.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from hypervisor_shim.console import Console
from hypervisor_shim.platform import Platform, PlatformConfig
from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine

pytestmark = pytest.mark.vm

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"
PROMPT = "(QEMU) "


async def qmp_shell(socket: Path, lines: list[str], *options: str,
                    home: Path) -> list[str]:
    """Type `lines` into the stock qmp-shell; what it printed after each prompt."""
    proc = await asyncio.create_subprocess_exec(
        str(QMP_SHELL), *options, str(socket), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HOME": str(home)})
    out, _ = await asyncio.wait_for(proc.communicate("\n".join(lines).encode() + b"\n"), 120)
    text = out.decode()
    (home / f"qmp-shell{'-hmp' if options else ''}.txt").write_text(text)
    assert proc.returncode == 0, text
    return text.split(PROMPT)[1:-1]


SESSION = [
    "query-status",
    "query-pes",
    "eeh-inject pe=vf1 kind=vf-error",
    "",
    "eeh-reset-pe pe=vf1",
    "eeh-reset-pe pe=vf0 kind=fundamental",
    "eeh-inject pe=vf0 function=25",
    "eeh-inject pe=adapter kind=adapter-fatal",
    "",
    "query-pes",
    "query-pe-error-log pe=adapter",
]


def states(answer: str) -> list[tuple[str, int]]:
    return [(p["pe"], p["state"]) for p in json.loads(answer)["return"]]


def events(answer: str) -> list[tuple[str, str, int | None]]:
    evs = [ast.literal_eval(line) for line in answer.splitlines()]
    return [(e["event"], e["data"]["pe"], e["data"].get("state")) for e in evs]


def test_stock_qmp_shell_through_the_console_to_a_guest(
        assets: GuestAssets, machine_config: MachineConfig,
        run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners={"pf": "con", "vf0": "con"})
    with Platform(cfg, d) as plat:
        mcfg = plat.host.machine_config(dataclasses.replace(machine_config, name="con"),
                                        ["pf", "vf0"])

        async def go() -> tuple[list[str], list[str]]:
            async with Machine(mcfg, assets, run_dir=d, repo=REPO,
                               command="sleep 300") as vm, \
                    Console(sock_dir, plat) as console:
                path = await console.add_guest("con", vm)
                out = await qmp_shell(path, SESSION, home=d)
                hmp = await qmp_shell(path, ["info status"], "-H", home=d)
                history = [dataclasses.asdict(h) for h in console.history]
                (d / "console-history.jsonl").write_text(
                    "".join(json.dumps(h, default=str) + "\n" for h in history))
                return out, hmp

        sock_dir = Path(tempfile.mkdtemp(prefix="eeh-con-"))  # the session's short temp dir
        try:
            out, hmp = asyncio.run(go())
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
        frozen = plat.call(lambda: [int(pe.status().code) for pe in plat.adapter.pes])

    (status, pes, vf_error, vf_events, vf_reset, refused, bad_function, fatal,
     fatal_events, pes_after, log) = out
    # passed through to QEMU
    assert json.loads(status)["return"]["status"] == "running", status
    assert hmp == ["VM status: running\r\n "], hmp
    # the PE commands, on the real platform
    before = json.loads(pes)["return"]
    assert [(p["pe"], p["state"], p["owner"]) for p in before] == [
        ("adapter", 0, "con"), ("vf0", 0, "con"), ("vf1", 0, None)], pes
    assert json.loads(vf_error) == {"return": {"pe": "vf1", "kind": "vf-error", "log-seq": 1}}
    assert events(vf_events) == [("EEH_PE_STATE_CHANGED", "vf1", 2)], vf_events
    assert json.loads(vf_reset) == {"return": {"pe": "vf1", "kind": "hot", "status": 0}}
    assert json.loads(refused) == {"error": {
        "class": "GenericError", "desc": "reset of vf0 refused: status -8 (NOT_SUPPORTED) (a "
        "fundamental reset is for an adapter PE; a VF PE takes a hot reset, an FLR)"}}
    assert json.loads(bad_function)["error"]["desc"] == \
        "Parameter 'function' does not accept value '25'"
    assert json.loads(fatal) == {"return": {"pe": "adapter", "kind": "adapter-fatal",
                                            "log-seq": 2}}
    # (events of vf1's reset may come first: it completes on the model's own time)
    got = [e for e in events(fatal_events) if e[1] != "vf1" or e[2] != 0]
    assert got[-4:] == [("EEH_PE_STATE_CHANGED", "adapter", 2),
                        ("EEH_PE_STATE_CHANGED", "vf0", 5),
                        ("EEH_PE_STATE_CHANGED", "vf1", 5),
                        ("EEH_RECOVERY_STEP", "adapter", None)], fatal_events
    assert states(pes_after) == [("adapter", 2), ("vf0", 5), ("vf1", 5)]
    assert json.loads(log)["return"][0]["source"] == "adapter-fatal", log
    assert frozen[:3] == [2, 2, 2]  # as the hardware sees them: all frozen
