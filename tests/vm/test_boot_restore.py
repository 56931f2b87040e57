"""Staged boots (qemu_launcher.snapshot): the first guest of a configuration boots its
kernel and saves itself at stage 1's wait; the next are restored from that file, and
still differ where they must (name, RNG, clock); a file that does not load is replaced."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import EXIT_MARKER, MachineConfig
from qemu_launcher.machine import GuestResult, Machine

RunDir = Callable[..., Path]
PROBE = ("echo name=$EEH_GUEST; "
         "python3 -c 'import os; print(\"rnd=\" + os.urandom(16).hex())'; "
         "echo vmfork=$(dmesg | grep -c 'crng reseeded due to virtual machine fork'); "
         "echo clock=$(date +%s)")


def _boot(d: Path) -> dict[str, object]:
    info = json.loads((d / "machine.json").read_text())["boot"]
    assert isinstance(info, dict)
    return info


async def _run(cfg: MachineConfig, assets: GuestAssets, d: Path,
               command: str) -> tuple[GuestResult, float]:
    async with Machine(cfg, assets, run_dir=d, repo=REPO, command=command) as vm:
        result = await vm.wait_exit(timeout=240)
        # the host's clock when the exit marker (just after the command) was seen
        exited = vm.console.marks[EXIT_MARKER][0]
        return result, time.time() - (time.monotonic() - exited)


def _field(output: str, name: str) -> str:
    m = re.search(rf"^{name}=(\S+)$", output, re.M)
    assert m, f"{name} not in {output!r}"
    return m.group(1)


def test_guests_restored_from_one_saved_state_differ(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    first = run_dir("first")
    # the guest runs on for 8 s after its save: a restored clock left alone lags that much
    result, _ = asyncio.run(_run(machine_config, staged, first, "sleep 8"))
    assert result.status == 0
    boot = _boot(first)
    assert boot["how"] == "cold" and boot.get("save_s") is not None, boot
    assert Path(str(boot["saved_state"])).is_file()

    dirs = {n: run_dir(n) for n in ("r1", "r2")}

    async def two() -> list[tuple[GuestResult, float]]:
        return list(await asyncio.gather(*(
            _run(dataclasses.replace(machine_config, name=n), staged, d, PROBE)
            for n, d in dirs.items())))

    runs = asyncio.run(two())
    for (result, host_clock), (name, d) in zip(runs, dirs.items(), strict=True):
        assert result.status == 0, result.output
        assert _boot(d)["how"] == "restored", _boot(d)
        assert _field(result.output, "name") == name
        # the go line set the clock (integer seconds, the command's end, a loaded host)
        assert abs(int(_field(result.output, "clock")) - host_clock) <= 4, result.output
        # vmgenid: a new GUID in each QEMU, so the restored kernel reseeded its RNG
        assert _field(result.output, "vmfork") == "1", result.output
    rnd = {_field(r.output, "rnd") for r, _ in runs}
    assert len(rnd) == 2, "two restored guests drew the same random bytes"


def test_a_saved_state_that_does_not_load_is_replaced_by_a_cold_boot(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    d = run_dir()
    vm = Machine(machine_config, staged, run_dir=d, repo=REPO, command="echo ran")
    assert vm.saved is not None
    vm.saved.path.parent.mkdir(parents=True)
    vm.saved.path.write_bytes(b"not a saved state")

    async def go() -> GuestResult:
        async with vm:
            return await vm.wait_exit(timeout=240)

    result = asyncio.run(go())
    assert result.status == 0 and "ran" in result.output
    boot = _boot(d)
    assert boot["how"] == "cold" and "restore_failed" in boot, boot
    assert boot.get("save_s") is not None, boot
    # saved again, and this one loads
    assert vm.saved.path.read_bytes()[:17] != b"not a saved state"
    again = run_dir("again")
    result, _ = asyncio.run(_run(machine_config, staged, again, "true"))
    assert result.status == 0 and _boot(again)["how"] == "restored"


def test_save_state_makes_the_saved_state_and_nothing_more(
        assets: GuestAssets, machine_config: MachineConfig, run_dir: RunDir,
        tmp_path: Path) -> None:
    """Machine.save_state (a benchmark's first boot: bench.guests.save_states): the
    kernel boots to stage 1's wait, the state is saved and QEMU stopped, no go and no
    command; a second asks nothing of QEMU; the next guest restores."""
    staged = dataclasses.replace(assets, snapshots=tmp_path / "saved")
    d = run_dir("save")
    vm = Machine(machine_config, staged, run_dir=d, repo=REPO)
    made = asyncio.run(vm.save_state())
    assert made["how"] == "cold" and made.get("save_s") is not None, made
    assert vm.saved is not None and vm.saved.exists() and vm.exited
    console = (d / "console.log").read_text()
    assert "EEH-GUEST-WAITING" in console and "EEH-GUEST-GO" not in console
    again = Machine(machine_config, staged, run_dir=run_dir("again"), repo=REPO)
    assert asyncio.run(again.save_state()) == {"how": "present"} and again.proc is None
    after = run_dir("after")
    result, _ = asyncio.run(_run(machine_config, staged, after, "true"))
    assert result.status == 0 and _boot(after)["how"] == "restored"
