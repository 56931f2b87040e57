"""Guest bytecode compiled on the host by the root fs's python3 (qemu_launcher.bytecode):
the interpreter it picks, graceful failure, and (when the root fs is built) real .pyc
files with the guest's paths that the guest's python3 accepts for the sources."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qemu_launcher.assets import COMPLETE, AssetConfig
from qemu_launcher.bytecode import GUEST_REPO, compile_guest_bytecode
from qemu_launcher.rootfs_python import guest_python


def test_guest_python_is_the_highest_python3_minor(tmp_path: Path) -> None:
    bin_dir = tmp_path / "usr/bin"
    bin_dir.mkdir(parents=True)
    for name in ("python3", "python3.9", "python3.13", "python3.13-config", "python3.11"):
        (bin_dir / name).touch()
    found = guest_python(tmp_path)
    assert found is not None and found.name == "python3.13"
    assert guest_python(tmp_path / "nothing") is None


def test_no_interpreter_is_not_an_error(tmp_path: Path) -> None:
    r = compile_guest_bytecode(tmp_path, tmp_path, ("eeh_abi",))
    assert not r.ok and r.python == "" and "no python3" in r.detail


@pytest.mark.vm  # needs the built root fs: runs with the VM tests, after make rootfs
def test_compiles_a_package_for_the_guest(tmp_path: Path) -> None:
    rootfs = AssetConfig.from_env().rootfs_dir
    if not (rootfs / COMPLETE).exists():
        pytest.fail("the root fs is not built here (make rootfs)", pytrace=False)
    repo = tmp_path / "repo"
    pkg = repo / "demo_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("def where():\n    return __file__\n")
    r = compile_guest_bytecode(rootfs, repo, packages=("demo_pkg",))
    assert r.ok, r.detail
    pycs = sorted(p.name for p in (pkg / "__pycache__").iterdir())
    tag = r.python.replace("python", "cpython-").replace(".", "")
    assert pycs == [f"__init__.{tag}.pyc", f"mod.{tag}.pyc"]
    # the code objects carry the guest's path (tracebacks in a guest name /mnt/repo/...)
    python = guest_python(rootfs)
    assert python is not None
    loader = rootfs / "lib64/ld-linux-x86-64.so.2"
    libs = f"{rootfs}/lib/x86_64-linux-gnu:{rootfs}/usr/lib/x86_64-linux-gnu"
    code = ("import marshal, sys; f = open(sys.argv[1], 'rb'); f.read(16); "
            "print(marshal.load(f).co_filename)")
    out = subprocess.run([str(loader), "--library-path", libs, str(python), "-c", code,
                          str(pkg / "__pycache__" / f"mod.{tag}.pyc")],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"{GUEST_REPO}/demo_pkg/mod.py", out
    # up to date: a second run rewrites nothing
    before = (pkg / "__pycache__" / f"mod.{tag}.pyc").stat().st_mtime_ns
    assert compile_guest_bytecode(rootfs, repo, packages=("demo_pkg",)).ok
    assert (pkg / "__pycache__" / f"mod.{tag}.pyc").stat().st_mtime_ns == before
    shutil.rmtree(pkg / "__pycache__")
