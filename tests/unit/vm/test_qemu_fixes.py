"""Binary fixes bound to the code: found from the binary's symbols and unwind ranges, on
fixtures cut from real Debian QEMU binaries (tests/unit/vm/fixtures, written by
`python -m qemu_launcher.qemu_fixes BINARY --cut OUT`; tests/vm/test_qemu_fix.py
checks a cut answers as its whole binary does)."""

from __future__ import annotations

import ctypes.util
import dataclasses
from pathlib import Path

import pytest

from qemu_launcher.assets import AssetConfig
from qemu_launcher.elf import CutImage, ElfImage, branches_to
from qemu_launcher.qemu_fixes import (
    NOP5,
    VFIO_USER_MSIX_TEARDOWN,
    CallSiteFix,
    Outcome,
    Pattern,
)

FIXTURES = Path(__file__).parent / "fixtures"
FIX = VFIO_USER_MSIX_TEARDOWN
# trixie-backports qemu-system-x86 1:11.1.3+ds-2~bpo13+1, the archive's current
BPO = "qemu-11.1.3+ds-2~bpo13+1.json"
# sid qemu-system-x86 1:11.1.3+ds-1 (built against glibc 2.43): every address differs
SID = "qemu-11.1.3+ds-1-sid.json"


def _cut(name: str) -> CutImage:
    return CutImage.from_json((FIXTURES / name).read_text())


def _with_bytes(image: CutImage, address: int, new: bytes) -> CutImage:
    chunks = []
    for start, data in image.chunks:
        if start <= address < start + len(data):
            i = address - start
            data = data[:i] + new + data[i + len(new):]
        chunks.append((start, data))
    return CutImage(image.symbols, image.functions, chunks, image.name)


def _rel32_call(at: int, target: int) -> bytes:
    return b"\xe8" + (target - at - 5).to_bytes(4, "little", signed=True)


def _moved_copy(image: CutImage, delta: int) -> CutImage:
    """The image plus a second copy of its function `delta` bytes away, every branch to a
    named symbol re-aimed so it still lands there (as a linker would lay out a twin)."""
    (lo, hi), = image.functions
    body = bytearray(image.read(lo, hi - lo))
    for target in image.symbols.values():
        for b in branches_to(image, target, lo, hi):
            i = b.address - lo
            body[i:i + 5] = bytes([b.opcode]) + _rel32_call(b.address + delta, target)[1:]
    return CutImage(image.symbols, [(lo, hi), (lo + delta, hi + delta)],
                    [*image.chunks, (lo + delta, bytes(body))], image.name)


@pytest.mark.parametrize("fixture, site, function", [
    (BPO, 0x8282EB, (0x8282A0, 0x82833F)),
    (SID, 0x853527, (0x8534E0, 0x853577)),
])
def test_the_call_is_found_in_both_builds(fixture: str, site: int,
                                          function: tuple[int, int]) -> None:
    image = _cut(fixture)
    v = FIX.locate(image)
    assert v.outcome is Outcome.APPLIED, v.describe()
    assert v.site == site and v.functions == (function,) and v.works
    callee = image.symbols["memory_region_del_subregion"]
    assert image.read(site, 5) == _rel32_call(site, callee)


def test_the_current_build_has_the_call_where_the_old_one_had_it() -> None:
    # What was recorded of the build the archive dropped (1:11.1.3+ds-1~bpo13+1, sha256
    # e69417a0...): `e8 c0 5f 06 00` at 0x8282eb, a call of memory_region_del_subregion
    # at 0x88e2b0. The rebuild keeps them; only the file's hash changed.
    image = _cut(BPO)
    assert image.read(0x8282EB, 5) == bytes.fromhex("e8c05f0600")
    assert image.symbols["memory_region_del_subregion"] == 0x88E2B0


def test_a_build_without_the_call_has_the_upstream_fix() -> None:
    image = _cut(BPO)
    fixed = _with_bytes(image, 0x8282EB, NOP5)  # what the upstream patch leaves
    v = FIX.locate(fixed)
    assert v.outcome is Outcome.FIXED_UPSTREAM and v.site is None and v.works, v.describe()


