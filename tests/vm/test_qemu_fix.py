"""The binary fix on the real Debian QEMU: it replaces the call it claims to replace."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hypervisor_shim.vm.assets import GuestAssets
from hypervisor_shim.vm.qemu_fixes import VFIO_USER_MSIX_TEARDOWN, sha256_of


def _symbol(binary: Path, name: str) -> int:
    out = subprocess.run(["nm", "-D", "--defined-only", str(binary)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not exported by {binary}")


def test_fix_targets_memory_region_del_subregion(assets: GuestAssets) -> None:
    original = assets.rootfs / "usr/bin/qemu-system-x86_64"
    fix = VFIO_USER_MSIX_TEARDOWN
    if sha256_of(original) != fix.binary_sha256:
        pytest.skip("the root fs carries a QEMU build this fix does not know")
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) not installed")
    data = original.read_bytes()
    assert data[fix.offset:fix.offset + 5] == fix.original
    rel = int.from_bytes(fix.original[1:], "little", signed=True)
    # .text is mapped at its file offset in this binary, so offsets are addresses
    assert fix.offset + 5 + rel == _symbol(original, "memory_region_del_subregion")
    # the copy the launcher runs differs from the original in exactly those 5 bytes
    assert fix.name in assets.qemu.fixes
    fixed = Path(next(a for a in assets.qemu.argv if a.endswith("-fixed"))).read_bytes()
    end = fix.offset + len(fix.original)
    assert len(fixed) == len(data)
    assert fixed[:fix.offset] == data[:fix.offset] and fixed[end:] == data[end:]
    assert fixed[fix.offset:end] == fix.replacement
