"""The saved state's key (qemu_launcher.snapshot): what a restore may change and what not,
and a staged Machine's command line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from qemu_launcher.assets import GuestAssets, QemuBinary
from qemu_launcher.config import MachineConfig, RunPaths, VfioUserDevice, build_command
from qemu_launcher.machine import Machine
from qemu_launcher.snapshot import LAUNCH_PORT, SavedState, key, launch_args


def _assets(tmp: Path, snapshots: Path | None = None) -> GuestAssets:
    kernel = tmp / "vmlinuz"
    kernel.write_bytes(b"kernel")
    q = QemuBinary(("/usr/bin/qemu-system-x86_64",), (), "11.1.3", "host")
    return GuestAssets(rootfs=tmp / "root", kernel=kernel, initramfs=tmp / "i.cpio",
                       qemu=q, snapshots=snapshots)


def _key(cfg: MachineConfig, assets: GuestAssets, run: Path) -> str:
    paths = RunPaths(run_dir=run, sock_dir=run / "s", repo=Path("/repo"))
    cl = build_command(cfg, assets, paths)
    return key(cl.argv + launch_args(paths.launch_socket), cl.env)


def test_per_run_parts_do_not_change_the_key(tmp_path: Path) -> None:
    assets = _assets(tmp_path)
    a = MachineConfig(name="svc", extra_args=(
        "-chardev", "socket,id=hcall,path=/tmp/a.sock",
        "-netdev", "dgram,id=peer0,local.type=unix,local.path=/tmp/a.q"))
    b = dataclasses.replace(a, name="g1", extra_args=(
        "-chardev", "socket,id=hcall,path=/tmp/b.sock",
        "-netdev", "dgram,id=peer0,local.type=unix,local.path=/tmp/b.q"),
        guest_env=(("X", "1"),))
    # other run directories: console, results share, sockets
    assert _key(a, assets, tmp_path / "r1") == _key(b, assets, tmp_path / "r2")


def test_what_the_guest_sees_changes_the_key(tmp_path: Path) -> None:
    assets = _assets(tmp_path)
    base = MachineConfig(name="g", root_ports=2)
    k = _key(base, assets, tmp_path / "r")
    for changed in (dataclasses.replace(base, memory_mib=768),
                    dataclasses.replace(base, root_ports=3),
                    dataclasses.replace(base, kernel_args=("x=1",)),
                    dataclasses.replace(base, extra_args=("-chardev", "socket,id=other"))):
        assert _key(changed, assets, tmp_path / "r") != k, changed
    # the same kernel's path with other contents (a rebuilt file)
    assets.kernel.write_bytes(b"another kernel")
    assert _key(base, assets, tmp_path / "r") != k


def test_a_staged_machine_hot_plugs_its_functions_and_has_the_launch_port(
        tmp_path: Path) -> None:
    dev = VfioUserDevice("vf0", tmp_path / "vf0.sock", "rp0")
    cfg = MachineConfig(name="g", root_ports=2, vfio_user=(dev,))
    cold = Machine(cfg, _assets(tmp_path), run_dir=tmp_path / "a", repo=tmp_path)
    staged = Machine(cfg, _assets(tmp_path, tmp_path / "saved"), run_dir=tmp_path / "b",
                     repo=tmp_path)
    assert any('"vfio-user-pci"' in a for a in cold.cmdline.argv)
    assert cold.saved is None and f"name={LAUNCH_PORT}" not in " ".join(cold.cmdline.argv)
    assert not any('"vfio-user-pci"' in a for a in staged.cmdline.argv)
    assert f"name={LAUNCH_PORT}" in " ".join(staged.cmdline.argv)
    assert "vmgenid" in staged.cmdline.argv
    assert isinstance(staged.saved, SavedState)
    assert staged.saved.path.parent == tmp_path / "saved"
    # what a user runs by hand (`vm --show-command`): nothing waits for a go
    shown = staged.show_command()
    assert LAUNCH_PORT not in shown and "vfio-user-pci" in shown
