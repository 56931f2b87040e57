"""The root fs's own python3, run on the host through the root fs's dynamic loader (as
its QEMU is run): for work that needs the guest's interpreter (bytecode in its format)
or a library the host may lack (the kernel's zstd payload, qemu_launcher.pvh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def guest_python(rootfs: Path) -> Path | None:
    """The root fs's python3.N (the highest N), if any."""
    found = [p for p in (rootfs / "usr/bin").glob("python3.*")
             if p.name.removeprefix("python3.").isdigit()]
    return max(found, key=lambda p: int(p.name.removeprefix("python3."))) if found else None


def run_rootfs_python(rootfs: Path, script: str, args: list[str], cwd: Path,
                      timeout: float) -> tuple[str, subprocess.CompletedProcess[str] | str]:
    """Run `script` (python -c) with `args`; return (interpreter name, the finished
    process), or (name or "", why it could not run)."""
    python = guest_python(rootfs)
    loader = rootfs / "lib64/ld-linux-x86-64.so.2"
    if python is None or not loader.exists():
        return "", f"no python3 or loader in {rootfs}"
    libs = f"{rootfs}/lib/x86_64-linux-gnu:{rootfs}/usr/lib/x86_64-linux-gnu"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    argv = [str(loader), "--library-path", libs, str(python), "-c", script, *args]
    try:
        return python.name, subprocess.run(argv, cwd=cwd, env=env, capture_output=True,
                                           text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return python.name, f"could not run {python.name}: {e}"
