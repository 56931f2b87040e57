"""Shared pytest plumbing: artifacts directories are named in failure reports."""

from __future__ import annotations

from collections.abc import Generator
from importlib.metadata import entry_points

import pytest

# The project's pytest plugin (fixtures eeh_system, eeh_console, eeh_timeline): loaded
# through its entry point when the package is installed, from the tree otherwise.
if not any(ep.name == "eeh_sriov" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["hypervisor_shim.pytest_plugin"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    dirs = getattr(item, "eeh_run_dirs", [])
    if report.failed and dirs:
        report.sections.append(("artifacts", "\n".join(str(d) for d in dirs)))
