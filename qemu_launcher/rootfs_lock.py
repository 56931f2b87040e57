"""The root fs lock: the exact Debian package versions the guest image is built from.

`qemu/rootfs.lock` lists every package installed in a known-good root fs, `name=version`,
one a line (what `dpkg-query --admindir ROOT/var/lib/dpkg -W` shows, without
architecture qualifiers). `qemu/build-rootfs.sh` pins apt to those versions. Debian's
archive keeps only the current version of each package in a suite, so a pin can become
unavailable: apt then installs what the archive has, and the difference is reported, by
package, with what it changes for this project (`PackageDrift.effect`), in the build
output, on each run's stderr and in each run's machine.json.

Pure functions only: no apt, no network (unit-tested).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from qemu_launcher.errors import AssetError
from qemu_launcher.qemu_fixes import VFIO_USER_MSIX_TEARDOWN, examine

LOCK_FILE = "qemu/rootfs.lock"
REFRESH_COMMAND = "python -m qemu_launcher.assets lock"
LOCK_HEADER = f"""\
# Exact package versions of the guest root fs (Debian trixie + trixie-backports), one
# "name=version" a line: every package installed in the root fs this was taken from.
# qemu/build-rootfs.sh pins apt to these versions; a version the archive no longer has is
# replaced by what it has, and the build and every run (machine.json) say so.
# Part of the root fs cache key. Regenerate from a fresh unpinned build with:
#   {REFRESH_COMMAND}
"""

_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]+")
_VERSION = re.compile(r"[0-9A-Za-z.+~:-]+")

# What a different version of a package changes for this project, first match wins.
_EFFECTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("qemu-system-x86",),
     "the root fs QEMU differs from the tested one: VF removal works only where the fix "
     f"{VFIO_USER_MSIX_TEARDOWN.name} (qemu_launcher/qemu_fixes.py) finds its call site, "
     "or the call is gone upstream"),
    (("qemu-*", "seabios", "ipxe-qemu", "libslirp0", "libfdt1"),
     "QEMU's modules, firmware or libraries differ from the tested set"),
    (("linux-image-*",),
     "the guest kernel differs (the initramfs takes its 9p modules; PCI hot-plug and "
     "sysfs behaviour are untested on it)"),
    (("python3", "python3.*", "libpython3*", "python3-minimal"),
     "the guest's Python differs (guest_drivers run on it)"),
    (("python3-pyudev", "python3-scapy"),
     "a library of the guest drivers differs"),
    (("udev", "systemd*", "libudev*", "libsystemd*"),
     "the guest's udev differs (device events, hot-plug)"),
    (("busybox-static",), "the initramfs busybox differs"),
    (("pciutils", "libpci*", "pci.ids"), "lspci output in the guest may differ"),
)


NO_KNOWN_EFFECT = "no known effect on this project"


def effect_of(package: str) -> str:
    for patterns, text in _EFFECTS:
        if any(fnmatch.fnmatchcase(package, p) for p in patterns):
            return text
    return NO_KNOWN_EFFECT


@dataclass(frozen=True)
class PackageDrift:
    """One package whose installed version is not the locked one."""

    package: str
    locked: str | None  # None: not in the lock (a new dependency)
    built: str | None  # None: not installed (no longer needed, or renamed)
    note: str = ""  # what was found in this root fs about the effect

    @property
    def effect(self) -> str:
        text = effect_of(self.package)
        return f"{text}; {self.note}" if self.note else text

    def describe(self) -> str:
        if self.locked is None:
            what = f"{self.package} is not in the lock (built {self.built})"
        elif self.built is None:
            what = f"{self.package} (locked {self.locked}) is not installed"
        else:
            what = f"{self.package} differs: locked {self.locked}, built {self.built}"
        return f"{what}: {self.effect}"


@dataclass(frozen=True)
class LockStatus:
    """How a built root fs compares with the lock it was built from."""

    lock: str = LOCK_FILE
    locked: bool = True  # False: there was no lock file, the build was unpinned
    drift: tuple[PackageDrift, ...] = ()

    def summary(self) -> str:
        """One line."""
        if not self.locked:
            return f"no {self.lock}: the root fs was built unpinned ({REFRESH_COMMAND})"
        if not self.drift:
            return f"root fs matches {self.lock}"
        known = [d for d in self.drift if effect_of(d.package) != NO_KNOWN_EFFECT]
        shown = ", ".join(f"{d.package} [{d.effect}]" for d in known) or \
            "none with a known effect on this project"
        return (f"root fs differs from {self.lock} in {len(self.drift)} package(s) (pinned "
                f"versions the archive no longer has, or that no longer install together): "
                f"{shown}; see machine.json or refresh the lock ({REFRESH_COMMAND})")

    def as_json(self) -> dict[str, object]:
        return {"lock": self.lock, "locked": self.locked, "matches": self.locked and
                not self.drift, "differs": [d.describe() for d in self.drift]}


def parse_lock(text: str, source: str = LOCK_FILE) -> dict[str, str]:
    """`name=version` lines (comments and blank lines ignored) -> {name: version}."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = (s.strip() for s in line.partition("="))
        if not sep or not _NAME.fullmatch(name) or not _VERSION.fullmatch(version):
            raise AssetError(f"{source}:{n}: not a 'name=version' line: {raw!r}")
        if name in out:
            raise AssetError(f"{source}:{n}: {name} is listed twice")
        out[name] = version
    return out


def format_lock(packages: Mapping[str, str]) -> str:
    return LOCK_HEADER + "".join(f"{n}={v}\n" for n, v in sorted(packages.items()))


def parse_dpkg_status(text: str) -> dict[str, str]:
    """Installed packages from a dpkg status file: {name: version}."""
    out: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue  # continuation lines (descriptions, conffiles)
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Status", "").split()[-1:] == ["installed"] and "Package" in fields:
            out[fields["Package"]] = fields["Version"]
    return out


def installed_packages(rootfs: Path) -> dict[str, str]:
    path = rootfs / "var/lib/dpkg/status"
    try:
        return parse_dpkg_status(path.read_text(errors="replace"))
    except OSError as e:
        raise AssetError(f"cannot read the root fs's package list {path}: {e}") from e


def compare(locked: Mapping[str, str], built: Mapping[str, str]) -> tuple[PackageDrift, ...]:
    """Every package whose version differs, is missing, or is new; sorted by name."""
    names = sorted(set(locked) | set(built))
    return tuple(PackageDrift(n, locked.get(n), built.get(n)) for n in names
                 if locked.get(n) != built.get(n))


def qemu_fix_note(rootfs: Path) -> str:
    """What qemu_launcher/qemu_fixes.py finds in the root fs's QEMU binary."""
    binary = rootfs / "usr/bin/qemu-system-x86_64"
    if not binary.is_file():
        return "the root fs has no QEMU binary"
    return "; ".join(v.describe() for v in examine(binary))


def lock_status(lock_path: Path, rootfs: Path, lock_name: str = LOCK_FILE) -> LockStatus:
    """Compare the root fs at `rootfs` with the lock at `lock_path` (absent: unpinned)."""
    if not lock_path.exists():
        return LockStatus(lock_name, locked=False)
    locked = parse_lock(lock_path.read_text(), lock_name)
    drift = tuple(
        dataclasses.replace(d, note=qemu_fix_note(rootfs)) if d.package == "qemu-system-x86"
        else d
        for d in compare(locked, installed_packages(rootfs)))
    return LockStatus(lock_name, True, drift)
