"""VmBackend.address_of resolves a guest's functions once for as long as neither the
functions it knows nor the PCI functions present change: the agent opens its functions
one by one, and each used to resolve all of them again, a sysfs scan each in a guest
without slots (hot-plugged functions): 9 scans for 8 VFs, ~1 s of a TCG guest's CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeh_abi import nic
from guest_drivers.platform.base import FunctionInfo
from guest_drivers.platform.errors import DeviceNotFound
from guest_drivers.platform.guest import VmBackend


def _pci(root: Path, address: str, vendor: int, device: int) -> Path:
    d = root / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(f"0x{vendor:04x}\n")
    (d / "device").write_text(f"0x{device:04x}\n")
    return d


def _backend(tmp: Path, infos: list[FunctionInfo]) -> VmBackend:
    backend = VmBackend.__new__(VmBackend)  # no channel needed for the mapping
    backend.slots, backend.pci, backend._known = tmp / "slots", tmp / "devices", infos
    return backend


def vfs(n: int) -> list[FunctionInfo]:
    return [FunctionInfo(name=f"vf{i}", kind="vf", vf=i, addr=0, pe=0) for i in range(n)]


def test_the_functions_are_resolved_once_not_once_each(tmp_path: Path) -> None:
    pci = tmp_path / "devices"
    decoy = _pci(pci, "0000:00:01.0", 0x1B36, 0x000C)  # a root port: not ours
    for bus in range(1, 9):
        _pci(pci, f"0000:{bus:02x}:00.0", nic.VENDOR_ID, nic.VF_DEVICE_ID)
    infos = vfs(8)
    backend = _backend(tmp_path, infos)
    assert backend.address_of(infos[0]) == "0000:01:00.0"
    # a scan now fails on the decoy (its IDs unreadable): only a resolution reads them
    (decoy / "vendor").unlink()
    (decoy / "vendor").mkdir()
    assert [backend.address_of(i) for i in infos] == [
        f"0000:{bus:02x}:00.0" for bus in range(1, 9)]


def test_a_function_that_appears_later_is_resolved(tmp_path: Path) -> None:
    pci = tmp_path / "devices"
    _pci(pci, "0000:01:00.0", nic.VENDOR_ID, nic.VF_DEVICE_ID)
    infos = vfs(2)
    backend = _backend(tmp_path, infos)
    assert backend.address_of(infos[0]) == "0000:01:00.0"
    with pytest.raises(DeviceNotFound):
        backend.address_of(infos[1])
    _pci(pci, "0000:02:00.0", nic.VENDOR_ID, nic.VF_DEVICE_ID)  # hot-plugged since
    assert backend.address_of(infos[1]) == "0000:02:00.0"
