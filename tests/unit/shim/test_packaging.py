"""What `pip install .` gives: the `eeh-sriov` command and the pytest plugin resolve."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def load(ref: str) -> object:
    module, _, attr = ref.partition(":")
    obj: object = importlib.import_module(module)
    return getattr(obj, attr) if attr else obj


def test_console_script_and_pytest_plugin_resolve() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = load(project["scripts"]["eeh-sriov"])
    assert callable(main)
    plugin = load(project["entry-points"]["pytest11"]["eeh_sriov"])
    for fixture in ("eeh_topology", "eeh_system", "eeh_console", "eeh_timeline"):
        assert hasattr(plugin, fixture), fixture


def test_every_package_and_the_topologies_are_shipped() -> None:
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    include = tool["packages"]["find"]["include"]
    for pkg in ("device_model", "eeh_abi", "eeh_sriov", "guest_drivers", "hypervisor_shim",
                "qemu_launcher", "vfio_user"):
        assert f"{pkg}*" in include and (ROOT / pkg / "__init__.py").exists(), pkg
    assert "topologies/*.toml" in tool["package-data"]["eeh_sriov"]
