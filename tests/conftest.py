"""Shared pytest plumbing: artifacts directories are named in failure reports."""

from __future__ import annotations

from collections.abc import Generator

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    dirs = getattr(item, "eeh_run_dirs", [])
    if report.failed and dirs:
        report.sections.append(("artifacts", "\n".join(str(d) for d in dirs)))
