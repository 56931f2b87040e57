"""The zygote's initramfs payload (qemu_launcher.preload, assets.ensure_initramfs): what
goes in, the checkout's copies with their checks, and an initramfs that stays the same
file while nothing changes (its mtime is part of saved states' key)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from qemu_launcher.assets import COMPLETE, AssetConfig, ensure_initramfs
from qemu_launcher.bytecode import compile_guest_bytecode
from qemu_launcher.preload import ZYGOTE_DIR, directories, zygote_payload


def test_directories_come_parents_first() -> None:
    assert directories(["usr/lib/a/b.py", "usr/bin/python3", "lib64/ld.so"]) == [
        "lib64", "usr", "usr/bin", "usr/lib", "usr/lib/a"]


def test_no_root_fs_means_no_payload(tmp_path: Path) -> None:
    p = zygote_payload(tmp_path, tmp_path, ("json",))
    assert not p.ok and "no python3" in p.detail


def _rootfs() -> Path:
    rootfs = AssetConfig.from_env().rootfs_dir
    if not (rootfs / COMPLETE).exists():
        pytest.fail("the root fs is not built here (make rootfs)", pytrace=False)
    return rootfs


def _entries(cpio: bytes) -> dict[str, bytes]:
    """name -> data of a newc archive."""
    out: dict[str, bytes] = {}
    pos = 0
    while True:
        head = cpio[pos:pos + 110]
        size, namesize = int(head[54:62], 16), int(head[94:102], 16)
        name = cpio[pos + 110:pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = cpio[pos:pos + size]
        pos = (pos + size + 3) & ~3


@pytest.mark.vm  # needs the built root fs
def test_the_payload_has_the_interpreter_its_libraries_and_the_checkout_copies(
        tmp_path: Path) -> None:
    rootfs = _rootfs()
    repo = tmp_path / "repo"
    (repo / "demo_pkg").mkdir(parents=True)
    (repo / "demo_pkg" / "__init__.py").write_text("import dataclasses, json\n")
    assert compile_guest_bytecode(rootfs, repo, ("demo_pkg",)).ok
    p = zygote_payload(rootfs, repo, ("demo_pkg", "no_such_module"))
    assert p.ok, p.detail
    files = dict(p.files)
    assert {"lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libc.so.6",
            "usr/lib/python3.13/dataclasses.py"} <= files.keys()
    assert any(g.startswith("usr/lib/python3.13/__pycache__/dataclasses.") for g in files)
    assert ("usr/bin/python3", "python3.13") in p.links
    assert {"demo_pkg", "json", "dataclasses", "runpy"} <= set(p.modules)
    assert any(e.startswith("no_such_module: ModuleNotFoundError") for e in p.errors)
    # the checkout's module: copied to where guests mount it, and checked after the go
    assert files["mnt/repo/demo_pkg/__init__.py"] == repo / "demo_pkg" / "__init__.py"
    st = (repo / "demo_pkg" / "__init__.py").stat()
    assert p.checks == (("/mnt/repo/demo_pkg/__init__.py", st.st_size, st.st_mtime_ns),)
    listing = json.loads(p.listing())
    assert listing["path"] == ["/mnt/repo"] and "demo_pkg" in listing["modules"]
    assert p.digest() == zygote_payload(rootfs, repo, ("demo_pkg", "no_such_module")).digest()


@pytest.mark.vm  # needs the built root fs
def test_the_initramfs_carries_the_zygote_only_for_staged_boots(tmp_path: Path) -> None:
    rootfs = _rootfs()
    cfg = dataclasses.replace(AssetConfig.from_env(guest_preload=("json",)),
                              cache_dir=tmp_path / "cache")
    cfg.cache_dir.mkdir()
    log = io.StringIO()
    path = ensure_initramfs(cfg, rootfs, log)
    entries = _entries(path.read_bytes())
    assert f"{ZYGOTE_DIR}/zygote.py" in entries and "usr/bin/python3.13" in entries
    assert "json" in json.loads(entries[f"{ZYGOTE_DIR}/preload"])["modules"]
    # the same file again while nothing changed: not rebuilt, not touched
    mtime = path.stat().st_mtime_ns
    assert ensure_initramfs(cfg, rootfs, log) == path
    assert path.stat().st_mtime_ns == mtime
    for off in (dataclasses.replace(cfg, boot="cold"), dataclasses.replace(cfg, zygote=False)):
        plain = ensure_initramfs(off, rootfs, log)
        names = _entries(plain.read_bytes())
        assert "init" in names and not any(n.startswith("usr/") for n in names)
