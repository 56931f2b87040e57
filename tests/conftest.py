"""Shared pytest plumbing: artifacts directories are named in failure reports, and a run
that leaves a temporary file or directory behind fails.

The leak check: everything the project and its tests put in the system temp directory is
named `eeh-*` (sockets' directories of machines, the adapter, the platform channels and
the console; the tests' own short directories under /tmp). The `eeh-*` entries of
`tempfile.gettempdir()` and of /tmp are listed when the session starts and again when it
has finished (after every fixture's teardown); any new one is named and the session's
exit status becomes "tests failed". (Another process making `eeh-*` entries at the same
time, say a second test run, would be blamed too.)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Generator
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# The project's pytest plugin (fixtures eeh_system, eeh_console, eeh_timeline): loaded
# through its entry point when the package is installed, from the tree otherwise.
if not any(ep.name == "eeh_sriov" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["eeh_sriov.pytest_plugin"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None]:
    outcome = yield
    report = outcome.get_result()
    dirs = getattr(item, "eeh_run_dirs", [])
    if report.failed and dirs:
        report.sections.append(("artifacts", "\n".join(str(d) for d in dirs)))


# ---- nothing left in the temp directory -------------------------------------------------
TEMP_PREFIX = "eeh-"
_temp_before = pytest.StashKey[set[Path]]()


def temp_entries() -> set[Path]:
    """The `eeh-*` entries of the system temp directory and of /tmp."""
    found: set[Path] = set()
    for d in {Path(tempfile.gettempdir()), Path("/tmp")}:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        found |= {d / n for n in names if n.startswith(TEMP_PREFIX)}
    return found


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_temp_before] = temp_entries()


@pytest.hookimpl(trylast=True)  # after the runner's own: session fixtures are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    before = session.config.stash.get(_temp_before, None)
    if before is None:
        return
    left = sorted(temp_entries() - before)
    if not left:
        return
    lines = [f"temp leak: the test session left {len(left)} new {TEMP_PREFIX}* "
             "entr" + ("y" if len(left) == 1 else "ies") + " in the temp directory "
             "(every temporary file or directory must be removed on every path):",
             *(f"  {p}" for p in left)]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        for line in lines:
            reporter.write_line(line, red=True, bold=True)
    else:
        print("\n".join(lines))
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