def test_two_matching_calls_are_refused() -> None:
    v = FIX.locate(_moved_copy(_cut(SID), 0x4000))
    assert v.outcome is Outcome.AMBIGUOUS and not v.works, v.describe()
    assert "0x853527" in v.detail and f"{0x853527 + 0x4000:#x}" in v.detail


def test_a_call_between_other_instructions_is_not_patched() -> None:
    image = _cut(BPO)
    # the load of vdev->msix after the call becomes a load through another register
    changed = _with_bytes(image, 0x8282F0, bytes.fromhex("488b87"))
    v = FIX.locate(changed)
    assert v.outcome is Outcome.NO_MATCH and not v.works, v.describe()
    assert "0x8282eb" in v.detail


def test_a_teardown_no_longer_inlined_is_not_taken_for_the_upstream_fix() -> None:
    # the finalizer calls a static helper (no symbol, its own unwind range) that still
    # calls memory_region_del_subregion: the call is not gone, it moved
    image = _cut(BPO)
    callee = image.symbols["memory_region_del_subregion"]
    helper = 0x900000
    body = _rel32_call(helper, callee) + b"\xc3"
    moved = CutImage(image.symbols, [*image.functions, (helper, helper + len(body))],
                     [*image.chunks, (helper, body)], image.name)
    moved = _with_bytes(moved, 0x8282EB, _rel32_call(0x8282EB, helper))
    v = FIX.locate(moved)
    assert v.outcome is Outcome.NO_MATCH and not v.works, v.describe()
    assert f"{helper:#x}" in v.detail


def test_a_binary_without_the_symbols_is_used_as_it_is() -> None:
    image = _cut(BPO)
    del image.symbols["vfio_user_disconnect"]
    v = FIX.locate(image)
    assert v.outcome is Outcome.NO_MATCH and "no dynamic symbol vfio_user_disconnect" in v.detail


def test_a_function_that_lacks_an_anchor_is_not_the_finalizer() -> None:
    image = _cut(BPO)
    # the call of vfio_pci_put_device (at 0x828312) becomes a NOP: no function calls both
    v = FIX.locate(_with_bytes(image, 0x828312, NOP5))
    assert v.outcome is Outcome.NO_MATCH and "no function branches to all of" in v.detail


def test_patterns_and_fix_shape() -> None:
    p = Pattern("48 ?? 0c")
    assert p.matches(b"\x48\x00\x0c") and p.matches(b"\x48\xff\x0c")
    assert not p.matches(b"\x48\x00\x0d") and not p.matches(b"\x48\x00")
    with pytest.raises(ValueError, match="5 bytes"):
        dataclasses.replace(FIX, replacement=b"\x90")
    with pytest.raises(ValueError, match="anchor"):
        CallSiteFix("x", "u", "f", (), Pattern(""), Pattern(""))


def test_the_elf_reader_on_the_c_library() -> None:
    # a real shared object every host has: its functions start where their symbols are
    name = ctypes.util.find_library("c")
    path = next((p for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64")
                 if name and (p := Path(d) / name).exists()), None)
    if path is None:
        pytest.fail(f"no C library found ({name})")
    image = ElfImage.from_file(path)
    addr = image.symbol("memcpy") or image.symbol("puts")
    assert addr is not None
    f = image.function_at(image.symbol("puts") or addr)
    assert f is not None and f[0] == image.symbol("puts") and f[1] > f[0]
    assert image.symbol_at(f[0]) is not None
    assert image.read(f[0], 4) == image.data[image.file_offset(f[0]):][:4]


def test_declared_host_fixes_are_read_at_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EEH_QEMU_FIXES", "vfio-user-msix-teardown, other-fix")
    assert AssetConfig.from_env().host_qemu_fixes == ("vfio-user-msix-teardown", "other-fix")
    monkeypatch.delenv("EEH_QEMU_FIXES")
    assert AssetConfig.from_env().host_qemu_fixes == ()
