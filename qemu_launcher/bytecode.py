"""Bytecode of the guest-side packages, compiled on the host for the guest's python3.

Guests import packages from the shared repository (which ones is the caller's to say:
`AssetConfig.guest_packages`), mounted read-only at /mnt/repo (and stage 2 sets
PYTHONDONTWRITEBYTECODE): without bytecode every python3 start in a guest compiles those
modules from source, which under TCG costs about 1.5 s of the guest's CPU (`python3 -X
importtime -c "import guest_drivers.agent"`: 2.5 s, most of it the project's own
modules). So before guests boot, the root fs's own python3 runs on the host
(qemu_launcher.rootfs_python: through the root fs's dynamic loader) and `compileall`s
those packages into their `__pycache__` directories (`*.cpython-3NN.pyc`, ignored by
git; the host's Python uses its own tag, so the two never clash), with the guest's paths
(/mnt/repo/...) in the code objects. The guest checks each .pyc against its source's
mtime and size as usual: a stale one (a source edited since) is ignored, never wrong.
Up-to-date files are skipped, so this costs well under a second when nothing changed.
Failing to compile is not an error: the guest then compiles in memory, as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from qemu_launcher.rootfs_python import run_rootfs_python

GUEST_REPO = "/mnt/repo"  # where guests mount this repository (qemu_launcher.config, initramfs)

_SCRIPT = """
import compileall, sys
ok = True
for pkg in sys.argv[2:]:
    ok &= bool(compileall.compile_dir(pkg, ddir=sys.argv[1] + "/" + pkg, quiet=1))
sys.exit(0 if ok else 1)
"""


@dataclass(frozen=True)
class GuestBytecode:
    ok: bool
    python: str  # the guest's interpreter that compiled, or "" if none was found
    detail: str = ""


def compile_guest_bytecode(rootfs: Path, repo: Path, packages: tuple[str, ...],
                           timeout: float = 120.0) -> GuestBytecode:
    name, p = run_rootfs_python(rootfs, _SCRIPT, [GUEST_REPO, *packages], repo, timeout)
    if isinstance(p, str):
        return GuestBytecode(False, name, p)
    if p.returncode != 0:
        return GuestBytecode(False, name,
                             f"exit {p.returncode}: {(p.stderr or p.stdout).strip()[-300:]}")
    return GuestBytecode(True, name)
