"""What a staged guest's zygote needs in the initramfs (qemu_launcher.guest_zygote).

The zygote is the root fs's python3, started by stage 1 before the guest is saved, when
nothing from the host is mounted (a mounted 9p share blocks migration): so its
interpreter, the shared libraries it loads and the modules it imports must be in the
initramfs. Which: the root fs's own python3 runs on the host (qemu_launcher.rootfs_python),
imports the zygote and the modules the caller names (`AssetConfig.guest_preload`, e.g.
the guest command's module), and lists every module it then has that comes from the root
fs, with its file and bytecode; extension modules and the interpreter bring the libraries
`ld.so --list` finds for them. Modules of the checkout come too, at the path where guests
mount it (/mnt/repo: their code objects name the same files), each source with its size
and mtime: after the go the zygote compares them with the mounted checkout, and if any
differs (edited since, or another checkout) it drops every preloaded module of the
checkout, which the command then imports from the checkout itself: never a stale copy.
The zygote imports all of them, by name, before the save.

Files keep their root fs paths and modification times (a .pyc is valid for its .py's
size and mtime), so the initramfs holds a small copy of the root fs's tree; once stage 1
has mounted the root fs, the zygote moves into it and imports anything else from there.
A payload that cannot be computed is no error: staged guests then start python3 as
before (`Payload.detail` says why).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from qemu_launcher.bytecode import GUEST_REPO
from qemu_launcher.rootfs_python import run_rootfs_python

ZYGOTE_SOURCE = Path(__file__).with_name("guest_zygote.py")
ZYGOTE_DIR = "usr/lib/eeh-zygote"  # in the initramfs: zygote.py, preload (guest_zygote)
_LDD = re.compile(r"=>\s*(\S+)\s+\(0x")

_SCRIPT = """
import importlib, importlib.util, json, os, sys
repo, zygote = os.path.realpath(sys.argv[1]), sys.argv[2]
sys.path.insert(0, repo)
errors = []
spec = importlib.util.spec_from_file_location("eeh_zygote_probe", zygote)
probe = sys.modules["eeh_zygote_probe"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)  # its imports, not its main
for name in sys.argv[3:]:
    try:
        importlib.import_module(name)
    except Exception as e:
        errors.append(f"{name}: {type(e).__name__}: {e}")
mods, files, ours = [], set(), set()
for name, m in sorted(sys.modules.items()):
    f = getattr(m, "__file__", None)
    if not f or name == "eeh_zygote_probe":
        continue
    f = os.path.abspath(f)
    mine = f.startswith(repo + os.sep)
    if mine and not f.endswith(".py"):
        continue
    mods.append(name)
    (ours if mine else files).add(f)
    if f.endswith(".py"):
        pyc = importlib.util.cache_from_source(f)
        if os.path.exists(pyc):
            (ours if mine else files).add(pyc)
print(json.dumps({"modules": mods, "files": sorted(files), "errors": errors,
                  "checkout": sorted(os.path.relpath(f, repo) for f in ours)}))
"""


@dataclass(frozen=True)
class Payload:
    """Files for the initramfs (guest path, host path) and the modules to import."""

    files: tuple[tuple[str, Path], ...] = ()
    # the checkout's files among them, as the guest sees it mounted: (guest path, size,
    # mtime_ns) of each source, compared with the mounted checkout after the go
    checks: tuple[tuple[str, int, int], ...] = ()
    links: tuple[tuple[str, str], ...] = ()  # (guest path, target)
    modules: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()  # modules named that did not import on the host
    detail: str = ""  # why there is no payload
    zygote: bytes = field(default=b"", repr=False)

    @property
    def ok(self) -> bool:
        return bool(self.files)

    def digest(self) -> str:
        """What the initramfs is built from: every file's path, size and mtime."""
        h = hashlib.sha256(self.zygote)
        for guest, host in self.files:
            st = host.stat()
            h.update(f"{guest}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
        h.update(self.listing().encode())
        return h.hexdigest()[:16]

    def listing(self) -> str:
        """The zygote's preload file (guest_zygote.Zygote.serve reads it)."""
        return json.dumps({"path": [GUEST_REPO], "modules": list(self.modules),
                           "checks": [list(c) for c in self.checks]}, indent=0) + "\n"


def _guest_path(rootfs: Path, host: str) -> str | None:
    try:
        return str(Path(host).relative_to(rootfs))
    except ValueError:
        return None


def _libraries(rootfs: Path, elf: Path, timeout: float) -> list[str]:
    """Host paths (in the root fs) of the libraries `elf` loads, and its loader."""
    loader = rootfs / "lib64/ld-linux-x86-64.so.2"
    libs = f"{rootfs}/lib/x86_64-linux-gnu:{rootfs}/usr/lib/x86_64-linux-gnu"
    out = subprocess.run([str(loader), "--library-path", libs, "--list", str(elf)],
                         capture_output=True, text=True, timeout=timeout, check=True).stdout
    return [m.group(1) for m in map(_LDD.search, out.splitlines()) if m]


def zygote_payload(rootfs: Path, repo: Path, modules: tuple[str, ...],
                   timeout: float = 120.0) -> Payload:
    """The zygote's files and preload list for the root fs `rootfs`."""
    zygote = ZYGOTE_SOURCE.read_bytes()
    name, p = run_rootfs_python(rootfs, _SCRIPT, [str(repo), str(ZYGOTE_SOURCE), *modules],
                                rootfs, timeout)
    if isinstance(p, str):
        return Payload(detail=p)
    if p.returncode != 0:
        return Payload(detail=f"{name} exit {p.returncode}: "
                       f"{(p.stderr or p.stdout).strip()[-300:]}")
    try:
        found = json.loads(p.stdout)
        hosts = [Path(rootfs / "usr/bin" / name)] + [Path(f) for f in found["files"]]
        elves = [hosts[0]] + [h for h in hosts if h.suffix == ".so"]
        for elf in elves:
            hosts += [Path(lib) for lib in _libraries(rootfs, elf, timeout)]
    except (ValueError, KeyError, TypeError, OSError, subprocess.SubprocessError) as e:
        return Payload(detail=f"listing the zygote's files: {e}")
    files: dict[str, Path] = {}
    for host in hosts:
        guest = _guest_path(rootfs, str(host))
        if guest is None:
            return Payload(detail=f"{host} is not in the root fs {rootfs}")
        files.setdefault(guest, host)
    checks = []
    for rel in found["checkout"]:
        host = repo / rel
        files[f"{GUEST_REPO.lstrip('/')}/{rel}"] = host
        if host.suffix == ".py":
            st = host.stat()
            checks.append((f"{GUEST_REPO}/{rel}", st.st_size, st.st_mtime_ns))
    return Payload(files=tuple(sorted(files.items())), checks=tuple(checks),
                   links=(("usr/bin/python3", hosts[0].name),),  # stage 1 starts python3
                   modules=tuple(str(m) for m in found["modules"]),
                   errors=tuple(str(e) for e in found["errors"]), zygote=zygote)


def directories(paths: list[str]) -> list[str]:
    """Every directory above `paths`, parents first (the initramfs needs each entry)."""
    out: set[str] = set()
    for p in paths:
        parts = p.split("/")[:-1]
        out.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(out, key=lambda d: (d.count("/"), d))


def payload_size(payload: Payload) -> int:
    return sum(os.path.getsize(h) for _, h in payload.files)
