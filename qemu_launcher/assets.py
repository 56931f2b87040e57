"""Guest assets: the root fs (with the QEMU it carries), the kernel, the initramfs, and
the guest packages' bytecode for the root fs's python3 (qemu_launcher.bytecode).

The root fs is built by `qemu/build-rootfs.sh` into a cache outside the tracked tree,
keyed by a hash of the recipe (script, package list and lock), so it is rebuilt only when
the recipe changes. A build goes into a temporary directory under a lock and is renamed
into place only when it is complete: an interrupted build is never used (and is swept
away by the next build).

The build pins every package to the version in `qemu/rootfs.lock` (see rootfs_lock). A
pinned version the archive no longer has is replaced by what it has (and a pinned build
that apt cannot resolve is redone unpinned); which packages differ, and what that
changes, is printed by the build and recorded in each run's machine.json.

    python -m qemu_launcher.assets build     # ensure root fs + initramfs, print paths
    python -m qemu_launcher.assets show      # print what would be used
    python -m qemu_launcher.assets lock      # refresh qemu/rootfs.lock (unpinned build)
    python -m qemu_launcher.assets lock --from ROOTFS   # ... from a built root fs
    python -m qemu_launcher.assets drift     # what the archive's versions change

With EEH_ROOTFS=current (`make drift-check`), the root fs is built from the archive's
current versions instead of the lock's, under a cache key of its own (one build a day),
and the lock is left as it is: which packages moved, and whether every QEMU fix still
finds its code, is seen before a user's new machine meets it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from qemu_launcher.bytecode import compile_guest_bytecode
from qemu_launcher.cpio import CpioWriter
from qemu_launcher.errors import AssetError, QemuNotFound
from qemu_launcher.preload import ZYGOTE_DIR, Payload, directories, zygote_payload
from qemu_launcher.pvh import ensure_pvh_kernel
from qemu_launcher.qemu_fixes import VFIO_USER_MSIX_TEARDOWN, FixedBinary, ensure_fixed
from qemu_launcher.rootfs_lock import (
    LOCK_FILE,
    REFRESH_COMMAND,
    LockStatus,
    compare,
    format_lock,
    installed_packages,
    lock_status,
    parse_lock,
)


def find_repo() -> Path:
    """The checkout this code runs from (it holds qemu/, the guest image's recipe, and is
    what guests mount): the package's parent in a source tree; for an installed copy, the
    current directory if it is a checkout."""
    here = Path(__file__).resolve().parents[2]
    for candidate in (here, Path.cwd()):
        if (candidate / "qemu" / "build-rootfs.sh").is_file():
            return candidate
    return here


REPO = find_repo()
BUILD_SCRIPT = "qemu/build-rootfs.sh"
RECIPE_FILES = (BUILD_SCRIPT, "qemu/rootfs-packages.txt", LOCK_FILE)
INIT_FILE = "qemu/initramfs-init.sh"
INITRAMFS_MODULES = ("9pnet_virtio", "9p",)  # plus everything modules.dep says they need
MIN_QEMU = (10, 1, 1)
TRACKS = ("lock", "current")
BOOTS = ("restore", "cold")
COMPLETE = ".complete"
KEEP_INITRAMFS = 16


def _digest(paths: list[Path], extra: bytes = b"") -> str:
    h = hashlib.sha256(extra)
    for p in paths:
        try:
            data = p.read_bytes() + b"\0"
        except FileNotFoundError:
            data = b"(absent)"  # only the lock may be absent: an unpinned recipe
        h.update(p.name.encode() + b"\0" + data)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class AssetConfig:
    """Where assets live. Built from the environment by `from_env` at the edge only."""

    cache_dir: Path
    repo: Path = REPO
    # fixes the host's own QEMU was built with (qemu_fixes names), declared by its owner
    host_qemu_fixes: tuple[str, ...] = ()
    # the packages of `repo` that guests import: compiled for the guest's python3 before
    # guests boot (launcher.bytecode); the application says which
    guest_packages: tuple[str, ...] = ()
    # modules a staged guest's python3 imports before it is saved (qemu_launcher.preload,
    # guest_zygote): those of the guest command, from the root fs (the checkout's own are
    # imported after the go); the application says which
    guest_preload: tuple[str, ...] = ()
    # staged guests start their python3 before the save (qemu_launcher.guest_zygote);
    # False (EEH_ZYGOTE=0): after the go, as cold boots do
    zygote: bool = True
    # "lock": the root fs pinned to qemu/rootfs.lock; "current": the archive's current
    # versions, for the drift check (a key of its own, a build a day; the lock untouched)
    track: str = "lock"
    # "restore": guests boot staged, from a saved state once there is one
    # (qemu_launcher.snapshot); "cold": every guest boots its kernel, functions cold-plugged
    boot: str = "restore"

    def __post_init__(self) -> None:
        if self.track not in TRACKS:
            raise AssetError(f"EEH_ROOTFS: {self.track!r} is not one of {', '.join(TRACKS)}")
        if self.boot not in BOOTS:
            raise AssetError(f"EEH_BOOT: {self.boot!r} is not one of {', '.join(BOOTS)}")

    @classmethod
    def from_env(cls, guest_packages: tuple[str, ...] = (),
                 guest_preload: tuple[str, ...] = ()) -> AssetConfig:
        base = os.environ.get("EEH_CACHE_DIR") or os.path.join(
            os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "eeh-sriov"
        )
        declared = os.environ.get("EEH_QEMU_FIXES", "")
        return cls(cache_dir=Path(base),
                   host_qemu_fixes=tuple(f for f in declared.replace(",", " ").split() if f),
                   track=os.environ.get("EEH_ROOTFS", "lock") or "lock",
                   boot=os.environ.get("EEH_BOOT", "restore") or "restore",
                   guest_packages=guest_packages, guest_preload=guest_preload,
                   zygote=os.environ.get("EEH_ZYGOTE", "1") != "0")

    @property
    def pinned(self) -> bool:
        return self.track == "lock" and (self.repo / LOCK_FILE).exists()

    @property
    def rootfs_key(self) -> str:
        if self.track == "current":
            day = time.strftime("%Y%m%d").encode()
            return "current-" + _digest([self.repo / f for f in RECIPE_FILES[:-1]],
                                        extra=b"current " + day)
        return _digest([self.repo / f for f in RECIPE_FILES])

    @property
    def rootfs_dir(self) -> Path:
        return self.cache_dir / f"rootfs-{self.rootfs_key}"


@dataclass(frozen=True)
class QemuBinary:
    """How to run qemu-system-x86_64: argv prefix and environment additions."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    version: str
    source: str  # "host" or "rootfs"
    # upstream fixes this binary has: applied to it (qemu_fixes), present upstream, or
    # declared by its owner (EEH_QEMU_FIXES)
    fixes: tuple[str, ...] = ()
    findings: tuple[str, ...] = ()  # what each known fix found in it (Verdict.describe)

    @property
    def removal_works(self) -> bool:
        """Whether device_del of an MSI-X vfio-user function leaves this QEMU alive."""
        return VFIO_USER_MSIX_TEARDOWN.name in self.fixes

    def removal(self) -> str:
        """One line on VF removal (device_del) with this QEMU, and why."""
        name = VFIO_USER_MSIX_TEARDOWN.name
        why = next((f.removeprefix(f"{name}: ") for f in self.findings
                    if f.startswith(f"{name}: ")), None)
        if self.removal_works:
            return f"VF removal works ({name}: {why or 'declared by EEH_QEMU_FIXES'})"
        return (f"VF removal refused: this QEMU's vfio-user-pci would abort ({name}: "
                f"{why or 'not examined'}; set EEH_QEMU_FIXES={name} if it has the fix)")

    def describe(self) -> str:
        binary = self.argv[0] if self.source == "host" else self.argv[3]
        fixed = f", with fixes: {', '.join(self.fixes)}" if self.fixes else ""
        return f"QEMU {self.version} from the {self.source} ({binary}{fixed})"


