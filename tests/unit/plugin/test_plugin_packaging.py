"""`pip install .` builds out of the tree: nothing is left in the checkout (a `build/`
or `*.egg-info` there made `-p eeh_sriov.pytest_plugin` fail with "Plugin already
registered under a different name"), and the wheel has every package and data file."""

from __future__ import annotations

import zipfile
from pathlib import Path

from tests.support.checkout_copy import build_wheel, copy_checkout, tracked_files

PACKAGES = ("device_model", "eeh_abi", "eeh_sriov", "guest_drivers", "hypervisor_shim",
            "qemu_launcher", "qmp_server", "vfio_user")


def test_building_the_package_leaves_the_checkout_as_it_was(tmp_path: Path) -> None:
    src = copy_checkout(tmp_path / "src")
    before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    wheel = build_wheel(src, tmp_path / "dist")
    after = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    assert [p for p in after if p not in before] == []  # no build/, no *.egg-info
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names, pkg
    shipped = set(tracked_files() or [])
    for rel in ("eeh_sriov/topologies/default.toml", "eeh_sriov/pytest_plugin.py",
                "eeh_sriov/plugin/settings.py"):
        assert rel in names, rel
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "qemu/"))]
    typed = [f"{p}/py.typed" for p in PACKAGES if f"{p}/py.typed" in shipped]
    assert all(t in names for t in typed), typed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[pytest11]" in text and "eeh_sriov = eeh_sriov.pytest_plugin" in text
