"""Just enough of an x86-64 ELF executable to find code by its symbols (qemu_launcher.qemu_fixes).

A `CodeImage` answers four questions about a binary's code, by virtual address:
  - where a dynamic symbol is (`symbol`),
  - which function covers an address (`function_at`: from the unwind table, so static
    functions, which have no symbol, have a range too),
  - the bytes at an address (`read`),
  - which `call rel32` / `jmp rel32` instructions in a range branch to a target
    (`branches_to`, the displacement computed from the two addresses).

`ElfImage` reads them from a whole ELF64 little-endian file: `.dynsym`/`.dynstr` for
symbols, the PT_LOAD program headers to map addresses to file offsets, `.eh_frame_hdr`'s
sorted table and each FDE's pc_begin/pc_range for function ranges. `CutImage` holds the
same answers for a few functions cut out of a binary (`cut`), as a small JSON file: the
unit tests' fixtures are cut from the real QEMU binaries, and a VM test checks that a cut
answers as the whole binary does.

Only the unwind encodings GCC and clang emit on x86-64 are read (pointers as signed or
unsigned 4-byte values, absolute, pc-relative or relative to .eh_frame_hdr); anything else
is an `ElfError`, never a guess.
"""

from __future__ import annotations

import bisect
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qemu_launcher.errors import AssetError

CALL_REL32 = 0xE8
JMP_REL32 = 0xE9
_BRANCH = re.compile(b"[\xe8\xe9]")

# DWARF exception-header pointer encodings (low nibble: format, high nibble: base)
_PE_OMIT = 0xFF
_PE_FORMATS = {0x03: "<I", 0x0B: "<i"}  # udata4, sdata4
_PE_ABSPTR, _PE_PCREL, _PE_DATAREL = 0x00, 0x10, 0x30


class ElfError(AssetError):
    """The file is not an ELF executable this reader understands."""


@dataclass(frozen=True)
class Branch:
    """A `call rel32` (e8) or `jmp rel32` (e9) at `address` whose target is `target`."""

    address: int
    opcode: int
    target: int


class CodeImage(Protocol):
    def symbol(self, name: str) -> int | None:
        """Address of the defined dynamic symbol `name`, None if it has none."""

    def symbol_at(self, address: int) -> str | None:
        """The defined dynamic symbol at exactly `address`, None if none is."""

    def function_at(self, address: int) -> tuple[int, int] | None:
        """[start, end) of the function covering `address`, None if none does."""

    def read(self, address: int, size: int) -> bytes:
        """`size` bytes at `address`; ElfError if the image does not hold them all."""

    def code_ranges(self) -> Iterable[tuple[int, int]]:
        """The [start, end) ranges of code this image holds."""


def branches_to(image: CodeImage, target: int, start: int, end: int) -> list[Branch]:
    """Every e8/e9 rel32 in [start, end) of `image` whose target is `target` (a byte
    that happens to be e8 inside another instruction counts only if its displacement
    lands exactly on `target`, which is what makes the search specific)."""
    return [b for b in branches_in(image, start, end) if b.target == target]


def branches_anywhere(image: CodeImage, target: int) -> list[Branch]:
    return [b for lo, hi in image.code_ranges() for b in branches_to(image, target, lo, hi)]


def branches_in(image: CodeImage, start: int, end: int) -> list[Branch]:
    """Every e8/e9 rel32 in [start, end), whatever its target: a superset of the real
    branches (an e8 byte inside another instruction is listed too), for callers that keep
    only targets they can vouch for (a symbol, or a function's first byte)."""
    data = image.read(start, end - start)
    out = []
    for m in _BRANCH.finditer(data, 0, max(0, len(data) - 4)):
        i = m.start()
        (disp,) = struct.unpack_from("<i", data, i + 1)
        out.append(Branch(start + i, data[i], (start + i + 5 + disp) & 0xFFFFFFFFFFFFFFFF))
    return out


@dataclass(frozen=True)
class _Segment:
    vaddr: int
    offset: int
    size: int  # bytes present in the file (p_filesz)


