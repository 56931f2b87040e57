"""The root fs lock: parsing, comparison, and how drift is reported (no network, no apt).

The builds here run a stand-in for qemu/build-rootfs.sh that writes only a dpkg status
file, with the versions "the archive" has today.
"""

from __future__ import annotations

import dataclasses
import io
import json
import textwrap
from pathlib import Path

import pytest

from qemu_launcher.assets import (
    BUILD_SCRIPT,
    COMPLETE,
    AssetConfig,
    GuestAssets,
    QemuBinary,
    ensure_rootfs,
    refresh_lock,
)
from qemu_launcher.config import MachineConfig
from qemu_launcher.errors import AssetError
from qemu_launcher.machine import Machine
from qemu_launcher.rootfs_lock import (
    LOCK_FILE,
    NO_KNOWN_EFFECT,
    LockStatus,
    PackageDrift,
    compare,
    format_lock,
    lock_status,
    parse_dpkg_status,
    parse_lock,
    qemu_fix_note,
)

QEMU_LOCKED = "1:11.1.3+ds-1~bpo13+1"
QEMU_NEWER = "1:11.2.0+ds-1~bpo13+1"

STATUS = """\
Package: bash
Essential: yes
Status: install ok installed
Priority: required
Version: 5.2.37-2+b10
Description: GNU Bourne Again SHell
 Bash is an sh-compatible command language interpreter.
 .
 Version: not a field, a description line

Package: qemu-system-x86
Status: install ok installed
Architecture: amd64
Version: {qemu}
Conffiles:
 /etc/qemu-ifup 1234abcd

Package: old-config-only
Status: deinstall ok config-files
Version: 1.0-1
"""


def test_parse_lock_reads_name_version_lines() -> None:
    text = "# header\n\nbash=5.2.37-2+b10\nqemu-system-x86 = 1:11.1.3+ds-1~bpo13+1  # QEMU\n"
    assert parse_lock(text) == {"bash": "5.2.37-2+b10", "qemu-system-x86": QEMU_LOCKED}


@pytest.mark.parametrize(("text", "problem"), [
    ("bash 5.2\n", "rootfs.lock:1: not a 'name=version' line"),
    ("ok=1\nbash=\n", "rootfs.lock:2: not a 'name=version' line"),
    ("Bash=5.2\n", "not a 'name=version' line"),
    ("bash=5.2 beta\n", "not a 'name=version' line"),
    ("bash=5.2\nbash=5.3\n", "rootfs.lock:2: bash is listed twice"),
])
def test_parse_lock_refuses_what_is_not_a_lock(text: str, problem: str) -> None:
    with pytest.raises(AssetError, match=problem):
        parse_lock(text)


def test_format_and_parse_round_trip() -> None:
    packages = {"zlib1g": "1:1.3.dfsg+really1.3.1-1+b1", "adduser": "3.152"}
    text = format_lock(packages)
    assert text.startswith("#")
    assert "python -m qemu_launcher.assets lock" in text
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["adduser=3.152", "zlib1g=1:1.3.dfsg+really1.3.1-1+b1"]  # sorted
    assert parse_lock(text) == packages


def test_dpkg_status_gives_installed_packages_only() -> None:
    assert parse_dpkg_status(STATUS.format(qemu=QEMU_LOCKED)) == {
        "bash": "5.2.37-2+b10", "qemu-system-x86": QEMU_LOCKED}


def test_compare_names_every_difference() -> None:
    locked = {"bash": "5.2", "qemu-system-x86": QEMU_LOCKED, "linux-image-6.12.117": "1"}
    built = {"bash": "5.2", "qemu-system-x86": QEMU_NEWER, "linux-image-6.12.120": "1"}
    assert compare(locked, locked) == ()
    assert compare(locked, built) == (
        PackageDrift("linux-image-6.12.117", "1", None),
        PackageDrift("linux-image-6.12.120", None, "1"),
        PackageDrift("qemu-system-x86", QEMU_LOCKED, QEMU_NEWER),
    )


def test_drift_says_what_it_changes() -> None:
    qemu = PackageDrift("qemu-system-x86", QEMU_LOCKED, QEMU_NEWER)
    assert qemu.describe().startswith(
        f"qemu-system-x86 differs: locked {QEMU_LOCKED}, built {QEMU_NEWER}: ")
    assert "VF removal works only where the fix vfio-user-msix-teardown" in qemu.describe()
    kernel = PackageDrift("linux-image-6.12.120+deb13-amd64", None, "6.12.120-1")
    assert kernel.describe().startswith(
        "linux-image-6.12.120+deb13-amd64 is not in the lock (built 6.12.120-1): "
        "the guest kernel differs")
    gone = PackageDrift("python3-scapy", "2.6.1+dfsg-1", None)
    assert gone.describe() == ("python3-scapy (locked 2.6.1+dfsg-1) is not installed: "
                               "a library of the guest drivers differs")
    assert PackageDrift("tzdata", "a", "b").effect == NO_KNOWN_EFFECT


