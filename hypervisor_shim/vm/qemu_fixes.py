"""Known upstream QEMU fixes applied to the exact Debian binary we run.

Debian's QEMU 11.1.3 (trixie-backports) aborts when a `vfio-user-pci` device with MSI-X is
finalized after `device_del`: its `vfio_user_msix_teardown()` removes the PBA region from
a BAR region that `object_finalize()` has already released
("memory_region_del_subregion: Assertion `subregion->container == mr' failed"). The
upstream fix ("vfio-user: Do not delete the subregion", Akihiko Odaki, qemu-devel,
October 2025) drops that one call. Debian's source packages are not reachable from these
machines, so instead of rebuilding QEMU we apply the same change to the binary: the
`call memory_region_del_subregion` inlined into `vfio_user_instance_finalize` becomes a
5-byte NOP (the register loads before it have no side effects).

A fix is bound to one binary by its SHA-256 and checks the exact bytes it replaces; a
binary it does not know is used as it is, and the launcher then knows the fix is absent.
The patched copy is written next to the root fs cache (temp file + rename), never over
the root fs itself.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from hypervisor_shim.vm.errors import AssetError

NOP5 = bytes.fromhex("0f1f440000")  # nopl 0x0(%rax,%rax,1)


@dataclass(frozen=True)
class BinaryFix:
    """One upstream fix as a byte replacement in one known binary."""

    name: str
    upstream: str
    binary_sha256: str
    offset: int
    original: bytes
    replacement: bytes

    def __post_init__(self) -> None:
        if len(self.original) != len(self.replacement):
            raise ValueError(f"fix {self.name}: replacement changes the length")


# Debian qemu-system-x86 1:11.1.3+ds-1~bpo13+1, amd64: /usr/bin/qemu-system-x86_64.
# At 0x8282eb: `call memory_region_del_subregion` (e8 c0 5f 06 00 -> 0x88e2b0, the
# exported symbol of that name) inside vfio_user_instance_finalize (0x8282a0), between
# the loads of vdev->bars[pba_bar].mr / msix->pba_region and g_free(pba_region).
VFIO_USER_MSIX_TEARDOWN = BinaryFix(
    name="vfio-user-msix-teardown",
    upstream="vfio-user: Do not delete the subregion (qemu-devel, 2025-10-10)",
    binary_sha256="e69417a0c13d9b38221e515c79f890babc5026508767fc0657fd0b83bbfe40c3",
    offset=0x8282EB,
    original=bytes.fromhex("e8c05f0600"),
    replacement=NOP5,
)
KNOWN_FIXES = (VFIO_USER_MSIX_TEARDOWN,)


@dataclass(frozen=True)
class FixedBinary:
    path: Path
    fixes: tuple[str, ...]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def apply_fixes(data: bytes, fixes: tuple[BinaryFix, ...]) -> bytes:
    """Return `data` with every fix applied; AssetError if a fix's bytes are not there."""
    out = bytearray(data)
    for fix in fixes:
        end = fix.offset + len(fix.original)
        found = bytes(out[fix.offset:end])
        if found != fix.original:
            raise AssetError(f"fix {fix.name}: expected {fix.original.hex()} at "
                             f"{fix.offset:#x}, found {found.hex() or 'end of file'}")
        out[fix.offset:end] = fix.replacement
    return bytes(out)


def ensure_fixed(binary: Path, out_dir: Path,
                 fixes: tuple[BinaryFix, ...] = KNOWN_FIXES) -> FixedBinary:
    """The fixed copy of `binary` (made once, in `out_dir`), or `binary` if no fix applies."""
    digest = sha256_of(binary)
    mine = tuple(f for f in fixes if f.binary_sha256 == digest)
    if not mine:
        return FixedBinary(binary, ())
    names = tuple(f.name for f in mine)
    target = out_dir / f"{binary.name}-{digest[:16]}-fixed"
    if target.exists():
        return FixedBinary(target, names)
    fixed = apply_fixes(binary.read_bytes(), mine)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(fixed)
    tmp.chmod(0o755)
    os.replace(tmp, target)
    return FixedBinary(target, names)