class ElfImage:
    """A whole ELF64 little-endian x86-64 file, read once into memory."""

    def __init__(self, data: bytes, name: str = "binary") -> None:
        self.name = name
        self.data = data
        if data[:4] != b"\x7fELF" or len(data) < 64:
            raise ElfError(f"{name}: not an ELF file")
        if data[4] != 2 or data[5] != 1:
            raise ElfError(f"{name}: not ELF64 little-endian")
        (machine,) = struct.unpack_from("<H", data, 18)
        if machine != 62:
            raise ElfError(f"{name}: not x86-64 (e_machine {machine})")
        phoff, shoff = struct.unpack_from("<QQ", data, 32)
        phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", data, 54)
        self._segments = []
        self._code: list[tuple[int, int]] = []
        for i in range(phnum):
            p_type, p_flags, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(
                "<IIQQQQ", data, phoff + i * phentsize)
            if p_type == 1:  # PT_LOAD
                self._segments.append(_Segment(p_vaddr, p_offset, p_filesz))
                if p_flags & 1:  # PF_X
                    self._code.append((p_vaddr, p_vaddr + p_filesz))
        self._sections: dict[str, tuple[int, int, int, int]] = {}  # addr, off, size, link
        raw = []
        for i in range(shnum):
            (sh_name, _, _, sh_addr, sh_offset, sh_size, sh_link) = struct.unpack_from(
                "<IIQQQQI", data, shoff + i * shentsize)
            raw.append((sh_name, sh_addr, sh_offset, sh_size, sh_link))
        if not raw:
            raise ElfError(f"{name}: no section headers")
        strtab_off = raw[shstrndx][2]
        for sh_name, addr, off, size, link in raw:
            end = data.index(b"\0", strtab_off + sh_name)
            self._sections[data[strtab_off + sh_name:end].decode()] = (addr, off, size, link)
        self._symbols = self._read_dynsym()
        self._by_address = {a: n for n, a in sorted(self._symbols.items(), reverse=True)}
        self._starts, self._fdes = self._read_eh_frame_hdr()

    @classmethod
    def from_file(cls, path: Path) -> ElfImage:
        return cls(path.read_bytes(), str(path))

    # ---- CodeImage -----------------------------------------------------------------
    def symbol(self, name: str) -> int | None:
        return self._symbols.get(name)

    def symbol_at(self, address: int) -> str | None:
        return self._by_address.get(address)

    def read(self, address: int, size: int) -> bytes:
        return self.data[self.file_offset(address, size):][:size]

    def code_ranges(self) -> Iterable[tuple[int, int]]:
        return list(self._code)

    def function_at(self, address: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._starts, address) - 1
        if i < 0:
            return None
        start, length = self._fde_range(self._fdes[i])
        return (start, start + length) if start <= address < start + length else None

    # ---- helpers -------------------------------------------------------------------
    def file_offset(self, address: int, size: int = 1) -> int:
        for s in self._segments:
            if s.vaddr <= address and address + size <= s.vaddr + s.size:
                return s.offset + address - s.vaddr
        raise ElfError(f"{self.name}: {size} bytes at {address:#x} are not in the file")

    def _section(self, name: str) -> tuple[int, int, int, int]:
        if name not in self._sections:
            raise ElfError(f"{self.name}: no {name} section")
        return self._sections[name]

    def _read_dynsym(self) -> dict[str, int]:
        _, off, size, link = self._section(".dynsym")
        str_off = list(self._sections.values())[link][1] if link else self._section(
            ".dynstr")[1]
        out = {}
        for pos in range(off, off + size, 24):
            st_name, st_info, _, st_shndx, st_value, _ = struct.unpack_from(
                "<IBBHQQ", self.data, pos)
            if st_shndx == 0 or st_info & 0xF != 2:  # undefined, or not STT_FUNC
                continue
            end = self.data.index(b"\0", str_off + st_name)
            out[self.data[str_off + st_name:end].decode(errors="replace")] = st_value
        return out

    def _pointer(self, enc: int, pos: int, section_addr: int, section_off: int,
                 datarel_base: int) -> tuple[int, int]:
        """(value, bytes used) of an encoded pointer at file offset `pos`."""
        fmt = _PE_FORMATS.get(enc & 0x0F)
        base = enc & 0x70
        if fmt is None or base not in (_PE_ABSPTR, _PE_PCREL, _PE_DATAREL):
            raise ElfError(f"{self.name}: unwind pointer encoding {enc:#x} not supported")
        (value,) = struct.unpack_from(fmt, self.data, pos)
        if base == _PE_PCREL:
            value += section_addr + (pos - section_off)
        elif base == _PE_DATAREL:
            value += datarel_base
        return value & 0xFFFFFFFFFFFFFFFF, 4

    def _read_eh_frame_hdr(self) -> tuple[list[int], list[int]]:
        addr, off, _, _ = self._section(".eh_frame_hdr")
        version, ptr_enc, count_enc, table_enc = self.data[off:off + 4]
        if version != 1 or _PE_OMIT in (count_enc, table_enc):
            raise ElfError(f"{self.name}: .eh_frame_hdr has no search table")
        pos = off + 4
        _, n = self._pointer(ptr_enc, pos, addr, off, addr)
        pos += n
        count, n = self._pointer(count_enc, pos, addr, off, addr)
        pos += n
        starts, fdes = [], []
        for _ in range(count):
            start, n = self._pointer(table_enc, pos, addr, off, addr)
            fde, n2 = self._pointer(table_enc, pos + n, addr, off, addr)
            pos += n + n2
            starts.append(start)
            fdes.append(fde)
        return starts, fdes

    def _fde_range(self, fde_addr: int) -> tuple[int, int]:
        pos = self.file_offset(fde_addr, 16)
        (length,) = struct.unpack_from("<I", self.data, pos)
        if length == 0xFFFFFFFF:
            raise ElfError(f"{self.name}: 64-bit FDE at {fde_addr:#x} not supported")
        (cie_delta,) = struct.unpack_from("<I", self.data, pos + 4)
        enc = self._cie_fde_encoding(pos + 4 - cie_delta)
        # pc-relative: relative to the field's own address (file offset 0 maps to base)
        base = fde_addr - pos
        start, n = self._pointer(enc, pos + 8, base, 0, 0)
        length_fmt = enc & 0x0F  # pc_range: same format, no base
        rng, _ = self._pointer(length_fmt, pos + 8 + n, 0, 0, 0)
        return start, rng

    def _cie_fde_encoding(self, pos: int) -> int:
        version = self.data[pos + 8]
        aug_end = self.data.index(b"\0", pos + 9)
        aug = self.data[pos + 9:aug_end].decode()
        p = aug_end + 1
        p = _skip_uleb(self.data, p)  # code alignment
        p = _skip_uleb(self.data, p)  # data alignment (sleb: same length rule)
        p = p + 1 if version == 1 else _skip_uleb(self.data, p)  # return register
        if not aug.startswith("z"):  # absolute 8-byte pointers: not what GCC emits here
            raise ElfError(f"{self.name}: CIE augmentation {aug!r} not supported")
        p = _skip_uleb(self.data, p)  # augmentation data length
        for ch in aug[1:]:
            if ch == "R":
                return self.data[p]
            if ch == "P":
                enc = self.data[p]
                p += 1 + (4 if enc & 0x0F in _PE_FORMATS else 8)
            elif ch == "L":
                p += 1
            else:
                break
        raise ElfError(f"{self.name}: CIE augmentation {aug!r} has no FDE encoding")