@dataclass(frozen=True)
class GuestAssets:
    rootfs: Path
    kernel: Path
    initramfs: Path
    qemu: QemuBinary
    # how the root fs compares with its lock
    rootfs_lock: LockStatus = field(default_factory=LockStatus)
    pvh_kernel: Path | None = None  # the kernel uncompressed, for a PVH boot (qemu_launcher.pvh)
    # where staged guests' saved states live (qemu_launcher.snapshot); None: cold boots
    snapshots: Path | None = None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_build(cfg: AssetConfig, tmp: Path, lock: Path | None, logfile: Path,
               mode: str = "w") -> int:
    """Run the recipe into `tmp`, pinned to `lock` if given; its output goes to `logfile`."""
    argv = ["bash", str(cfg.repo / BUILD_SCRIPT), str(tmp)]
    if lock is not None:
        argv.append(str(lock))
    with open(logfile, mode) as lf:
        return subprocess.call(argv, stdout=lf, stderr=subprocess.STDOUT)


def _build_failed(rc: int, tmp: Path, logfile: Path) -> AssetError:
    shutil.rmtree(tmp, ignore_errors=True)
    tail = logfile.read_text(errors="replace").splitlines()[-15:]
    return AssetError(f"root fs build failed (exit {rc}); log {logfile}:\n"
                      + "\n".join(f"  | {line}" for line in tail))


