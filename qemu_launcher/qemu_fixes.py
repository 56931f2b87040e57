"""Known upstream QEMU fixes, applied to the binary we run where its code matches.

Every vfio-user-pci released so far aborts when a device with MSI-X is finalized after
`device_del`: `vfio_user_msix_teardown()` removes the PBA region from a BAR region that
`object_finalize()` has already released ("memory_region_del_subregion: Assertion
`subregion->container == mr' failed"). The upstream fix ("vfio-user: Do not delete the
subregion", qemu-devel, October 2025) drops that one call. Debian's source packages are
not reachable from these machines, so instead of rebuilding QEMU the same change is made
to the binary: the `call memory_region_del_subregion` (inlined into the static
`vfio_user_instance_finalize`) becomes a 5-byte NOP. The loads before it have no side
effects and nothing after it uses its (void) result.

A fix is bound to the code, not to the file (a Debian rebuild with no source change gives
new bytes elsewhere in the file; another build moves every address). `CallSiteFix.locate`
finds the call from the binary's own tables (qemu_launcher.elf):
  1. the callee's address from the dynamic symbol table;
  2. the enclosing function: the one (by the unwind table's ranges, since it is static)
     that also branches to every anchor symbol: `vfio_pci_put_device` and
     `vfio_user_disconnect`, which only the finalizer calls both of;
  3. in it, and in the static functions it calls (should the compiler stop inlining the
     teardown), every `e8` whose displacement, computed from the two addresses, lands
     on the callee, with the instructions around it matching a byte signature.
Exactly one match: the copy is patched, after checking the five bytes are that call. No
call to the callee left in the finalizer: the binary has the upstream fix. Anything else
(no finalizer, a call whose neighbours differ, two matches) leaves the binary as it is,
and removal of an MSI-X function is refused (machine.UNPLUG_FIX), with the reason.

The patched copy is written next to the root fs cache (temp file + rename), never over
the root fs itself, keyed by the original's SHA-256 (so a different binary never reuses
it).

    python -m qemu_launcher.qemu_fixes BINARY            # the verdict for BINARY
    python -m qemu_launcher.qemu_fixes BINARY --cut OUT  # cut a test fixture
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from qemu_launcher.elf import (
    CALL_REL32,
    Branch,
    CodeImage,
    ElfError,
    ElfImage,
    branches_anywhere,
    branches_in,
    branches_to,
    cut,
)
from qemu_launcher.errors import AssetError

NOP5 = bytes.fromhex("0f1f440000")  # nopl 0x0(%rax,%rax,1)


class Outcome(Enum):
    APPLIED = "applied"                # exactly one site: patched in the copy
    FIXED_UPSTREAM = "fixed upstream"  # the function is there and the call is gone
    NO_MATCH = "no match"              # not the code the fix knows: used as it is
    AMBIGUOUS = "ambiguous"            # more than one site: refused, used as it is


@dataclass(frozen=True)
class Verdict:
    """What a fix found in one binary."""

    fix: str
    outcome: Outcome
    detail: str
    site: int | None = None  # the call's virtual address, for APPLIED
    functions: tuple[tuple[int, int], ...] = ()  # the functions searched

    @property
    def works(self) -> bool:
        """Whether what the fix is for (removal of an MSI-X function) works with it."""
        return self.outcome in (Outcome.APPLIED, Outcome.FIXED_UPSTREAM)

    def describe(self) -> str:
        return f"{self.fix}: {self.outcome.value} ({self.detail})"


@dataclass(frozen=True)
class Pattern:
    """Bytes with wildcards, written as hex pairs and `??`: "48 8b bc ?? b0 0c 00 00"."""

    text: str
    items: tuple[int | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        items = tuple(None if t == "??" else int(t, 16) for t in self.text.split())
        object.__setattr__(self, "items", items)

    def __len__(self) -> int:
        return len(self.items)

    def matches(self, data: bytes) -> bool:
        return len(data) == len(self.items) and all(
            want is None or want == got for want, got in zip(self.items, data, strict=True))


@dataclass(frozen=True)
class CallSiteFix:
    """Replace one `call CALLEE` inside the function that branches to every anchor."""

    name: str
    upstream: str
    callee: str
    anchors: tuple[str, ...]
    before: Pattern  # the instruction(s) right before the call
    after: Pattern   # the instruction(s) right after it
    replacement: bytes = NOP5

    def __post_init__(self) -> None:
        if len(self.replacement) != 5:
            raise ValueError(f"fix {self.name}: a call rel32 is 5 bytes, the replacement "
                             f"is {len(self.replacement)}")
        if not self.anchors:
            raise ValueError(f"fix {self.name}: needs an anchor to find its function")

    def locate(self, image: CodeImage) -> Verdict:
        def verdict(outcome: Outcome, detail: str, site: int | None = None,
                    functions: tuple[tuple[int, int], ...] = ()) -> Verdict:
            return Verdict(self.name, outcome, detail, site, functions)

        names = (self.callee, *self.anchors)
        addr = {n: image.symbol(n) for n in names}
        missing = [n for n in names if addr[n] is None]
        if missing:
            return verdict(Outcome.NO_MATCH, f"no dynamic symbol {', '.join(missing)}")
        targets = {n: a for n, a in addr.items() if a is not None}
        first, *rest = self.anchors
        found = {image.function_at(b.address) for b in branches_anywhere(image, targets[first])}
        homes = tuple(sorted(
            f for f in found if f is not None
            and all(branches_to(image, targets[a], *f) for a in rest)))
        if not homes:
            return verdict(Outcome.NO_MATCH,
                           f"no function branches to all of {', '.join(self.anchors)}")
        searched = homes + _static_callees(image, homes)
        calls = [b for f in searched for b in branches_to(image, targets[self.callee], *f)
                 if b.opcode == CALL_REL32]
        sites = [b for b in calls if self._signature_matches(image, b)]
        where = ", ".join(f"{lo:#x}..{hi:#x}" for lo, hi in homes)
        if len(sites) == 1:
            return verdict(Outcome.APPLIED, f"call {self.callee} at {sites[0].address:#x} in "
                           f"the function at {where}", sites[0].address, searched)
        if len(sites) > 1:
            at = ", ".join(f"{b.address:#x}" for b in sites)
            return verdict(Outcome.AMBIGUOUS, f"{len(sites)} calls of {self.callee} match "
                           f"({at}); patching none", functions=searched)
        if not calls and len(homes) == 1:
            return verdict(Outcome.FIXED_UPSTREAM, f"the function at {where} no longer "
                           f"calls {self.callee}", functions=searched)
        if not calls:
            return verdict(Outcome.NO_MATCH, f"{len(homes)} functions branch to every "
                           "anchor and none calls the callee", functions=searched)
        at = ", ".join(f"{b.address:#x}" for b in calls)
        return verdict(Outcome.NO_MATCH, f"the calls of {self.callee} at {at} are not "
                       "between the instructions the fix knows", functions=searched)

    def _signature_matches(self, image: CodeImage, call: Branch) -> bool:
        try:
            before = image.read(call.address - len(self.before), len(self.before))
            after = image.read(call.address + 5, len(self.after))
        except ElfError:
            return False
        return self.before.matches(before) and self.after.matches(after)


def _static_callees(image: CodeImage, homes: tuple[tuple[int, int], ...]
                    ) -> tuple[tuple[int, int], ...]:
    """Functions without a symbol that `homes` call directly (an un-inlined helper)."""
    out = []
    for lo, hi in homes:
        for b in branches_in(image, lo, hi):
            if b.opcode != CALL_REL32 or image.symbol_at(b.target) is not None:
                continue
            with_range = _function_starting_at(image, b.target)
            if with_range is not None and with_range not in homes:
                out.append(with_range)
    return tuple(sorted(set(out)))


def _function_starting_at(image: CodeImage, address: int) -> tuple[int, int] | None:
    try:
        f = image.function_at(address)
    except ElfError:
        return None
    return f if f is not None and f[0] == address else None


# In vfio_user_instance_finalize (hw/vfio-user/pci.c), with vfio_user_msix_teardown
# inlined: `mov rdi, [rbx + rax*s + bars[].mr]`, then the call, then the load of
# vdev->msix->pba_region for g_free: `mov rax, [rbx + msix]; mov rdi, [rax + pba]; call`.
# Debian's trixie-backports build and sid's (built against glibc 2.43, with different code
# generation: `imul` and a different SIB byte before the call) both have this shape.
VFIO_USER_MSIX_TEARDOWN = CallSiteFix(
    name="vfio-user-msix-teardown",
    upstream="vfio-user: Do not delete the subregion (qemu-devel, 2025-10-10)",
    callee="memory_region_del_subregion",
    anchors=("vfio_user_disconnect", "vfio_pci_put_device"),
    before=Pattern("48 8b bc ?? ?? ?? ?? ??"),
    after=Pattern("48 8b 83 ?? ?? ?? ?? 48 8b 78 ?? e8"),
)
KNOWN_FIXES = (VFIO_USER_MSIX_TEARDOWN,)


@dataclass(frozen=True)
class FixedBinary:
    path: Path
    fixes: tuple[str, ...]  # applied to the copy, or present upstream: what works
    verdicts: tuple[Verdict, ...] = ()

    def verdict(self, name: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.fix == name), None)


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def examine(binary: Path, fixes: tuple[CallSiteFix, ...] = KNOWN_FIXES) -> tuple[Verdict, ...]:
    """Each fix's verdict on `binary`; a file that is no ELF we read gets NO_MATCH."""
    try:
        image = ElfImage.from_file(binary)
    except (ElfError, OSError, ValueError, IndexError) as e:
        return tuple(Verdict(f.name, Outcome.NO_MATCH, f"cannot read {binary}: {e}")
                     for f in fixes)
    return tuple(f.locate(image) for f in fixes)


