"""The uncompressed kernel for a PVH boot (qemu_launcher.pvh): the bzImage payload
it finds, the ELF note it requires, the command line that uses it (TCG only), and (when
the root fs is built) a real kernel decompressed by the root fs's python3 + libzstd."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import pytest

from qemu_launcher.assets import COMPLETE, AssetConfig, GuestAssets, QemuBinary, find_kernel
from qemu_launcher.config import MachineConfig, RunPaths, build_command
from qemu_launcher.pvh import ZSTD_MAGIC, ensure_pvh_kernel, has_pvh_entry, zstd_payload


def _bzimage(payload: bytes, setup_sects: int = 2, version: int = 0x20F,
             offset: int = 16) -> bytes:
    head = bytearray((setup_sects + 1) * 512)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", head, 0x206, version)
    struct.pack_into("<II", head, 0x248, offset, len(payload))
    return bytes(head) + b"\0" * offset + payload + b"tail"


def test_zstd_payload_is_found_from_the_setup_header() -> None:
    frame = ZSTD_MAGIC + b"compressed"
    data = _bzimage(frame + struct.pack("<I", 57_000_000))
    start, end, size = zstd_payload(data) or (0, 0, 0)
    assert data[start:end] == frame and size == 57_000_000


def test_no_payload_for_old_protocols_other_compressions_or_no_header() -> None:
    frame = ZSTD_MAGIC + b"x" * 8
    assert zstd_payload(_bzimage(frame, version=0x207)) is None
    assert zstd_payload(_bzimage(b"\x1f\x8b" + b"x" * 10)) is None  # gzip
    assert zstd_payload(b"\0" * 4096) is None


def _elf(notes: list[tuple[bytes, int]]) -> bytes:
    body = b""
    for name, ntype in notes:
        n = name + b"\0"
        body += struct.pack("<III", len(n), 4, ntype) + n.ljust((len(n) + 3) // 4 * 4, b"\0")
        body += b"\0" * 4
    phoff, phentsize = 64, 56
    note_off = phoff + phentsize
    ehdr = bytearray(64)
    ehdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", ehdr, 0x20, phoff)
    struct.pack_into("<HH", ehdr, 0x36, phentsize, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, note_off, 0, 0, len(body), len(body), 4)
    return bytes(ehdr) + phdr + body


def test_pvh_entry_note_is_required() -> None:
    assert has_pvh_entry(_elf([(b"GNU", 3), (b"Xen", 18)]))
    assert not has_pvh_entry(_elf([(b"Xen", 6), (b"GNU", 18)]))
    assert not has_pvh_entry(_elf([(b"Xen", 18)])[:100])  # truncated
    assert not has_pvh_entry(b"MZ" + b"\0" * 200)


def test_pvh_kernel_is_booted_under_tcg_only(tmp_path: Path) -> None:
    q = QemuBinary(("qemu",), (), "11.1.3", "host")
    assets = GuestAssets(rootfs=tmp_path, kernel=tmp_path / "vmlinuz",
                         initramfs=tmp_path / "i.cpio", qemu=q, pvh_kernel=tmp_path / "vmlinux")
    paths = RunPaths(run_dir=tmp_path / "run", sock_dir=tmp_path / "s", repo=tmp_path)

    def kernel(cfg: MachineConfig, a: GuestAssets) -> str:
        argv = build_command(cfg, a, paths).argv
        return argv[argv.index("-kernel") + 1]

    assert kernel(MachineConfig(accel="tcg"), assets) == str(tmp_path / "vmlinux")
    assert kernel(MachineConfig(accel="kvm"), assets) == str(tmp_path / "vmlinuz")
    none = dataclasses.replace(assets, pvh_kernel=None)
    assert kernel(MachineConfig(accel="tcg"), none) == str(tmp_path / "vmlinuz")


@pytest.mark.vm  # needs the built root fs: runs with the VM tests, after make rootfs
def test_real_kernel_is_decompressed_once(tmp_path: Path) -> None:
    rootfs = AssetConfig.from_env().rootfs_dir
    if not (rootfs / COMPLETE).exists():
        pytest.fail("the root fs is not built here (make rootfs)", pytrace=False)
    path, why = ensure_pvh_kernel(find_kernel(rootfs), rootfs, tmp_path)
    assert path is not None, why
    assert has_pvh_entry(path.read_bytes())
    mtime = path.stat().st_mtime_ns
    assert ensure_pvh_kernel(find_kernel(rootfs), rootfs, tmp_path) == (path, "")
    assert path.stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left
