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


def test_every_package_is_shipped() -> None:
    """Every top-level package of the checkout but the tests' and the benchmarks' is in
    the wheel (the wheel's files themselves: tests/unit/plugin/test_plugin_packaging.py)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]
    shipped = set(tool["hatch"]["build"]["targets"]["wheel"]["packages"])
    present = {d.name for d in ROOT.iterdir() if (d / "__init__.py").exists()}
    assert shipped == present - {"tests", "bench"}
