"""A copy of this checkout (the files git tracks, or would: those not ignored), and
building or installing the package from it, so a test never leaves build products in the
checkout itself.

    src = copy_checkout(tmp_path / "src")          # git ls-files (else the tree, less .venv)
    wheel = build_wheel(src, tmp_path / "dist")    # pip wheel --no-deps
    venv = fresh_venv(tmp_path / "venv")           # sees this venv's packages, not the tree

The build backend (pyproject's build-system) is used from this interpreter when it has
it and it works (no network), else pip fetches it into an isolated build environment.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {".git", ".venv", "runs", "build", "__pycache__", ".pytest_cache", ".mypy_cache",
        ".ruff_cache", ".hypothesis"}


def tracked_files(root: Path = ROOT) -> list[str] | None:
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached",
                              "--others", "--exclude-standard"], capture_output=True,
                             check=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [p for p in out.decode().split("\0") if p]


def copy_checkout(dest: Path, root: Path = ROOT) -> Path:
    files = tracked_files(root)
    if files is None:
        shutil.copytree(root, dest, ignore=lambda d, names: [
            n for n in names if n in SKIP or n.endswith((".egg-info", ".pyc"))])
        return dest
    for rel in files:
        src = root / rel
        if src.is_file():  # a tracked file deleted in the work tree is not copied
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def build_isolation_args(src: Path) -> list[str]:
    """--no-build-isolation when this interpreter has the build backend (offline)."""
    system = tomllib.loads((src / "pyproject.toml").read_text())["build-system"]
    backend = str(system.get("build-backend", "setuptools.build_meta")).split(":")[0]
    top = backend.split(".")[0]
    return ["--no-build-isolation"] if importlib.util.find_spec(top) else []


def pip(*args: str, cwd: Path | None = None, timeout: float = 300) -> str:
    r = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"pip {' '.join(args)} failed ({r.returncode}):\n"
                             f"{r.stdout}\n{r.stderr}")
    return r.stdout


def build_wheel(src: Path, dist: Path) -> Path:
    """pip wheel --no-deps: offline with this interpreter's build backend, if it has one
    that works, else in pip's isolated build environment."""
    try:
        pip("wheel", "--no-deps", *build_isolation_args(src), "-w", str(dist), str(src))
    except AssertionError:
        if not build_isolation_args(src):
            raise
        pip("wheel", "--no-deps", "-w", str(dist), str(src))
    (wheel,) = dist.glob("*.whl")
    return wheel


def fresh_venv(dest: Path) -> Path:
    """A new venv (no pip of its own) that sees this interpreter's site-packages (the
    project's dependencies and test tools) through a .pth file, but not the checkout.
    Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True,
                   timeout=120)
    python = dest / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"], check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "eeh-test-deps.pth").write_text(here + "\n")
    return python
