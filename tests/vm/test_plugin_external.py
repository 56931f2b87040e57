"""A test author's project outside this repository (examples/plugin-project: a driver
module of its own, its own topology, two guests with different commands) runs with the
installed plugin from its own directory: the passing test passes, and the broken variant
fails within seconds naming the guest, its console and the artifacts directory.

The package is built from a copy of the checkout (the checkout itself is left as it is)
and installed into a fresh venv that sees this venv's dependencies but not the checkout;
pytest runs in a copy of the project in a temporary directory, as a subprocess, with the
checkout named by EEH_CHECKOUT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from qemu_launcher.assets import REPO
from tests.support.checkout_copy import build_wheel, copy_checkout, fresh_venv, pip

PROJECT = REPO / "examples" / "plugin-project"
HANG_GUARD_S = 60  # the broken variant must fail long before its 120 s wait would end


def test_an_external_project_with_the_installed_plugin(
        tmp_path: Path, run_dir: Callable[..., Path]) -> None:
    wheel = build_wheel(copy_checkout(tmp_path / "src"), tmp_path / "dist")
    python = fresh_venv(tmp_path / "venv")
    pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel))
    project = shutil.copytree(PROJECT, tmp_path / "project")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "PYTEST_PLUGINS",
                        "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "EEH_CHECKOUT")}
    where = subprocess.run([str(python), "-c", "import eeh_sriov; print(eeh_sriov.__file__)"],
                           cwd=project, env=env, capture_output=True, text=True, check=True,
                           timeout=60).stdout
    assert where.startswith(str(tmp_path / "venv")), where  # the installed copy, not the tree

    runs = run_dir()
    env["EEH_CHECKOUT"] = str(REPO)
    r = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "tests",
                        "broken", f"--eeh-runs={runs}", "--junitxml=junit.xml"],
                       cwd=project, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "1 failed, 1 passed" in out, out
    assert f"checkout {REPO} (from EEH_CHECKOUT)" in out, out

    cases = {c.get("name"): c for c in ET.parse(project / "junit.xml").iter("testcase")}
    good = cases["test_my_driver_binds_next_to_the_adapter_driver"]
    bad = cases["test_my_driver_that_is_not_there"]
    assert good.find("failure") is None and good.find("error") is None, out
    failure = bad.find("failure")
    assert failure is not None, out
    text = (failure.get("message") or "") + (failure.text or "")
    assert "guest g1 is gone: its command exited with status 1" in text, text
    assert "No module named my_driver" in text, text  # its last console lines
    assert float(bad.get("time") or 0) < HANG_GUARD_S, bad.attrib
    # the artifacts directory, named in the failure report (and in the message)
    assert "artifacts" in out and str(runs) in out, out
    made = sorted(d for d in runs.iterdir() if d.is_dir())
    assert len(made) == 2, made
    for d in made:
        for name in ("events.jsonl", "timeline.md", "summary.json", "uplink.pcap",
                     "g1/console.log", "svc/console.log"):
            assert (d / name).is_file(), d / name
    assert not (PROJECT / "runs").exists() and not (project / "runs").exists()