def _skip_uleb(data: bytes, pos: int) -> int:
    while data[pos] & 0x80:
        pos += 1
    return pos + 1


class CutImage:
    """A few functions of a binary with the symbols they use: what `cut` writes."""

    def __init__(self, symbols: dict[str, int], functions: list[tuple[int, int]],
                 chunks: list[tuple[int, bytes]], name: str = "cut") -> None:
        self.name = name
        self.symbols = dict(symbols)
        self.functions = sorted(functions)
        self.chunks = sorted(chunks)

    def symbol(self, name: str) -> int | None:
        return self.symbols.get(name)

    def symbol_at(self, address: int) -> str | None:
        return next((n for n, a in sorted(self.symbols.items()) if a == address), None)

    def function_at(self, address: int) -> tuple[int, int] | None:
        return next(((lo, hi) for lo, hi in self.functions if lo <= address < hi), None)

    def read(self, address: int, size: int) -> bytes:
        for start, data in self.chunks:
            if start <= address and address + size <= start + len(data):
                return data[address - start:address - start + size]
        raise ElfError(f"{self.name}: {size} bytes at {address:#x} are not in the cut")

    def code_ranges(self) -> Iterable[tuple[int, int]]:
        return [(start, start + len(data)) for start, data in self.chunks]

    def to_json(self) -> str:
        return json.dumps({
            "name": self.name,
            "symbols": {k: hex(v) for k, v in sorted(self.symbols.items())},
            "functions": [[hex(lo), hex(hi)] for lo, hi in self.functions],
            "chunks": [{"address": hex(a), "hex": d.hex()} for a, d in self.chunks],
        }, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CutImage:
        raw = json.loads(text)
        return cls({k: int(v, 16) for k, v in raw["symbols"].items()},
                   [(int(lo, 16), int(hi, 16)) for lo, hi in raw["functions"]],
                   [(int(c["address"], 16), bytes.fromhex(c["hex"])) for c in raw["chunks"]],
                   raw.get("name", "cut"))


def cut(image: CodeImage, symbols: Iterable[str], functions: Iterable[tuple[int, int]],
        margin: int = 64, name: str = "cut") -> CutImage:
    """The named symbols, and the given functions' ranges and bytes (plus `margin` bytes
    either side, so a search that strays past a function's end sees what is there)."""
    funcs = sorted(set(functions))
    syms = {s: a for s in symbols if (a := image.symbol(s)) is not None}
    for lo, hi in funcs:  # the symbols the functions' branches name, for symbol_at
        for b in branches_in(image, lo, hi):
            if (s := image.symbol_at(b.target)) is not None:
                syms[s] = b.target
    chunks = [(lo - margin, image.read(lo - margin, hi - lo + 2 * margin)) for lo, hi in funcs]
    return CutImage(syms, funcs, chunks, name)