def _install(tmp: Path, final: Path, info: dict[str, object]) -> None:
    (tmp / COMPLETE).write_text(json.dumps(info, indent=1) + "\n")
    os.rename(tmp, final)


def report_lock(status: LockStatus, out: io.TextIOBase | TextIO) -> None:
    """The build output's account of the root fs against its lock."""
    if not status.locked:
        print(f"assets: warning: {status.summary()}", file=out)
    elif not status.drift:
        print(f"assets: root fs matches {status.lock}", file=out)
    else:
        print(f"assets: warning: the root fs differs from {status.lock}: these pinned "
              "versions are gone from the archive (or no longer install together), so apt "
              "installed what it has:", file=out)
        for d in status.drift:
            print(f"assets:   {d.describe()}", file=out)
        print("assets: every run records this in machine.json (rootfs_lock); to adopt "
              "these versions: python -m qemu_launcher.assets lock", file=out)


def ensure_rootfs(cfg: AssetConfig, log: io.TextIOBase | None = None) -> Path:
    """Return the root fs for the current recipe, building it if needed."""
    out = log or sys.stderr
    final = cfg.rootfs_dir
    if (final / COMPLETE).exists():
        return final
    with _locked(cfg.cache_dir / f"rootfs-{cfg.rootfs_key}.lock"):
        if (final / COMPLETE).exists():
            return final
        for stale in cfg.cache_dir.glob(f"rootfs-{cfg.rootfs_key}.tmp-*"):
            print(f"assets: removing interrupted build {stale}", file=out)
            shutil.rmtree(stale, ignore_errors=True)
        if cfg.track == "current":  # an earlier day's drift build: superseded
            for old in cfg.cache_dir.glob("rootfs-current-*"):
                if old.is_dir() and not old.name.startswith(f"rootfs-{cfg.rootfs_key}"):
                    shutil.rmtree(old, ignore_errors=True)
        if final.exists():  # present but never completed: not trustworthy
            shutil.rmtree(final, ignore_errors=True)
        tmp = cfg.cache_dir / f"rootfs-{cfg.rootfs_key}.tmp-{os.getpid()}"
        lock = cfg.repo / LOCK_FILE
        pinned = cfg.pinned
        how = (f"pinned to {LOCK_FILE}" if pinned else "the archive's current versions"
               if cfg.track == "current" else "unpinned: no lock file")
        print(f"assets: building root fs {final.name} (mmdebstrap, {how}, about a minute)",
              file=out)
        start = time.monotonic()
        logfile = cfg.cache_dir / f"rootfs-{cfg.rootfs_key}.build.log"
        rc = _run_build(cfg, tmp, lock if pinned else None, logfile)
        if rc != 0 and pinned:
            # e.g. a pinned library that a newer package of the archive cannot use
            print(f"assets: warning: the pinned build failed (exit {rc}, log {logfile}); "
                  "building again with what the archive has", file=out)
            shutil.rmtree(tmp, ignore_errors=True)
            pinned = False
            rc = _run_build(cfg, tmp, None, logfile, mode="a")
        if rc != 0:
            raise _build_failed(rc, tmp, logfile)
        status = lock_status(lock, tmp)
        report_lock(status, out)
        seconds = time.monotonic() - start
        _install(tmp, final, {"key": cfg.rootfs_key, "build_seconds": round(seconds, 1),
                              "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "pinned": pinned, "rootfs_lock": status.as_json()})
        print(f"assets: root fs built in {seconds:.1f} s: {final}", file=out)
        return final


def refresh_lock(cfg: AssetConfig, source: Path | None = None,
                 out: io.TextIOBase | TextIO = sys.stdout) -> dict[str, str]:
    """Write qemu/rootfs.lock from a fresh unpinned build (or from the built root fs
    `source`), print what changed, and return the new lock.

    A fresh build is the root fs of the new recipe (its versions are the lock): it is
    kept in the cache under the new key rather than rebuilt."""
    if source is not None:
        return _write_lock(cfg, source, str(source), out)
    cfg.cache_dir.mkdir(parents=True, exist_ok=True)
    with _locked(cfg.cache_dir / "rootfs-refresh.lock"):  # one refresh at a time
        for stale in cfg.cache_dir.glob("rootfs-refresh.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = cfg.cache_dir / f"rootfs-refresh.tmp-{os.getpid()}"
        logfile = cfg.cache_dir / "rootfs-refresh.build.log"
        print("assets: building an unpinned root fs to take the archive's current "
              "versions (mmdebstrap, about a minute)", file=out)
        start = time.monotonic()
        rc = _run_build(cfg, tmp, None, logfile)
        if rc != 0:
            raise _build_failed(rc, tmp, logfile)
        seconds = time.monotonic() - start
        try:
            new = _write_lock(cfg, tmp, "a fresh unpinned build", out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        final = cfg.rootfs_dir  # the key of the recipe with the new lock
        with _locked(cfg.cache_dir / f"rootfs-{cfg.rootfs_key}.lock"):
            if (final / COMPLETE).exists():
                shutil.rmtree(tmp, ignore_errors=True)
                return new
            shutil.rmtree(final, ignore_errors=True)
            status = lock_status(cfg.repo / LOCK_FILE, tmp)
            _install(tmp, final, {"key": cfg.rootfs_key, "build_seconds": round(seconds, 1),
                                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                  "pinned": False, "rootfs_lock": status.as_json()})
        print(f"assets: the build is the root fs of the new lock: {final}", file=out)
        return new


def _write_lock(cfg: AssetConfig, rootfs: Path, origin: str,
                out: io.TextIOBase | TextIO) -> dict[str, str]:
    lock = cfg.repo / LOCK_FILE
    old = parse_lock(lock.read_text(), LOCK_FILE) if lock.exists() else {}
    new = installed_packages(rootfs)
    if not new:
        raise AssetError(f"{rootfs} has no installed packages: not a root fs")
    staged = lock.with_name(f"{lock.name}.tmp-{os.getpid()}")
    staged.write_text(format_lock(new))
    os.replace(staged, lock)
    print(f"assets: wrote {LOCK_FILE}: {len(new)} packages from {origin}", file=out)
    changes = compare(old, new) if old else ()
    for d in changes:
        print(f"assets:   {d.describe().replace(' built ', ' now ')}", file=out)
    if old and not changes:
        print("assets: no version changed", file=out)
    return new


def find_kernel(rootfs: Path) -> Path:
    kernels = sorted(rootfs.glob("boot/vmlinuz-*"))
    if not kernels:
        raise AssetError(f"no kernel in {rootfs}/boot")
    return kernels[-1]


def _module_closure(rootfs: Path, kver: str, wanted: tuple[str, ...]) -> list[str]:
    """Module paths (relative to lib/modules/KVER) in load order, dependencies first."""
    deps: dict[str, list[str]] = {}
    for line in (rootfs / f"lib/modules/{kver}/modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {Path(m).name.split(".ko")[0]: m for m in deps}
    order: list[str] = []

    def visit(mod: str) -> None:
        for d in reversed(deps[mod]):  # modules.dep lists the deepest dependency last
            visit(d)
        if mod not in order:
            order.append(mod)

    for name in wanted:
        if name not in by_name:
            raise AssetError(f"module {name} not found for kernel {kver}")
        visit(by_name[name])
    return order


def _zygote_payload(cfg: AssetConfig, rootfs: Path, log: io.TextIOBase | None) -> Payload:
    """What staged guests' zygote needs (qemu_launcher.preload); none for cold boots or
    with the zygote turned off."""
    if cfg.boot != "restore" or not cfg.zygote:
        return Payload(detail="cold boots" if cfg.boot != "restore" else "EEH_ZYGOTE=0")
    payload = zygote_payload(rootfs, cfg.repo, cfg.guest_preload)
    out = log or sys.stderr
    if not payload.ok:
        print(f"assets: no python3 in the initramfs ({payload.detail}); staged guests "
              "start python3 after the go", file=out)
    for e in payload.errors:
        print(f"assets: warning: the guest preload module {e}", file=out)
    return payload


def ensure_initramfs(cfg: AssetConfig, rootfs: Path, log: io.TextIOBase | None = None) -> Path:
    """Build (once per root fs, init script and zygote payload) the busybox initramfs."""
    init = cfg.repo / INIT_FILE
    payload = _zygote_payload(cfg, rootfs, log)
    key = _digest([init, Path(__file__)],
                  extra=cfg.rootfs_key.encode() + payload.digest().encode())
    path = cfg.cache_dir / f"initramfs-{key}.cpio"
    if path.exists():  # (never touched: its mtime is part of saved states' key)
        return path
    kver = find_kernel(rootfs).name.removeprefix("vmlinuz-")
    buf = io.BytesIO()
    w = CpioWriter(buf)
    for d in ("bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"):
        w.directory(d)
    w.file("bin/busybox", (rootfs / "usr/bin/busybox").read_bytes()
           if (rootfs / "usr/bin/busybox").exists() else (rootfs / "bin/busybox").read_bytes(),
           0o755)
    w.file("init", init.read_bytes(), 0o755)
    names = []
    for rel in _module_closure(rootfs, kver, INITRAMFS_MODULES):
        raw = (rootfs / f"lib/modules/{kver}" / rel).read_bytes()
        if rel.endswith(".xz"):
            raw = lzma.decompress(raw)
        name = Path(rel).name.split(".ko")[0] + ".ko"
        w.file(f"lib/modules/{name}", raw)
        names.append(name)
    w.file("lib/modules/load-order", ("\n".join(names) + "\n").encode())
    if payload.ok:
        _add_zygote(w, payload)
    w.close()
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    _prune_initramfs(cfg.cache_dir)
    return path


def _prune_initramfs(cache: Path) -> None:
    """Keep the KEEP_INITRAMFS most recently built initramfs files: with the zygote's
    payload each is ~16 MB, and a new one comes with every edit of a guest module. (QEMU
    reads its initramfs at start: one removed later is not missed; one still wanted is
    built again.)"""
    found = []
    for p in cache.glob("initramfs-*.cpio"):
        with contextlib.suppress(FileNotFoundError):
            found.append((p.stat().st_mtime, p))
    for _, p in sorted(found, reverse=True)[KEEP_INITRAMFS:]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def _add_zygote(w: CpioWriter, payload: Payload) -> None:
    """The zygote, its preload list, and its root fs files at their root fs paths."""
    guest = [g for g, _ in payload.files] + [g for g, _ in payload.links]
    have = {"bin", "dev", "proc", "sys", "newroot", "lib", "lib/modules"}
    for d in directories([*guest, f"{ZYGOTE_DIR}/zygote.py"]):
        if d not in have:
            w.directory(d)
    for g, host in payload.files:
        st = host.stat()
        w.file(g, host.read_bytes(), 0o755 if st.st_mode & 0o111 else 0o644,
               mtime=int(st.st_mtime))
    for g, target in payload.links:
        w.symlink(g, target)
    w.file(f"{ZYGOTE_DIR}/zygote.py", payload.zygote)
    w.file(f"{ZYGOTE_DIR}/preload", payload.listing().encode())


def _qemu_version(argv: list[str], env: dict[str, str]) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([*argv, "--version"], capture_output=True, text=True,
                             env=env, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(x) for x in m.groups()) if m else None


def _has_vfio_user(argv: list[str], env: dict[str, str]) -> bool:
    try:
        out = subprocess.run([*argv, "-device", "help"], capture_output=True, text=True,
                             env=env, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return '"vfio-user-pci"' in out


def _with_fixes(binary: Path, fixed_dir: Path | None) -> FixedBinary:
    return ensure_fixed(binary, fixed_dir) if fixed_dir else FixedBinary(binary, ())


def find_qemu(rootfs: Path, prefer_host: bool = True, fixed_dir: Path | None = None,
              host_fixes: tuple[str, ...] = ()) -> QemuBinary:
    """A host QEMU >= MIN_QEMU with vfio-user-pci if there is one, else the root fs's own.

    With `fixed_dir`, a binary that `qemu_fixes` knows gets its upstream fixes, as a copy
    written into that directory. `host_fixes`: fixes a host QEMU is declared to have.
    """
    host = shutil.which("qemu-system-x86_64")
    if prefer_host and host:
        env = dict(os.environ)
        ver = _qemu_version([host], env)
        if ver and ver >= MIN_QEMU and _has_vfio_user([host], env):
            fixed = _with_fixes(Path(host), fixed_dir)
            fixes = tuple(dict.fromkeys(fixed.fixes + host_fixes))
            return QemuBinary((str(fixed.path),), (), ".".join(map(str, ver)), "host", fixes,
                              tuple(v.describe() for v in fixed.verdicts))
    loader = rootfs / "lib64/ld-linux-x86-64.so.2"
    libs = f"{rootfs}/lib/x86_64-linux-gnu:{rootfs}/usr/lib/x86_64-linux-gnu"
    binary = rootfs / "usr/bin/qemu-system-x86_64"
    fixed = _with_fixes(binary, fixed_dir)
    argv = [str(loader), "--library-path", libs, str(fixed.path),
            "-L", str(rootfs / "usr/share/qemu"), "-L", str(rootfs / "usr/share/seabios")]
    extra = (("QEMU_MODULE_DIR", str(rootfs / "usr/lib/x86_64-linux-gnu/qemu")),)
    env = dict(os.environ) | dict(extra)
    ver = _qemu_version(argv, env)
    if ver is None or ver < MIN_QEMU or not _has_vfio_user(argv, env):
        raise QemuNotFound(f"no QEMU >= {'.'.join(map(str, MIN_QEMU))} with vfio-user-pci "
                           f"(root fs QEMU version {ver})")
    return QemuBinary(tuple(argv), extra, ".".join(map(str, ver)), "rootfs", fixed.fixes,
                      tuple(v.describe() for v in fixed.verdicts))


def ensure_assets(cfg: AssetConfig, log: io.TextIOBase | None = None) -> GuestAssets:
    if not (cfg.repo / BUILD_SCRIPT).is_file():
        raise AssetError(f"{cfg.repo} is not an eeh-sriov checkout (no {BUILD_SCRIPT}): "
                         "guests need the guest image's recipe and the repository they "
                         "mount; run from a checkout of the project")
    rootfs = ensure_rootfs(cfg, log)
    # guests start python3 ~1.5 s sooner
    pyc = compile_guest_bytecode(rootfs, cfg.repo, cfg.guest_packages)
    if not pyc.ok:
        print(f"assets: guest bytecode not compiled ({pyc.detail}); guests compile the "
              "project's modules at every start", file=log or sys.stderr)
    kernel = find_kernel(rootfs)
    pvh, why = ensure_pvh_kernel(kernel, rootfs, cfg.cache_dir)  # ~0.6 s less per boot
    if pvh is None:
        print(f"assets: no PVH kernel ({why}); guests boot the compressed kernel",
              file=log or sys.stderr)
    return GuestAssets(rootfs=rootfs, kernel=kernel,
                       initramfs=ensure_initramfs(cfg, rootfs, log),
                       qemu=find_qemu(rootfs, fixed_dir=cfg.cache_dir / "qemu-fixed",
                                      host_fixes=cfg.host_qemu_fixes),
                       rootfs_lock=lock_status(cfg.repo / LOCK_FILE, rootfs),
                       pvh_kernel=pvh,
                       snapshots=cfg.cache_dir / "snapshots" if cfg.boot == "restore" else None)


def drift_report(cfg: AssetConfig, out: TextIO) -> int:
    """The root fs of `cfg` (built if needed) against the lock: every package that
    differs, and what each QEMU fix finds in its QEMU. 1 if VF removal would not work."""
    assets = ensure_assets(cfg)
    status = assets.rootfs_lock
    what = ("the archive's current versions" if cfg.track == "current"
            else f"the root fs of {LOCK_FILE}")
    print(f"drift: {what}: {assets.rootfs}", file=out)
    if not status.drift:
        print(f"drift: no package differs from {LOCK_FILE}", file=out)
    else:
        print(f"drift: {len(status.drift)} package(s) differ from {LOCK_FILE}:", file=out)
        for d in status.drift:
            print(f"drift:   {d.describe()}", file=out)
    print(f"drift: using {assets.qemu.describe()}", file=out)
    for finding in assets.qemu.findings:
        print(f"drift: fix {finding}", file=out)
    print(f"drift: {assets.qemu.removal()}", file=out)
    if status.drift and cfg.track == "current":
        print(f"drift: once the VM tests pass on these versions, adopt them: "
              f"{REFRESH_COMMAND} (then commit {LOCK_FILE})", file=out)
    return 0 if assets.qemu.removal_works else 1


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m qemu_launcher.assets")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("build", help="ensure root fs + initramfs, print paths")
    sub.add_parser("show", help="print what would be used")
    sub.add_parser("drift", help="build (EEH_ROOTFS=current: from the archive's current "
                   "versions) and say which packages differ from the lock and what every "
                   "QEMU fix finds")
    lock = sub.add_parser("lock", help=f"rewrite {LOCK_FILE} from a fresh unpinned build")
    lock.add_argument("--from", dest="source", type=Path, metavar="ROOTFS",
                      help="take the versions from this built root fs instead")
    args = p.parse_args(argv)
    cfg = AssetConfig.from_env()
    try:
        if args.cmd == "build":
            assets = ensure_assets(cfg)
            print(f"assets: root fs   {assets.rootfs}")
            print(f"assets: kernel    {assets.kernel}")
            print(f"assets: initramfs {assets.initramfs}")
            print(f"assets: using {assets.qemu.describe()}")
            print(f"assets: {assets.qemu.removal()}")
            print(f"assets: {assets.rootfs_lock.summary()}")
            return 0
        if args.cmd == "lock":
            refresh_lock(cfg, args.source)
            return 0
        if args.cmd == "drift":
            return drift_report(cfg, sys.stdout)
    except (AssetError, OSError) as e:
        print(f"assets: error: {e}", file=sys.stderr)
        return 1
    print(f"cache     {cfg.cache_dir}")
    built = "built" if (cfg.rootfs_dir / COMPLETE).exists() else "not built"
    print(f"root fs   {cfg.rootfs_dir} ({built})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
