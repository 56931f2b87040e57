"""Shared pytest plumbing: the project's plugin (which names artifacts directories in
failure reports) is loaded, and a run that leaves a temporary file or directory behind
fails.

The leak check: each test session gets a temp directory of its own,
/tmp/eeh-session-XXXXXXXX, made TMPDIR (and `tempfile.gettempdir()`) for the session and
everything it starts (QEMU, guests' helpers, subprocesses); pytest's own `tmp_path`
directories stay where they were (PYTEST_DEBUG_TEMPROOT). When the session has finished
(after every fixture's teardown) that directory must be empty: whatever is left in it,
and any new `eeh-*` entry of the system temp directory or /tmp (code that ignored
TMPDIR), is named and the session's exit status becomes "tests failed". The directory
is removed when empty. Other sessions running at the same time have their own
directories and are not blamed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# The project's pytest plugin (fixtures eeh_system, eeh_console, eeh_timeline): loaded
# through its entry point when the package is installed, from the tree otherwise.
if not any(ep.name == "eeh_sriov" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["eeh_sriov.pytest_plugin"]

# The artifacts directories a test made (item.eeh_run_dirs) are named in its failure
# report by the plugin's own hook (eeh_sriov.pytest_plugin.pytest_runtest_makereport).


# ---- nothing left in the temp directory -------------------------------------------------
TEMP_PREFIX = "eeh-"
SESSION_PREFIX = "eeh-session-"
_temp_before = pytest.StashKey[set[Path]]()
_session_tmp = pytest.StashKey[Path]()


def temp_entries(roots: set[Path]) -> set[Path]:
    """The `eeh-*` entries of `roots`, other sessions' own directories left out."""
    found: set[Path] = set()
    for d in roots:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        found |= {d / n for n in names
                  if n.startswith(TEMP_PREFIX) and not n.startswith(SESSION_PREFIX)}
    return found


def pytest_configure(config: pytest.Config) -> None:
    root = Path(tempfile.gettempdir())
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(root))  # tmp_path stays there
    session_tmp = Path(tempfile.mkdtemp(prefix=SESSION_PREFIX, dir="/tmp"))  # short: AF_UNIX
    config.stash[_session_tmp] = session_tmp
    config.stash[_temp_before] = temp_entries({root, Path("/tmp")})
    os.environ["TMPDIR"] = str(session_tmp)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


@pytest.hookimpl(trylast=True)  # after the runner's own: session fixtures are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    session_tmp = session.config.stash.get(_session_tmp, None)
    before = session.config.stash.get(_temp_before, None)
    if session_tmp is None or before is None:
        return
    left = sorted(session_tmp.iterdir()) if session_tmp.is_dir() else []
    if not left:  # kept only as the evidence of a leak in it
        with contextlib.suppress(OSError):
            session_tmp.rmdir()
    left += sorted(temp_entries({Path(os.environ["PYTEST_DEBUG_TEMPROOT"]), Path("/tmp")})
                   - before)
    if not left:
        return
    lines = [f"temp leak: the test session left {len(left)} "
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
