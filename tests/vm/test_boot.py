"""The foundation on the real thing: QEMU boots the guest, runs commands, never hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import READY_MARKER, MachineConfig
from qemu_launcher.errors import BootTimeout, GuestTimeout
from qemu_launcher.machine import Machine
from qemu_launcher.run import run_command

RunDir = Callable[..., Path]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purposes
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


def test_guest_imports_project_and_libraries(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir
) -> None:
    d = run_dir()
    cmd = "python3 -c 'import pyudev, scapy, guest_drivers; print(\"imports-ok\")'"
    result = asyncio.run(run_command(machine_config, assets, cmd, d, timeout=240))
    assert result.status == 0, result.output
    assert "imports-ok" in result.output
    for name in ("console.log", "qemu.log", "qmp.jsonl", "machine.json", "qemu-cmdline.txt"):
        assert (d / name).is_file(), name
    assert READY_MARKER in (d / "console.log").read_text()
    summary = json.loads((d / "machine.json").read_text())
    assert summary["accel"] == machine_config.accel
    assert summary["status"] == 0


def test_failing_guest_command_returns_its_status(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir
) -> None:
    result = asyncio.run(run_command(
        machine_config, assets, "echo going-wrong >&2; exit 3", run_dir(), timeout=240))
    assert result.status == 3
    assert "going-wrong" in result.output


def test_hung_guest_is_reported_with_console_and_cleaned_up(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir
) -> None:
    d = run_dir()

    async def go() -> Machine:
        vm = Machine(machine_config, assets, run_dir=d, repo=REPO,
                     command="echo about-to-hang; sleep 100000")
        with pytest.raises(GuestTimeout) as info:
            async with vm:
                await vm.wait_exit(timeout=8)
        err = info.value
        assert err.run_dir == d
        assert any("about-to-hang" in line for line in err.console_tail)
        assert "last console lines" in str(err)
        return vm

    vm = asyncio.run(go())
    assert vm.proc is not None and vm.proc.returncode is not None
    assert not _alive(vm.proc.pid)
    assert not vm.paths.sock_dir.exists()


def test_boot_timeout_is_reported_not_waited_on(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir
) -> None:
    # (a guest restored from its saved state is ready in about a second: 0.2 s is short
    # of that too)
    cfg = dataclasses.replace(machine_config, boot_timeout=0.2)

    async def go() -> Machine:
        vm = Machine(cfg, assets, run_dir=run_dir(), repo=REPO, command="true")
        with pytest.raises(BootTimeout) as info:
            async with vm:
                pass
        assert "guest did not become ready within 0.2 s" in str(info.value)
        return vm

    vm = asyncio.run(go())
    assert vm.proc is not None and not _alive(vm.proc.pid)


def test_qmp_talks_to_the_running_guest_and_is_logged(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir
) -> None:
    d = run_dir()

    async def go() -> tuple[object, object]:
        async with Machine(machine_config, assets, run_dir=d, repo=REPO,
                           command="sleep 100000") as vm:
            status = await vm.execute("query-status")
            pci = await vm.execute("query-pci")
            return status, pci

    status, pci = asyncio.run(go())
    assert isinstance(status, dict) and status["status"] == "running"
    assert isinstance(pci, list) and pci[0]["devices"]
    log = [json.loads(line) for line in (d / "qmp.jsonl").read_text().splitlines()]
    sent = [r["msg"]["execute"] for r in log if r["dir"] == "out"]
    # after what the launcher sent while booting (a restore's commands, hot-plug)
    assert sent[-3:] == ["query-status", "query-pci", "quit"]
