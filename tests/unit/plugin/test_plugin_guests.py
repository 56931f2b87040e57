"""What the plugin gives each guest (a share of the test's directory, EEH_GUEST and the
command's environment) and how a wait for the drivers ends when a guest is gone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hypervisor_shim.readiness import DriversNotReady, guests_gone, wait_drivers_ready
from hypervisor_shim.timeline import Timeline
from qemu_launcher.assets import GuestAssets, QemuBinary
from qemu_launcher.config import (
    EXIT_MARKER,
    READY_MARKER,
    SHARES_ARG,
    ConfigError,
    MachineConfig,
    RunPaths,
    Share,
    build_command,
)
from qemu_launcher.machine import Machine


def _assets(tmp: Path) -> GuestAssets:
    q = QemuBinary(("/usr/bin/qemu-system-x86_64",), (), "11.1.3", "host")
    return GuestAssets(rootfs=tmp / "root", kernel=tmp / "vmlinuz", initramfs=tmp / "i.cpio",
                       qemu=q)


def test_a_share_is_a_read_only_9p_device_named_to_the_initramfs(tmp_path: Path) -> None:
    test_dir = tmp_path / "my,tests"  # QEMU's option syntax doubles a comma
    test_dir.mkdir()
    cfg = MachineConfig(name="g1", shares=(Share("test", test_dir),))
    argv = build_command(cfg, _assets(tmp_path), RunPaths(tmp_path / "run", tmp_path / "s",
                                                          tmp_path / "repo")).argv
    fsdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-fsdev"]
    assert f"local,id=fs3,path={tmp_path}/my,,tests,security_model=none,readonly=on" in fsdevs
    assert "virtio-9p-pci,fsdev=fs3,mount_tag=test" in argv
    assert f" {SHARES_ARG}=test" in argv[argv.index("-append") + 1]
    plain = build_command(MachineConfig(), _assets(tmp_path),
                          RunPaths(tmp_path / "run", tmp_path / "s", tmp_path / "repo")).argv
    assert SHARES_ARG not in plain[plain.index("-append") + 1]  # as before without shares


@pytest.mark.parametrize("tag", ["repo", "results", "root", "Test", "a b", "x" * 17, ""])
def test_a_share_tag_the_guest_cannot_use_is_refused(tmp_path: Path, tag: str) -> None:
    with pytest.raises(ConfigError, match="share tag"):
        Share(tag, tmp_path)


def test_a_share_of_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        Share("test", tmp_path / "absent")


def test_the_guest_command_gets_its_guest_name_its_environment_and_directory() -> None:
    cfg = MachineConfig(name="g2", guest_env=(("PYTHONPATH", "/mnt/test:/mnt/repo"),
                                              ("NOTE", "it's $HOME")), guest_cwd="/mnt/test")
    assert cfg.guest_env_script() == (
        "export EEH_GUEST=g2\nexport PYTHONPATH=/mnt/test:/mnt/repo\n"
        "export NOTE='it'\"'\"'s $HOME'\ncd /mnt/test\n")
    assert MachineConfig(name="g1").guest_env_script() == "export EEH_GUEST=g1\ncd /mnt/repo\n"
    with pytest.raises(ConfigError, match="guest variable"):
        MachineConfig(guest_env=(("BAD-NAME", "x"),))
    with pytest.raises(ConfigError, match="absolute"):
        MachineConfig(guest_cwd="relative")


def _machine(tmp_path: Path, name: str) -> Machine:
    vm = Machine(MachineConfig(name=name), _assets(tmp_path), run_dir=tmp_path / name,
                 repo=tmp_path / "repo", command="python3 -m my_driver")
    vm.paths.run_dir.mkdir(parents=True)
    return vm


def test_a_guest_whose_command_exited_ends_the_wait_at_once_naming_it(tmp_path: Path) -> None:
    g1, g2 = _machine(tmp_path, "g1"), _machine(tmp_path, "g2")
    assert g1.gone() is None and g2.gone() is None  # nothing on their consoles yet
    lines = [f"boot line {i}" for i in range(30)]
    g2.paths.console_log.write_text("\n".join([
        *lines, f"{READY_MARKER} uptime=1.0", "No module named my_driver",
        f"{EXIT_MARKER} 1", ""]))
    assert g2.gone() == "its command exited with status 1"
    t0 = time.monotonic()
    with pytest.raises(DriversNotReady) as e:
        wait_drivers_ready(Timeline(), {"vf0", "vf1"}, timeout=60,
                           check=guests_gone({"g1": g1, "g2": g2}))
    assert time.monotonic() - t0 < 30  # hang guard: the check ends it, not the timeout
    err = e.value
    assert not err.timed_out and err.missing == ["vf0", "vf1"]
    assert "guest g2 is gone: its command exited with status 1" in err.reason
    assert str(g2.artifacts) in err.reason
    text = str(err)
    assert "No module named my_driver" in text and "boot line 13" in text
    assert "boot line 12" not in text  # the last 20 lines
    assert len(err.detail) == 21


def test_without_a_check_the_wait_runs_out_of_time(tmp_path: Path) -> None:
    with pytest.raises(DriversNotReady) as e:
        wait_drivers_ready(Timeline(), {"vf0"}, timeout=0.1)
    assert e.value.timed_out and e.value.reason == "not after 0.1 s"
