"""Unit tests of the VM layer's pure parts: argv, initramfs pieces, console markers."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import shutil
from pathlib import Path

import pytest

from hypervisor_shim.vm.assets import GuestAssets, QemuBinary, _module_closure
from hypervisor_shim.vm.config import MachineConfig, RunPaths, VfioUserDevice, build_command
from hypervisor_shim.vm.cpio import CpioWriter
from hypervisor_shim.vm.errors import AssetError, UnplugRefused
from hypervisor_shim.vm.machine import UNPLUG_FIX, ConsoleWatcher, Machine


def _assets(tmp: Path) -> GuestAssets:
    q = QemuBinary(("/usr/bin/qemu-system-x86_64",), (("QEMU_MODULE_DIR", "/m"),), "11.1.3",
                   "host")
    return GuestAssets(rootfs=tmp / "root", kernel=tmp / "vmlinuz", initramfs=tmp / "i.cpio",
                       qemu=q)


def _paths(tmp: Path) -> RunPaths:
    return RunPaths(run_dir=tmp / "run", sock_dir=tmp / "s", repo=tmp / "repo")


def _after(argv: tuple[str, ...], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_command_line_has_shared_memfd_shares_and_console(tmp_path: Path) -> None:
    cfg = MachineConfig(name="g1", memory_mib=768, accel="tcg", kernel_args=("foo=1",))
    cl = build_command(cfg, _assets(tmp_path), _paths(tmp_path))
    argv = cl.argv
    assert argv[0] == "/usr/bin/qemu-system-x86_64"
    assert "memory-backend-memfd,id=mem,size=768M,share=on" in _after(argv, "-object")
    assert _after(argv, "-machine") == ["q35,memory-backend=mem"]
    assert _after(argv, "-accel") == ["tcg"]
    fsdevs = _after(argv, "-fsdev")
    assert any(f"path={tmp_path / 'root'}" in f and "readonly=on" in f for f in fsdevs)
    assert any(f"path={tmp_path / 'repo'}" in f and "readonly=on" in f for f in fsdevs)
    results = [f for f in fsdevs if f"path={tmp_path / 'run' / 'results'}" in f]
    assert results and "readonly" not in results[0]
    assert "foo=1" in _after(argv, "-append")[0]
    assert f"file,id=console0,path={tmp_path / 'run' / 'console.log'}" in _after(argv, "-chardev")
    assert dict(cl.env) == {"QEMU_MODULE_DIR": "/m"}


def test_vfio_user_devices_sit_on_their_root_ports(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="pf0", socket=tmp_path / "pf0.sock", root_port="rp0")
    cfg = MachineConfig(root_ports=2, vfio_user=(dev,))
    devices = _after(build_command(cfg, _assets(tmp_path), _paths(tmp_path)).argv, "-device")
    assert "pcie-root-port,id=rp0,chassis=1,slot=1" in devices
    assert "pcie-root-port,id=rp1,chassis=2,slot=2" in devices
    js = [json.loads(d) for d in devices if d.startswith("{")]
    assert js == [{"driver": "vfio-user-pci", "id": "pf0", "bus": "rp0",
                   "socket": {"type": "unix", "path": str(tmp_path / "pf0.sock")}}]


def _parse_cpio(data: bytes) -> dict[str, tuple[int, bytes]]:
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = (name_start + namesize + 3) & ~3
        out[name] = (mode, data[body:body + size])
        pos = (body + size + 3) & ~3
        if name == "TRAILER!!!":
            return out


def test_cpio_round_trip() -> None:
    buf = io.BytesIO()
    w = CpioWriter(buf)
    w.directory("bin")
    w.file("bin/x", b"hello", 0o755)
    w.symlink("bin/sh", "x")
    w.close()
    entries = _parse_cpio(buf.getvalue())
    assert entries["bin/x"] == (0o100755, b"hello")
    assert entries["bin/sh"][1] == b"x"
    assert entries["bin"][0] == 0o40755
    assert len(buf.getvalue()) % 4 == 0


def test_module_closure_orders_dependencies_first(tmp_path: Path) -> None:
    d = tmp_path / "lib/modules/6.1"
    d.mkdir(parents=True)
    (d / "modules.dep").write_text(
        "kernel/fs/netfs/netfs.ko.xz:\n"
        "kernel/net/9p/9pnet.ko.xz: kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/net/9p/9pnet_virtio.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n"
        "kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz\n")
    order = [Path(m).name for m in _module_closure(tmp_path, "6.1", ("9pnet_virtio", "9p"))]
    assert order == ["netfs.ko.xz", "9pnet.ko.xz", "9pnet_virtio.ko.xz", "9p.ko.xz"]
    with pytest.raises(AssetError):
        _module_closure(tmp_path, "6.1", ("nope",))


def test_console_watcher_finds_markers_across_partial_writes(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    w = ConsoleWatcher(log)
    w.poll()  # file not there yet: no error
    log.write_bytes(b"booting\nEEH-GUEST-REA")
    w.poll()
    assert "EEH-GUEST-READY" not in w.marks
    with open(log, "ab") as f:
        f.write(b"DY uptime=4.2\nEEH-GUEST-EXIT 7\n")
    w.poll()
    assert w.marks["EEH-GUEST-READY"][1] == "uptime=4.2"
    assert w.marks["EEH-GUEST-EXIT"][1] == "7"
    assert w.tail(2) == ["EEH-GUEST-READY uptime=4.2", "EEH-GUEST-EXIT 7"]


def test_unplug_of_msix_function_needs_the_qemu_fix(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="vf2", socket=tmp_path / "vf2.sock", root_port="rp3")
    sent: list[tuple[str, object]] = []

    def machine(fixes: tuple[str, ...]) -> Machine:
        a = _assets(tmp_path)
        a = dataclasses.replace(a, qemu=dataclasses.replace(a.qemu, fixes=fixes))
        vm = Machine(MachineConfig(), a, run_dir=tmp_path / "run", repo=tmp_path)
        shutil.rmtree(vm.paths.sock_dir)

        async def execute(cmd: str, args: object = None) -> object:
            sent.append((cmd, args))
            vm._deleted.add("vf2")  # as the DEVICE_DELETED event would
            return {}

        vm.execute = execute  # type: ignore[method-assign]
        return vm

    with pytest.raises(UnplugRefused, match="vfio_user_msix_teardown"):
        asyncio.run(machine(()).unplug(dev))
    assert sent == []  # refused before anything reached QEMU
    asyncio.run(machine((UNPLUG_FIX,)).unplug(dev))
    assert sent == [("device_del", {"id": "vf2"})]
    # a function without MSI-X is removable on any QEMU
    asyncio.run(machine(()).unplug(dataclasses.replace(dev, msix=False)))
    assert len(sent) == 2