def test_lock_status_summary_is_one_line_and_names_the_effects() -> None:
    assert LockStatus().summary() == "root fs matches qemu/rootfs.lock"
    assert LockStatus().as_json() == {"lock": LOCK_FILE, "locked": True, "matches": True,
                                      "differs": []}
    drift = (PackageDrift("qemu-system-x86", QEMU_LOCKED, QEMU_NEWER),
             PackageDrift("tzdata", "a", "b"))
    status = LockStatus(drift=drift)
    line = status.summary()
    assert "\n" not in line
    assert line.startswith("root fs differs from qemu/rootfs.lock in 2 package(s)")
    assert "qemu-system-x86 [the root fs QEMU differs from the tested one" in line
    assert "tzdata" not in line  # no known effect: in machine.json, not in the warning
    record = status.as_json()
    assert record["matches"] is False
    assert record["differs"] == [d.describe() for d in drift]
    unpinned = LockStatus(locked=False)
    assert unpinned.as_json()["matches"] is False
    assert "built unpinned" in unpinned.summary()


def _fake_recipe(repo: Path, qemu_version: str, fail_pinned: bool = False) -> None:
    """A build script that 'installs' bash and qemu-system-x86 at `qemu_version`."""
    (repo / "qemu").mkdir(parents=True, exist_ok=True)
    status = STATUS.format(qemu=qemu_version)
    fail = 'if [ -n "${2:-}" ]; then echo "E: Unable to satisfy dependencies"; exit 100; fi'
    (repo / BUILD_SCRIPT).write_text(textwrap.dedent(f"""\
        set -eu
        {fail if fail_pinned else ""}
        echo "building into $1 with lock '${{2:-}}'"
        mkdir -p "$1/var/lib/dpkg" "$1/usr/bin"
        echo "QEMU {qemu_version}" >"$1/usr/bin/qemu-system-x86_64"
        cat >"$1/var/lib/dpkg/status" <<'STATUS'
        """) + status + "STATUS\n")
    (repo / "qemu/rootfs-packages.txt").write_text("qemu-system-x86/trixie-backports\nbash\n")


def _lock(repo: Path, qemu_version: str = QEMU_LOCKED) -> None:
    (repo / LOCK_FILE).write_text(
        format_lock({"bash": "5.2.37-2+b10", "qemu-system-x86": qemu_version}))


def test_build_pinned_to_a_version_the_archive_has(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_LOCKED)
    _lock(repo)
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    out = io.StringIO()
    rootfs = ensure_rootfs(cfg, out)
    assert "pinned to qemu/rootfs.lock" in out.getvalue()
    assert "assets: root fs matches qemu/rootfs.lock" in out.getvalue()
    log = (tmp_path / "cache" / f"rootfs-{cfg.rootfs_key}.build.log").read_text()
    assert f"with lock '{repo / LOCK_FILE}'" in log  # the recipe got the lock
    info = json.loads((rootfs / COMPLETE).read_text())
    assert info["pinned"] is True and info["rootfs_lock"]["matches"] is True


def test_a_pinned_version_gone_from_the_archive_is_reported(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_NEWER)  # Debian published a new QEMU
    _lock(repo)
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    out = io.StringIO()
    rootfs = ensure_rootfs(cfg, out)
    text = out.getvalue()
    assert "assets: warning: the root fs differs from qemu/rootfs.lock" in text
    assert (f"assets:   qemu-system-x86 differs: locked {QEMU_LOCKED}, built {QEMU_NEWER}: "
            in text)
    assert "VF removal works only where the fix vfio-user-msix-teardown" in text
    assert "vfio-user-msix-teardown: no match (cannot read" in text
    assert "python -m qemu_launcher.assets lock" in text
    assert "bash" not in text  # matched its pin
    info = json.loads((rootfs / COMPLETE).read_text())
    assert info["rootfs_lock"]["matches"] is False
    # ... and every run's machine.json says so
    status = lock_status(repo / LOCK_FILE, rootfs)
    q = QemuBinary(("qemu-system-x86_64",), (), "11.2.0", "host")
    assets = GuestAssets(rootfs=rootfs, kernel=tmp_path / "k", initramfs=tmp_path / "i",
                         qemu=q, rootfs_lock=status)
    vm = Machine(MachineConfig(), assets, run_dir=tmp_path / "run", repo=repo)
    recorded = json.loads(json.dumps(vm.summary))["rootfs_lock"]
    assert recorded["matches"] is False
    assert recorded["differs"] == [
        PackageDrift("qemu-system-x86", QEMU_LOCKED, QEMU_NEWER, qemu_fix_note(rootfs)
                     ).describe()]
    assert "no match" in recorded["differs"][0]


