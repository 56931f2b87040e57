"""A whole topology leaves nothing behind (issue 11): no QEMU, no socket or temporary
directory, no TAP interface, after success, failure, a timeout or Ctrl-C of `up`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from eeh_sriov.recovery_demo import Story, StoryConfig, StoryError
from eeh_sriov.system import System
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.errors import GuestError


def qemu_pids(marker: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if b"qemu-system" in cmd and marker.encode() in cmd:
                pids.append(int(entry))
    return pids


def temp_dirs() -> set[str]:
    return {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("eeh-")}


def run_temp_dirs(run_dir: Path) -> set[Path]:
    """The temporary directories this run used (sockets of QMP, vfio-user, platform
    channels, consoles), as its command lines and consoles.json name them."""
    tmp = re.escape(tempfile.gettempdir())
    found: set[Path] = set()
    for f in [*run_dir.rglob("qemu-cmdline.txt"), *run_dir.glob("consoles.json")]:
        found |= {Path(m) for m in re.findall(tmp + r"/eeh-[A-Za-z0-9_-]+", f.read_text())}
    return found


def assert_clean(run_dir: Path, before: set[str]) -> None:
    deadline = time.monotonic() + 10
    while qemu_pids(str(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert qemu_pids(str(run_dir)) == [], "QEMU left running"
    used = run_temp_dirs(run_dir)
    assert used, f"no temporary directories found in the run's files ({run_dir})"
    assert [p for p in used if p.exists()] == [], "socket/temp directories left"
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        if '"platform-started"' in line:
            tap = json.loads(line)["data"]["uplink"]
            assert tap == "queue" or not Path(f"/sys/class/net/{tap}").exists(), \
                f"TAP interface {tap} left"


def test_clean_after_success_failure_and_timeout(
        assets: GuestAssets, accel: str, run_dir: Callable[..., Path]) -> None:
    topo = load_topology(DEFAULT_TOPOLOGY)
    before = temp_dirs()
    # success: the story told to the end
    d = run_dir("ok")
    result = asyncio.run(Story(StoryConfig(topo, accel=accel, before_s=0.2, after_s=0.2),
                               assets, d, say=lambda s: None).run())
    assert result.ok, result.failure
    assert_clean(d, before)
    # timeout: drivers that never come up (the guests only sleep)
    d = run_dir("timeout")
    story = Story(StoryConfig(topo, accel=accel, ready_timeout=3), assets, d,
                  say=lambda s: None)
    story.guest_command = lambda guest: "sleep 600"  # type: ignore[method-assign]
    with pytest.raises(StoryError, match="not ready"):
        asyncio.run(story.run())
    assert_clean(d, before)
    # failure: a guest that cannot boot in time
    d = run_dir("fail")

    async def boot_fails() -> None:
        async with System(topo, d, assets, accel=accel, boot_timeout=0.5,
                          guest_command=lambda g: "true"):
            pass
    with pytest.raises(GuestError):
        asyncio.run(boot_fails())
    assert_clean(d, before)


def test_clean_after_ctrl_c_while_guests_boot(tmp_path: Path) -> None:
    """Ctrl-C while the guests are still starting (asyncio.run's own handling could let
    the command run on: eeh_sriov.interrupt)."""
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "eeh_sriov", "--runs", str(runs),
                             "--accel", "tcg", "up", "--command", "sleep 600"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not list(runs.glob("*-up-*/*/qemu-cmdline.txt")):
        assert time.monotonic() < deadline and proc.poll() is None, "no guest started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "everything is down" in out, out
    assert_clean(next(runs.glob("*-up-*")), set())


def test_clean_after_ctrl_c_of_up(tmp_path: Path) -> None:
    before = temp_dirs()
    runs = tmp_path / "runs"
    proc = subprocess.Popen([sys.executable, "-m", "eeh_sriov", "--runs", str(runs),
                             "--accel", "tcg", "up", "--command", "sleep 600"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        lines.append(line)
        if "Ctrl-C takes everything down" in line or time.monotonic() > deadline:
            break
    run_dirs = list(runs.glob("*-up-*"))
    assert run_dirs and qemu_pids(str(run_dirs[0])), "".join(lines)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + out
    assert "everything is down" in out
    assert_clean(run_dirs[0], before)