def apply_fixes(image: ElfImage, fixes: tuple[CallSiteFix, ...],
                verdicts: tuple[Verdict, ...]) -> bytes:
    """The image's file with every APPLIED verdict's call replaced; AssetError if the five
    bytes there are not `call callee` (the verdict and the file disagree)."""
    out = bytearray(image.data)
    by_name = {f.name: f for f in fixes}
    for v in verdicts:
        if v.outcome is not Outcome.APPLIED or v.site is None:
            continue
        fix = by_name[v.fix]
        callee = image.symbol(fix.callee)
        if callee is None:
            raise AssetError(f"fix {fix.name}: {image.name} has no symbol {fix.callee}")
        expected = bytes([CALL_REL32]) + (callee - v.site - 5).to_bytes(4, "little",
                                                                         signed=True)
        off = image.file_offset(v.site, 5)
        found = bytes(out[off:off + 5])
        if found != expected:
            raise AssetError(f"fix {fix.name}: expected {expected.hex()} at {v.site:#x}, "
                             f"found {found.hex()}")
        out[off:off + 5] = fix.replacement
    return bytes(out)


def ensure_fixed(binary: Path, out_dir: Path,
                 fixes: tuple[CallSiteFix, ...] = KNOWN_FIXES) -> FixedBinary:
    """The fixed copy of `binary` (made once, in `out_dir`), or `binary` itself when no
    fix is to be applied; either way with each fix's verdict."""
    digest = sha256_of(binary)
    try:
        image = ElfImage.from_file(binary)
    except (ElfError, OSError, ValueError, IndexError) as e:
        return FixedBinary(binary, (), tuple(
            Verdict(f.name, Outcome.NO_MATCH, f"cannot read {binary}: {e}") for f in fixes))
    verdicts = tuple(f.locate(image) for f in fixes)
    working = tuple(v.fix for v in verdicts if v.works)
    if not any(v.outcome is Outcome.APPLIED for v in verdicts):
        return FixedBinary(binary, working, verdicts)
    target = out_dir / f"{binary.name}-{digest[:16]}-fixed"
    if not target.exists():
        fixed = apply_fixes(image, fixes, verdicts)
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        tmp.write_bytes(fixed)
        tmp.chmod(0o755)
        os.replace(tmp, target)
    return FixedBinary(target, working, verdicts)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m qemu_launcher.qemu_fixes",
                                description="what each known fix finds in a QEMU binary")
    p.add_argument("binary", type=Path)
    p.add_argument("--cut", type=Path, metavar="OUT.json",
                   help="write the functions and symbols the search used (a test fixture)")
    args = p.parse_args(argv)
    try:
        image = ElfImage.from_file(args.binary)
    except (ElfError, OSError) as e:
        print(f"qemu_fixes: {e}", file=sys.stderr)
        return 1
    funcs: list[tuple[int, int]] = []
    names: list[str] = []
    for fix in KNOWN_FIXES:
        v = fix.locate(image)
        print(v.describe())
        funcs += v.functions
        names += [fix.callee, *fix.anchors]
    if args.cut:
        name = f"{args.binary.name} sha256 {sha256_of(args.binary)[:16]}"
        args.cut.write_text(cut(image, names, funcs, name=name).to_json())
        print(f"cut written to {args.cut}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