def test_the_qemu_note_says_what_the_fix_finds(tmp_path: Path) -> None:
    # what it finds in real binaries: tests/unit/vm/test_qemu_fixes.py (cut fixtures)
    # and tests/vm/test_qemu_fix.py (the root fs's own QEMU)
    assert qemu_fix_note(tmp_path) == "the root fs has no QEMU binary"
    binary = tmp_path / "usr/bin/qemu-system-x86_64"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\xe8\xc0\x5f\x06\x00 a QEMU")
    assert qemu_fix_note(tmp_path).startswith(
        "vfio-user-msix-teardown: no match (cannot read ")
    assert "not an ELF file" in qemu_fix_note(tmp_path)


def test_a_pinned_build_that_apt_cannot_resolve_is_redone_unpinned(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_NEWER, fail_pinned=True)
    _lock(repo)
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    out = io.StringIO()
    rootfs = ensure_rootfs(cfg, out)
    assert "the pinned build failed (exit 100" in out.getvalue()
    assert "qemu-system-x86 differs" in out.getvalue()
    assert json.loads((rootfs / COMPLETE).read_text())["pinned"] is False


def test_the_cache_key_covers_the_lock(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_LOCKED)
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    unpinned = cfg.rootfs_key
    _lock(repo)
    pinned = cfg.rootfs_key
    _lock(repo, QEMU_NEWER)
    assert len({unpinned, pinned, cfg.rootfs_key}) == 3


def test_refresh_writes_the_lock_and_keeps_the_build(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_NEWER)
    _lock(repo)
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    out = io.StringIO()
    new = refresh_lock(cfg, out=out)
    assert new == {"bash": "5.2.37-2+b10", "qemu-system-x86": QEMU_NEWER}
    assert parse_lock((repo / LOCK_FILE).read_text()) == new
    text = out.getvalue()
    assert f"qemu-system-x86 differs: locked {QEMU_LOCKED}, now {QEMU_NEWER}" in text
    # the unpinned build is the root fs of the new lock: used as it is, not rebuilt
    assert (cfg.rootfs_dir / COMPLETE).exists()
    again = io.StringIO()
    assert ensure_rootfs(cfg, again) == cfg.rootfs_dir
    assert again.getvalue() == ""
    assert not list((tmp_path / "cache").glob("rootfs-refresh.tmp-*"))


def test_refresh_from_a_built_rootfs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_LOCKED)
    built = tmp_path / "built"
    (built / "var/lib/dpkg").mkdir(parents=True)
    (built / "var/lib/dpkg/status").write_text(STATUS.format(qemu=QEMU_LOCKED))
    cfg = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    out = io.StringIO()
    refresh_lock(cfg, source=built, out=out)
    assert parse_lock((repo / LOCK_FILE).read_text())["qemu-system-x86"] == QEMU_LOCKED
    assert not (tmp_path / "cache").exists()  # nothing built
    with pytest.raises(AssetError, match="cannot read the root fs's package list"):
        refresh_lock(cfg, source=tmp_path / "nowhere", out=out)


def test_the_drift_build_takes_current_versions_under_its_own_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    _fake_recipe(repo, QEMU_NEWER)  # what the archive has today
    _lock(repo)
    locked = AssetConfig(cache_dir=tmp_path / "cache", repo=repo)
    monkeypatch.setenv("EEH_ROOTFS", "current")
    monkeypatch.setenv("EEH_CACHE_DIR", str(tmp_path / "cache"))
    current = dataclasses.replace(AssetConfig.from_env(), repo=repo)
    assert current.track == "current" and not current.pinned and locked.pinned
    assert current.rootfs_key.startswith("current-") and current.rootfs_key != locked.rootfs_key
    lock_before = (repo / LOCK_FILE).read_text()
    out = io.StringIO()
    rootfs = ensure_rootfs(current, out)
    assert "the archive's current versions" in out.getvalue()
    log = (tmp_path / "cache" / f"rootfs-{current.rootfs_key}.build.log").read_text()
    assert "with lock ''" in log  # the recipe got no lock
    assert (repo / LOCK_FILE).read_text() == lock_before  # the lock is untouched
    status = lock_status(repo / LOCK_FILE, rootfs)
    assert [d.package for d in status.drift] == ["qemu-system-x86"]
    # the lock does not enter the drift build's key: a new lock reuses it
    keys = current.rootfs_key, locked.rootfs_key
    _lock(repo, QEMU_NEWER)
    assert current.rootfs_key == keys[0] and locked.rootfs_key != keys[1]
    monkeypatch.setenv("EEH_ROOTFS", "newest")
    with pytest.raises(AssetError, match="EEH_ROOTFS: 'newest' is not one of lock, current"):
        AssetConfig.from_env()
