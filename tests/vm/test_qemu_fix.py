"""The binary fix on the root fs's real QEMU: found from the binary's own tables, it
replaces exactly the call it claims to replace, and a cut of the binary (what the unit
tests' fixtures are) answers as the whole binary does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from qemu_launcher.assets import GuestAssets
from qemu_launcher.elf import CutImage, ElfImage, cut
from qemu_launcher.qemu_fixes import (
    NOP5,
    VFIO_USER_MSIX_TEARDOWN,
    Outcome,
    sha256_of,
)

FIX = VFIO_USER_MSIX_TEARDOWN
FIXTURES = Path(__file__).parents[1] / "unit" / "vm" / "fixtures"


def _nm_symbol(binary: Path, name: str) -> int:
    """The symbol's address as binutils reads it: a second opinion on qemu_launcher.elf's."""
    out = subprocess.run(["nm", "-D", "--defined-only", str(binary)], check=True,
                         capture_output=True, text=True).stdout
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == name:
            return int(parts[0], 16)
    raise AssertionError(f"{name} not exported by {binary}")


def test_the_fix_finds_and_replaces_the_call(assets: GuestAssets) -> None:
    original = assets.rootfs / "usr/bin/qemu-system-x86_64"
    image = ElfImage.from_file(original)
    v = FIX.locate(image)
    # Debian's 11.1.3 has the call; a build with the upstream fix would say so instead
    assert v.outcome in (Outcome.APPLIED, Outcome.FIXED_UPSTREAM), v.describe()
    assert assets.qemu.removal_works, assets.qemu.removal()
    if v.outcome is Outcome.FIXED_UPSTREAM:
        assert FIX.name in assets.qemu.fixes
        return
    assert v.site is not None
    callee = _nm_symbol(original, FIX.callee)
    assert image.symbol(FIX.callee) == callee
    off = image.file_offset(v.site, 5)
    data = original.read_bytes()
    assert data[off:off + 5] == b"\xe8" + (callee - v.site - 5).to_bytes(4, "little",
                                                                         signed=True)
    # the site is inside the function that calls both anchors
    lo, hi = v.functions[0]
    assert lo <= v.site < hi
    # the copy the launcher runs differs from the original in exactly those 5 bytes
    if assets.qemu.source == "rootfs":
        assert FIX.name in assets.qemu.fixes
        fixed = Path(next(a for a in assets.qemu.argv if a.endswith("-fixed"))).read_bytes()
        assert len(fixed) == len(data)
        assert fixed[:off] == data[:off] and fixed[off + 5:] == data[off + 5:]
        assert fixed[off:off + 5] == NOP5


def test_a_cut_answers_as_the_whole_binary(assets: GuestAssets) -> None:
    original = assets.rootfs / "usr/bin/qemu-system-x86_64"
    image = ElfImage.from_file(original)
    whole = FIX.locate(image)
    piece = cut(image, [FIX.callee, *FIX.anchors], whole.functions)
    again = CutImage.from_json(piece.to_json())
    assert FIX.locate(again) == FIX.locate(piece) == whole
    # the unit tests' fixture of this very build, if it is one, is what a cut gives now
    digest = sha256_of(original)[:16]
    for fixture in FIXTURES.glob("*.json"):
        stored = CutImage.from_json(fixture.read_text())
        if stored.name.endswith(digest):
            assert stored.to_json() == CutImage(piece.symbols, piece.functions,
                                                piece.chunks, stored.name).to_json()
