"""The console in front of a real QEMU guest, driven by the stock qmp-shell (issue 9.4).

One guest holds the PF and vf0, served by a real device model (AdapterHost). The
console's socket for it passes `query-status` and HMP (`qmp-shell -H`: `info status`) to
QEMU and adds the PE commands, here over a PlatformApi written in this test on the device
model itself (no PE policy): `query-pes` lists the real PEs, `eeh-inject` freezes the
adapter PE in the model, and the model's freeze events, sent from its own thread, reach
the shell as EEH_PE_STATE_CHANGED.
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
from typing import Any, TypeVar

import pytest

from device_model import Event, EventKind, Pe, ResetKind
from eeh_abi.papr import MAX_FREEZES, Status
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from hypervisor_shim.console import Console, PlatformApiError, PlatformListener
from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine

pytestmark = pytest.mark.vm

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"
PROMPT = "(QEMU) "
T = TypeVar("T")


class DeviceModelApi:
    """A PlatformApi straight on the device model: the PEs as the hardware sees them, no
    policy (the real one, hypervisor_shim.platform_api, replaces this)."""

    def __init__(self, host: AdapterHost, owners: dict[str, str]) -> None:
        self.host = host
        self.owners = owners
        self.policy: dict[str, Any] = {"max-freezes": MAX_FREEZES, "window-s": 3600.0}
        self.listeners: list[PlatformListener] = []
        host.call(lambda: host.adapter.events.add_listener(self._on_event))

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self.host.call, fn)  # never block the console

    def _pe(self, name: str) -> Pe:
        for pe in self.host.adapter.pes:
            if pe.name == name:
                return pe
        raise PlatformApiError(f"no PE named {name!r}")

    def _describe(self, pe: Pe) -> dict[str, Any]:
        status = pe.status()
        owner = self.owners.get("pf" if pe.name == "adapter" else pe.name)
        return {"pe": pe.name, "address": pe.address, "state": int(status.code),
                "retry_ms": status.unavailable_ms, "owner": owner,
                "freeze_count": pe.freeze_count, "flags": ["isolated"] if pe.frozen else []}

    def _on_event(self, event: Event) -> None:  # on the device model's thread
        if event.kind is EventKind.PE_FROZEN:
            cause = str(event.data.get("reason"))
        elif event.kind is EventKind.PE_RESET_DONE:
            cause = f"{event.data.get('reset')} reset done"
        else:
            return
        assert event.pe is not None
        data = {**self._describe(self.host.adapter.pes.get(event.pe)), "cause": cause}
        for cb in self.listeners:
            cb("EEH_PE_STATE_CHANGED", data)

    async def query_pes(self) -> list[dict[str, Any]]:
        return await self._call(lambda: [self._describe(p) for p in self.host.adapter.pes])

    async def inject(self, pe: str, kind: str, function: int | None, address: int,
                     mask: int) -> dict[str, Any]:
        adapter = self.host.adapter

        def go() -> dict[str, Any]:
            target = self._pe(pe)
            if kind == "adapter-fatal":
                if target is not adapter.pes.adapter:
                    raise PlatformApiError("adapter-fatal goes to the adapter PE")
                return adapter.inject_adapter_fatal("console").to_json()
            if kind == "vf-error":
                if target not in adapter.pes.vfs:
                    raise PlatformApiError("vf-error goes to a VF PE")
                return adapter.inject_vf_error(adapter.pes.vfs.index(target)).to_json()
            assert function is not None
            inj = adapter.inject(target, function, address, mask, now=True)
            return {"pe": pe, "injection": inj.id}

        return await self._call(go)

    async def reset_pe(self, pe: str, kind: str) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            status = self._pe(pe).reset(ResetKind[kind.upper()])
            if status is not Status.SUCCESS:
                raise PlatformApiError(f"reset refused: {status.name}")
            return {"pe": pe, "kind": kind}

        return await self._call(go)

    async def error_log(self, pe: str) -> list[dict[str, Any]]:
        return await self._call(lambda: [e.to_json() for e in self._pe(pe).error_log()])

    async def set_policy(self, max_freezes: int | None,
                         window_s: float | None) -> dict[str, Any]:
        if max_freezes is not None:
            self.policy["max-freezes"] = max_freezes
        if window_s is not None:
            self.policy["window-s"] = window_s
        return dict(self.policy)

    async def query_policy(self) -> dict[str, Any]:
        return dict(self.policy)

    def add_listener(self, callback: PlatformListener) -> None:
        self.listeners.append(callback)


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
    "",
    "eeh-reset-pe pe=vf0 kind=fundamental",
    "eeh-inject pe=vf0 function=25",
    "eeh-inject pe=adapter kind=adapter-fatal",
    "",
    "query-pes",
    "query-pe-error-log pe=adapter",
]


def states(answer: str) -> list[tuple[str, int]]:
    return [(p["pe"], p["state"]) for p in json.loads(answer)["return"]]


def events(answer: str) -> list[tuple[str, str, int]]:
    evs = [ast.literal_eval(line) for line in answer.splitlines()]
    return [(e["event"], e["data"]["pe"], e["data"]["state"]) for e in evs]


def test_stock_qmp_shell_through_the_console_to_a_guest(
        assets: GuestAssets, machine_config: MachineConfig,
        run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    with AdapterHost(AdapterHostConfig(total_vfs=2, enabled_vfs=2)) as host:
        cfg = host.machine_config(dataclasses.replace(machine_config, name="con"),
                                  ["pf", "vf0"])
        api = DeviceModelApi(host, {"pf": "con", "vf0": "con"})

        async def go() -> tuple[list[str], list[str]]:
            async with Machine(cfg, assets, run_dir=d, repo=REPO, command="sleep 300") as vm, \
                    Console(sock_dir, api) as console:
                path = await console.add_guest("con", vm)
                out = await qmp_shell(path, SESSION, home=d)
                hmp = await qmp_shell(path, ["info status"], "-H", home=d)
                history = [dataclasses.asdict(h) for h in console.history]
                (d / "console-history.jsonl").write_text(
                    "".join(json.dumps(h, default=str) + "\n" for h in history))
                return out, hmp

        sock_dir = Path(tempfile.mkdtemp(prefix="eeh-con-", dir="/tmp"))
        try:
            out, hmp = asyncio.run(go())
        finally:
            shutil.rmtree(sock_dir, ignore_errors=True)
        frozen = host.call(lambda: [pe.status().code for pe in host.adapter.pes])

    (status, pes, vf_error, vf_events, vf_reset, reset_events, refused, bad_function, fatal,
     fatal_events, pes_after, log) = out
    # passed through to QEMU
    assert json.loads(status)["return"]["status"] == "running", status
    assert hmp == ["VM status: running\r\n "], hmp
    # the PE commands, on the real device model
    before = json.loads(pes)["return"]
    assert [(p["pe"], p["state"], p["owner"]) for p in before] == [
        ("adapter", 0, "con"), ("vf0", 0, "con"), ("vf1", 0, None)], pes
    assert json.loads(vf_error)["return"]["source"] == "vf-error", vf_error
    assert events(vf_events) == [("EEH_PE_STATE_CHANGED", "vf1", 2)], vf_events
    assert json.loads(vf_reset) == {"return": {"pe": "vf1", "kind": "hot"}}
    assert events(reset_events) == [("EEH_PE_STATE_CHANGED", "vf1", 0)], reset_events
    assert json.loads(refused) == {"error": {"class": "GenericError",
                                             "desc": "reset refused: NOT_SUPPORTED"}}
    assert json.loads(bad_function)["error"]["desc"] == \
        "Parameter 'function' does not accept value '25'"
    assert json.loads(fatal)["return"]["source"] == "adapter-fatal", fatal
    assert events(fatal_events) == [("EEH_PE_STATE_CHANGED", "adapter", 2),
                                    ("EEH_PE_STATE_CHANGED", "vf0", 2),
                                    ("EEH_PE_STATE_CHANGED", "vf1", 2)], fatal_events
    assert states(pes_after) == [("adapter", 2), ("vf0", 2), ("vf1", 2)]
    assert json.loads(log)["return"][0]["source"] == "adapter-fatal", log
    assert [int(c) for c in frozen] == [2, 2, 2]
