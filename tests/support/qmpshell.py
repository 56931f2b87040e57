"""Drive the stock `qmp-shell` (from the pinned qemu.qmp) as a subprocess, as an operator."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

QMP_SHELL = Path(sys.executable).parent / "qmp-shell"


def run_qmp_shell(socket: Path, lines: list[str | float], *, hmp: bool = False,
                  timeout: float = 60.0) -> str:
    """Type `lines` into qmp-shell (a float pauses that many seconds; an empty line makes
    qmp-shell print the events it received) and return everything it printed."""
    argv = [str(QMP_SHELL), *(["-H"] if hmp else []), str(socket)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdin is not None
    try:
        for line in lines:
            if isinstance(line, float):
                time.sleep(line)
                continue
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out
