"""guest_drivers.platform.sysfs on a fake sysfs tree (no guest, no root needed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from guest_drivers.platform import sysfs
from guest_drivers.platform.errors import AccessError, DeviceNotFound, PlatformError


def _function(root: Path, address: str, vendor: int, device: int) -> None:
    d = root / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(f"0x{vendor:04x}\n")
    (d / "device").write_text(f"0x{device:04x}\n")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    _function(tmp_path, "0000:00:01.0", 0x8086, 0x29C0)
    _function(tmp_path, "0000:01:00.0", 0x1B36, 0x10EE)  # PF
    _function(tmp_path, "0000:02:00.0", 0x1B36, 0x10EF)  # a VF, hot-removed below
    _function(tmp_path, "0000:03:00.0", 0x1B36, 0x10EF)  # another VF
    return tmp_path


def test_functions_filters_by_ids_in_bus_order(tree: Path) -> None:
    assert [f.address for f in sysfs.functions(0x1B36, root=tree)] == [
        "0000:01:00.0", "0000:02:00.0", "0000:03:00.0"]
    assert [f.address for f in sysfs.functions(0x1B36, 0x10EF, root=tree)] == [
        "0000:02:00.0", "0000:03:00.0"]
    assert sysfs.find_one(0x1B36, 0x10EE, root=tree).address == "0000:01:00.0"


def test_a_function_removed_during_the_scan_is_skipped(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_listdir = os.listdir

    def listdir_then_hot_remove(path: str | os.PathLike[str]) -> list[str]:
        names = real_listdir(path)
        shutil.rmtree(tree / "0000:02:00.0")  # gone between the listing and its vendor read
        return names

    monkeypatch.setattr(os, "listdir", listdir_then_hot_remove)
    found = [f.address for f in sysfs.functions(0x1B36, 0x10EF, root=tree)]
    assert found == ["0000:03:00.0"]  # the scan went on past the vanished function


def test_other_read_failures_are_not_mistaken_for_removal(tree: Path) -> None:
    vendor = tree / "0000:01:00.0" / "vendor"
    vendor.unlink()
    vendor.mkdir()  # reading it fails with EISDIR: the function is there but unreadable
    with pytest.raises(AccessError) as info:
        list(sysfs.functions(0x1B36, root=tree))
    assert info.value.op == "read" and info.value.path == str(vendor)


def test_device_not_found_is_a_lookup_error(tree: Path) -> None:
    with pytest.raises(LookupError) as info:
        sysfs.find_one(0x1B36, 0x1234, root=tree)
    assert isinstance(info.value, DeviceNotFound)
    assert isinstance(info.value, PlatformError)
    assert info.value.what == "1b36:1234"
    assert not issubclass(AccessError, OSError)  # why functions() must catch AccessError
