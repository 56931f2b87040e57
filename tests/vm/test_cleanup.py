"""No stray QEMU, socket or temporary directory: on Ctrl-C, and when the launcher dies."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qemu_launcher.assets import REPO


def _qemu_pids(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"qemu-system" in a for a in cmdline) and any(marker.encode() in a for a in cmdline):
            pids.append(int(entry))
    return pids


def _start_and_wait_ready(runs: Path) -> tuple[subprocess.Popen[bytes], list[int], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "eeh_sriov", "--runs", str(runs), "--accel", "tcg",
         "vm", "--timeout", "600", "--", "sleep 100000"], cwd=REPO)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        consoles = list(runs.glob("*-vm-*/console.log"))
        if consoles and "EEH-GUEST-READY" in consoles[0].read_text(errors="replace"):
            run_dir = consoles[0].parent
            pids = _qemu_pids(str(run_dir))
            assert pids, "QEMU of the run not found"
            return proc, pids, run_dir
        assert proc.poll() is None, "launcher exited before the guest was ready"
        time.sleep(0.2)
    proc.kill()
    pytest.fail("guest did not become ready")


def _sock_dir(run_dir: Path) -> Path:
    for arg in (run_dir / "qemu-cmdline.txt").read_text().split():
        if arg.startswith("socket,id=qmp0,path="):
            return Path(arg.split("path=", 1)[1]).parent
    raise AssertionError("no QMP socket in the command line")


def _gone(pids: list[int], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{p}").exists() for p in pids):
            return True
        time.sleep(0.1)
    return False


def test_ctrl_c_stops_qemu_and_removes_sockets(tmp_path: Path) -> None:
    proc, pids, run_dir = _start_and_wait_ready(tmp_path)
    sock_dir = _sock_dir(run_dir)
    assert sock_dir.exists()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    assert _gone(pids, 10), f"QEMU {pids} survived Ctrl-C"
    assert not sock_dir.exists()
    assert (run_dir / "machine.json").exists()


def test_qemu_dies_with_a_killed_launcher(tmp_path: Path) -> None:
    proc, pids, run_dir = _start_and_wait_ready(tmp_path)
    sock_dir = _sock_dir(run_dir)
    try:
        proc.kill()
        proc.wait(timeout=30)
        assert _gone(pids, 10), f"QEMU {pids} outlived its launcher"
    finally:
        # a SIGKILLed launcher cannot remove its socket directory: the test does
        shutil.rmtree(sock_dir, ignore_errors=True)
