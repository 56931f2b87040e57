"""Unit tests of the VM layer's pure parts: argv, initramfs pieces, console markers."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import io
import json
from pathlib import Path

import pytest
from qemu.qmp.message import Message

from qemu_launcher.assets import GuestAssets, QemuBinary, _module_closure
from qemu_launcher.config import MachineConfig, RunPaths, VfioUserDevice, build_command
from qemu_launcher.cpio import CpioWriter
from qemu_launcher.errors import (
    AssetError,
    GuestError,
    QemuExited,
    StateError,
    UnplugRefused,
    VmError,
)
from qemu_launcher.machine import UNPLUG_FIX, ConsoleWatcher, Machine, MachineState
from qemu_launcher.state import require


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
    assert _after(argv, "-cpu") == ["qemu64,+rdrand"]  # the kernel's RNG ready at boot
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


class _RunningQemu:
    """Stands in for QEMU's process: running until the test says otherwise."""

    def __init__(self) -> None:
        self.returncode: int | None = None
        self.exited = asyncio.Event()

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode


def _running_machine(tmp_path: Path, fixes: tuple[str, ...] = (UNPLUG_FIX,)) -> Machine:
    a = _assets(tmp_path)
    a = dataclasses.replace(a, qemu=dataclasses.replace(a.qemu, fixes=fixes))
    vm = Machine(MachineConfig(), a, run_dir=tmp_path / "run", repo=tmp_path)
    vm.proc = _RunningQemu()  # type: ignore[assignment]
    vm.state = MachineState.RUNNING
    return vm


def _event(name: str, **data: object) -> Message:
    return Message({"event": name, "data": data,
                    "timestamp": {"seconds": 0, "microseconds": 0}})


def test_unplug_of_msix_function_needs_the_qemu_fix(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="vf2", socket=tmp_path / "vf2.sock", root_port="rp3")
    sent: list[tuple[str, object]] = []

    def machine(fixes: tuple[str, ...]) -> Machine:
        vm = _running_machine(tmp_path, fixes)

        async def execute(cmd: str, args: object = None) -> object:
            sent.append((cmd, args))
            # QEMU reports a child object first, then the device itself
            await vm.qmp_client._event_dispatch(
                _event("DEVICE_DELETED", path="/machine/peripheral/vf2/virtio-backend"))
            await vm.qmp_client._event_dispatch(
                _event("DEVICE_DELETED", device="vf2", path="/machine/peripheral/vf2"))
            return {}

        vm._execute = execute  # type: ignore[method-assign]
        return vm

    with pytest.raises(UnplugRefused, match="vfio_user_msix_teardown"):
        asyncio.run(machine(()).unplug(dev))
    assert sent == []  # refused before anything reached QEMU
    asyncio.run(machine((UNPLUG_FIX,)).unplug(dev))
    assert sent == [("device_del", {"id": "vf2"})]
    # a function without MSI-X is removable on any QEMU
    asyncio.run(machine(()).unplug(dataclasses.replace(dev, msix=False)))
    assert len(sent) == 2


def test_unplug_waits_for_its_own_device_deleted_event(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="vf2", socket=tmp_path / "vf2.sock", root_port="rp3")
    vm = _running_machine(tmp_path)

    async def execute(cmd: str, args: object = None) -> object:
        return {}  # accepted, but the guest has not released the device yet

    vm._execute = execute  # type: ignore[method-assign]

    async def go() -> None:
        task = asyncio.ensure_future(vm.unplug(dev, timeout=5))
        await asyncio.sleep(0.05)
        # another device's removal, and an event of another kind, do not end the wait
        await vm.qmp_client._event_dispatch(_event("DEVICE_DELETED", device="vf1"))
        await vm.qmp_client._event_dispatch(_event("RESET", guest=True))
        await asyncio.sleep(0.05)
        assert not task.done()
        await vm.qmp_client._event_dispatch(_event("DEVICE_DELETED", device="vf2"))
        await asyncio.wait_for(task, 1)

    asyncio.run(go())


def test_unplug_reports_a_qemu_that_dies_or_a_device_that_stays(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="vf2", socket=tmp_path / "vf2.sock", root_port="rp3")

    async def accept(cmd: str, args: object = None) -> object:
        return {}

    vm = _running_machine(tmp_path)
    vm._execute = accept  # type: ignore[method-assign]

    async def qemu_aborts() -> None:
        task = asyncio.ensure_future(vm.unplug(dev, timeout=5))
        await asyncio.sleep(0.05)
        proc = vm.proc
        assert isinstance(proc, _RunningQemu)
        proc.returncode = -6  # SIGABRT, as the unfixed teardown does
        proc.exited.set()
        await task

    with pytest.raises(QemuExited, match="while removing vf2") as info:
        asyncio.run(qemu_aborts())
    assert info.value.returncode == -6

    vm = _running_machine(tmp_path)
    vm._execute = accept  # type: ignore[method-assign]
    with pytest.raises(GuestError, match=r"vf2 not removed in 0\.1 s"):
        asyncio.run(vm.unplug(dev, timeout=0.1))


def test_machine_methods_need_a_running_machine(tmp_path: Path) -> None:
    dev = VfioUserDevice(id="vf2", socket=tmp_path / "vf2.sock", root_port="rp3")
    vm = Machine(MachineConfig(), _assets(tmp_path), run_dir=tmp_path / "run", repo=tmp_path)
    assert vm.state is MachineState.CREATED
    assert not vm.paths.sock_dir.exists()  # named (the command line has it), not created
    assert str(vm.paths.sock_dir / "qmp.sock") in vm.show_command()
    calls = [vm.execute("query-status"), vm.hotplug(dev), vm.unplug(dev), vm.wait_exit(1)]
    for call in calls:
        with pytest.raises(StateError) as info:
            asyncio.run(call)
        assert info.value.state is MachineState.CREATED
        assert info.value.required == (MachineState.RUNNING,)
        assert isinstance(info.value, VmError)
    assert "Machine: hotplug needs state RUNNING, but the state is CREATED" in str(
        StateError("Machine", "hotplug", MachineState.CREATED, (MachineState.RUNNING,)))
    vm.state = MachineState.STOPPED  # a machine is entered once
    with pytest.raises(StateError, match="__aenter__ needs state CREATED"):
        asyncio.run(vm.__aenter__())


def test_require_guards_plain_and_async_methods() -> None:
    class Light(enum.Enum):
        OFF = 0
        ON = 1

    class Lamp:
        def __init__(self) -> None:
            self.state = Light.OFF

        @require(Light.ON)
        def shine(self, how: str) -> str:
            return how

        @require(Light.ON, Light.OFF)
        async def look(self) -> Light:
            return self.state

    lamp = Lamp()
    with pytest.raises(StateError, match="Lamp: shine needs state ON, but the state is OFF"):
        lamp.shine("bright")
    assert asyncio.run(lamp.look()) is Light.OFF
    lamp.state = Light.ON
    assert lamp.shine("bright") == "bright"
    assert Lamp.shine.__name__ == "shine"
