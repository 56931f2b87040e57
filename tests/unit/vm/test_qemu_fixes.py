"""Binary fixes: bound to one binary by hash, exact bytes checked, copy made atomically."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from hypervisor_shim.vm.assets import AssetConfig
from hypervisor_shim.vm.errors import AssetError
from hypervisor_shim.vm.qemu_fixes import (
    NOP5,
    VFIO_USER_MSIX_TEARDOWN,
    BinaryFix,
    apply_fixes,
    ensure_fixed,
)

CALL = bytes.fromhex("e811223344")


def _binary(tmp: Path, payload: bytes) -> tuple[Path, BinaryFix]:
    path = tmp / "qemu-system-x86_64"
    path.write_bytes(payload)
    fix = BinaryFix("demo-fix", "upstream", hashlib.sha256(payload).hexdigest(), 4, CALL, NOP5)
    return path, fix


def test_fix_replaces_exactly_its_bytes(tmp_path: Path) -> None:
    data = b"\x90" * 4 + CALL + b"\xc3" * 3
    path, fix = _binary(tmp_path, data)
    out = ensure_fixed(path, tmp_path / "fixed", (fix,))
    assert out.fixes == ("demo-fix",)
    assert out.path != path and out.path.read_bytes() == b"\x90" * 4 + NOP5 + b"\xc3" * 3
    assert path.read_bytes() == data  # the original is never touched
    assert out.path.stat().st_mode & 0o111
    assert not list((tmp_path / "fixed").glob("*.tmp-*"))
    # made once: a second call returns the same file
    assert ensure_fixed(path, tmp_path / "fixed", (fix,)) == out


def test_unknown_binary_is_used_as_it_is(tmp_path: Path) -> None:
    path, fix = _binary(tmp_path, b"\x90" * 4 + CALL)
    other = BinaryFix(fix.name, fix.upstream, "0" * 64, fix.offset, fix.original,
                      fix.replacement)
    out = ensure_fixed(path, tmp_path / "fixed", (other,))
    assert out.path == path and out.fixes == ()
    assert not (tmp_path / "fixed").exists()


def test_known_hash_but_wrong_bytes_is_an_error(tmp_path: Path) -> None:
    path, fix = _binary(tmp_path, b"\x90" * 4 + b"\xe8\x00\x00\x00\x00")
    with pytest.raises(AssetError, match="expected e811223344 at 0x4, found e800000000"):
        ensure_fixed(path, tmp_path / "fixed", (fix,))
    with pytest.raises(AssetError, match="end of file"):
        apply_fixes(b"\x90" * 2, (fix,))


def test_fix_must_keep_length() -> None:
    with pytest.raises(ValueError, match="changes the length"):
        BinaryFix("bad", "u", "0" * 64, 0, CALL, b"\x90")


def test_the_vfio_user_fix_replaces_a_call_with_a_nop() -> None:
    fix = VFIO_USER_MSIX_TEARDOWN
    assert fix.original[0] == 0xE8 and len(fix.original) == 5  # call rel32
    # the call's target is memory_region_del_subregion (0x88e2b0 in that binary)
    rel = int.from_bytes(fix.original[1:], "little", signed=True)
    assert fix.offset + 5 + rel == 0x88E2B0
    assert fix.replacement == NOP5


def test_declared_host_fixes_are_read_at_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EEH_QEMU_FIXES", "vfio-user-msix-teardown, other-fix")
    assert AssetConfig.from_env().host_qemu_fixes == ("vfio-user-msix-teardown", "other-fix")
    monkeypatch.delenv("EEH_QEMU_FIXES")
    assert AssetConfig.from_env().host_qemu_fixes == ()
