"""The zygote (qemu_launcher.guest_zygote): a staged guest's python3 is started, its
imports done, before the guest is saved; guests restored from that one file run a
`python3 -m ...` command in it, each with random state of its own; any other command
runs with sh; a checkout other than the one copied into the initramfs is not trusted."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import GuestResult, Machine

RunDir = Callable[..., Path]
REPORT = "python3 -m qemu_launcher.guest_zygote report"


def _boot(d: Path) -> dict[str, object]:
    info = json.loads((d / "machine.json").read_text())["boot"]
    assert isinstance(info, dict)
    return info


async def _run(cfg: MachineConfig, assets: GuestAssets, d: Path, command: str,
               repo: Path = REPO) -> GuestResult:
    async with Machine(cfg, assets, run_dir=d, repo=repo, command=command) as vm:
        return await vm.wait_exit(timeout=240)


def _report(result: GuestResult) -> dict[str, object]:
    m = re.search(r"^(\{.*\})$", result.output, re.M)
    assert m, result.output
    got = json.loads(m.group(1))
    assert isinstance(got, dict)
    return got


def _save(cfg: MachineConfig, assets: GuestAssets, run_dir: RunDir) -> None:
    first = run_dir("first")
    result = asyncio.run(_run(cfg, assets, first, "true"))
    assert result.status == 0, result.output
    assert _boot(first).get("save_s") is not None, _boot(first)
    console = (first / "console.log").read_text(errors="replace")
    assert re.search(r"^EEH-GUEST-ZYGOTE preloaded \d+ modules", console, re.M), console


def test_restored_guests_run_python_in_the_zygote_each_with_its_own_random_state(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    _save(machine_config, staged, run_dir)
    dirs = {n: run_dir(n) for n in ("r1", "r2")}

    async def two() -> list[GuestResult]:
        return list(await asyncio.gather(*(
            _run(dataclasses.replace(machine_config, name=n), staged, d, REPORT)
            for n, d in dirs.items())))

    results = asyncio.run(two())
    reports = []
    for result, d in zip(results, dirs.values(), strict=True):
        assert result.status == 0, result.output
        assert _boot(d)["how"] == "restored", _boot(d)
        got = _report(result)
        started = got["started"]
        assert isinstance(started, dict)
        assert started["how"] == "zygote", got
        assert started["checkout"] == "same", got
        assert isinstance(started["modules"], int) and started["modules"] > 50, got
        # the child's import caches refreshed without importlib.invalidate_caches(),
        # which imports importlib.metadata (~1 s of a TCG guest's CPU)
        assert got["importlib_metadata"] is False, got
        reports.append(got)
    a, b = reports
    # the kernel RNG reseeded at the restore (vmgenid), `random` reseeded from it
    assert a["urandom"] != b["urandom"], reports
    assert a["random"] != b["random"], "two restored guests drew the same random numbers"
    # the hash seed is the saved interpreter's: the same in both (qemu_launcher.guest_zygote)
    assert a["hash"] == b["hash"], reports


def test_a_command_that_is_not_python_m_runs_with_sh(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    _save(machine_config, staged, run_dir)
    d = run_dir("sh")
    result = asyncio.run(_run(machine_config, staged, d,
                              f"echo shell=$EEH_GUEST; {REPORT}; exit 3"))
    assert result.status == 3, result.output
    assert f"shell={machine_config.name}" in result.output
    assert _report(result)["started"] == {"how": "exec"}
    console = (d / "console.log").read_text(errors="replace")
    assert "EEH-GUEST-ZYGOTE runs the command with sh: exec shell syntax" in console, console
    # a python3 -m command that fails: its status and stderr come back through the zygote
    d = run_dir("status")
    result = asyncio.run(_run(machine_config, staged, d,
                              "python3 -m qemu_launcher.guest_zygote no-such-mode"))
    assert result.status == 2, result.output
    assert "usage: python3 -m qemu_launcher.guest_zygote" in result.output, result.output
    assert "started from the pre-imported" in (d / "console.log").read_text(errors="replace")


def test_another_checkout_is_imported_from_itself(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    """The initramfs holds copies of this checkout's guest modules; a guest that mounts
    another checkout (eeh_sriov's plugin may run one) drops them and imports its own."""
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    _save(machine_config, staged, run_dir)
    other = tmp_path / "checkout"
    shutil.copytree(REPO / "qemu", other / "qemu")
    (other / "qemu_launcher").mkdir()
    for name in ("__init__.py", "guest_zygote.py"):
        shutil.copy(REPO / "qemu_launcher" / name, other / "qemu_launcher" / name)
    (other / "guest_drivers").mkdir()
    (other / "guest_drivers" / "__init__.py").write_text("MARK = 'the other checkout'\n")
    (other / "guest_drivers" / "__main__.py").write_text(
        "import json\n"
        "from guest_drivers import MARK\n"
        "from qemu_launcher.guest_zygote import started\n"
        "print(json.dumps({'mark': MARK, 'started': started()}))\n")
    d = run_dir("other")
    # guest_drivers was preloaded from this checkout's copy (its __init__ has no MARK)
    result = asyncio.run(_run(machine_config, staged, d, "python3 -m guest_drivers",
                              repo=other))
    assert result.status == 0, result.output
    got = _report(result)
    assert got["mark"] == "the other checkout", got
    started = got["started"]
    assert isinstance(started, dict) and started["how"] == "zygote", got
    assert str(started["checkout"]).startswith("differs at /mnt/repo/"), started
