"""Declarative registers: fields with a width, a reset value and an access rule.

A `Register` is a list of `Field`s; a `Layout` places registers (and RAM `Window`s) in an
address space and is immutable, so one layout serves every function of a kind. A
`RegisterFile` holds one function's values and applies the access rules to every write,
whatever its width or alignment; hardware changes values through `set`/`set_bits`, and
device behaviour hangs off per-register write hooks and read hooks.

Access rules (per field):
  RO    constant: reads the reset value, writes ignored
  RW    read/write
  RW1C  set by hardware, software writes 1 to clear
  HW    status owned by hardware, read-only to software
  SC    write 1 to trigger an action (the hook sees it); always reads 0
Bytes that no register covers read 0 and ignore writes (reserved).
A `sticky` field keeps its value across every reset but a fundamental one (PCIe "S").
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from device_model.errors import LayoutError


class Access(enum.Enum):
    RO = "RO"
    RW = "RW"
    RW1C = "RW1C"
    HW = "HW"
    SC = "SC"


@dataclass(frozen=True)
class Field:
    name: str
    lsb: int
    width: int = 1
    access: Access = Access.RW
    reset: int = 0
    sticky: bool = False
    doc: str = ""

    def __post_init__(self) -> None:
        if self.width < 1 or self.lsb < 0:
            raise LayoutError(self.name, "field needs lsb >= 0 and width >= 1")
        if self.reset >> self.width:
            raise LayoutError(self.name, f"reset value 0x{self.reset:x} wider than the field")

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1


def ro(name: str, lsb: int, width: int = 1, value: int = 0, doc: str = "") -> Field:
    return Field(name, lsb, width, Access.RO, value, doc=doc)


def rw(name: str, lsb: int, width: int = 1, reset: int = 0, doc: str = "",
       sticky: bool = False) -> Field:
    return Field(name, lsb, width, Access.RW, reset, sticky, doc)


def rw1c(name: str, lsb: int, width: int = 1, doc: str = "", sticky: bool = False) -> Field:
    return Field(name, lsb, width, Access.RW1C, 0, sticky, doc)


def hw(name: str, lsb: int, width: int = 1, reset: int = 0, doc: str = "",
       sticky: bool = False) -> Field:
    return Field(name, lsb, width, Access.HW, reset, sticky, doc)


def sc(name: str, lsb: int, width: int = 1, doc: str = "") -> Field:
    return Field(name, lsb, width, Access.SC, 0, doc=doc)


@dataclass(frozen=True)
class Register:
    name: str
    offset: int
    size: int  # bytes: 1, 2, 4 or 8
    fields: tuple[Field, ...]
    doc: str = ""
    reset: int = field(init=False)
    rw_mask: int = field(init=False)
    w1c_mask: int = field(init=False)
    sc_mask: int = field(init=False)
    sticky_mask: int = field(init=False)

    def __post_init__(self) -> None:
        if self.size not in (1, 2, 4, 8):
            raise LayoutError(self.name, f"register size {self.size} is not 1, 2, 4 or 8")
        used = 0
        masks = {a: 0 for a in Access}
        reset = sticky = 0
        for f in self.fields:
            if f.msb >= self.size * 8:
                raise LayoutError(self.name, f"field {f.name} beyond {self.size * 8} bits")
            if used & f.mask:
                raise LayoutError(self.name, f"field {f.name} overlaps another field")
            used |= f.mask
            masks[f.access] |= f.mask
            if f.access is not Access.SC:
                reset |= f.reset << f.lsb
            if f.sticky:
                sticky |= f.mask
        object.__setattr__(self, "reset", reset)
        object.__setattr__(self, "rw_mask", masks[Access.RW])
        object.__setattr__(self, "w1c_mask", masks[Access.RW1C])
        object.__setattr__(self, "sc_mask", masks[Access.SC])
        object.__setattr__(self, "sticky_mask", sticky)

    @property
    def end(self) -> int:
        return self.offset + self.size

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name}")

    def moved(self, offset: int, prefix: str = "") -> Register:
        """The same register at `offset` (absolute), its name prefixed."""
        return Register(prefix + self.name, offset, self.size, self.fields, self.doc)


def reg(name: str, offset: int, size: int, *fields: Field, doc: str = "") -> Register:
    return Register(name, offset, size, tuple(fields), doc)


def const(name: str, offset: int, size: int, value: int, doc: str = "") -> Register:
    """A register that is one read-only constant."""
    return Register(name, offset, size, (ro(name, 0, size * 8, value),), doc)


@dataclass(frozen=True)
class Window:
    """A span of plain memory (a mailbox buffer, say), not registers: bytes read back."""

    name: str
    offset: int
    size: int
    doc: str = ""

    @property
    def end(self) -> int:
        return self.offset + self.size


class Layout:
    """Registers and windows placed in an address space of `size` bytes (immutable)."""

    def __init__(self, name: str, size: int, registers: Iterable[Register],
                 windows: Iterable[Window] = ()) -> None:
        self.name = name
        self.size = size
        self.registers: tuple[Register, ...] = tuple(sorted(registers, key=lambda r: r.offset))
        self.windows: tuple[Window, ...] = tuple(sorted(windows, key=lambda w: w.offset))
        owner = [-1] * size  # byte -> register index, or -2 - window index
        self.index: dict[str, int] = {}
        for i, r in enumerate(self.registers):
            self._claim(owner, r.name, r.offset, r.end, i)
            if r.name in self.index:
                raise LayoutError(name, f"two registers named {r.name}")
            self.index[r.name] = i
        for j, w in enumerate(self.windows):
            self._claim(owner, w.name, w.offset, w.end, -2 - j)
        self.owner: tuple[int, ...] = tuple(owner)
        self.starts: dict[int, int] = {r.offset: i for i, r in enumerate(self.registers)}
        # per register, in order (a reset copies them: one per VF FLR, three files each)
        self.reset_values: tuple[int, ...] = tuple(r.reset for r in self.registers)
        self.sticky: tuple[tuple[int, int], ...] = tuple(  # (index, mask): the few with any
            (i, r.sticky_mask) for i, r in enumerate(self.registers) if r.sticky_mask)

    def _claim(self, owner: list[int], what: str, start: int, end: int, tag: int) -> None:
        if start < 0 or end > self.size:
            raise LayoutError(self.name, f"{what} at 0x{start:x} outside 0x{self.size:x} bytes")
        for b in range(start, end):
            if owner[b] != -1:
                raise LayoutError(self.name, f"{what} at 0x{start:x} overlaps at byte 0x{b:x}")
            owner[b] = tag

    def __getitem__(self, name: str) -> Register:
        return self.registers[self.index[name]]

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def window(self, name: str) -> Window:
        for w in self.windows:
            if w.name == name:
                return w
        raise KeyError(f"{self.name} has no window {name}")


WriteHook = Callable[[int, int, int], None]  # (old, new, written bits)
ReadHook = Callable[[], int]
WindowRead = Callable[[int, int], bytes]  # (offset in window, size)
WindowWrite = Callable[[int, bytes], None]


class RegisterFile:
    """One function's values for a `Layout`, with the access rules applied to writes."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        regs = layout.registers
        self._values: list[int] = [r.reset for r in regs]
        self._sizes: list[int] = [r.size for r in regs]
        self._readers: list[ReadHook | None] = [None] * len(regs)
        self._writers: list[WriteHook | None] = [None] * len(regs)
        self._windows: list[tuple[WindowRead, WindowWrite] | None] = [None] * len(layout.windows)

    # ---- binding behaviour
    def on_read(self, name: str, fn: ReadHook) -> None:
        self._readers[self.layout.index[name]] = fn

    def on_write(self, name: str, fn: WriteHook) -> None:
        self._writers[self.layout.index[name]] = fn

    def bind_window(self, name: str, read: WindowRead, write: WindowWrite) -> None:
        for j, w in enumerate(self.layout.windows):
            if w.name == name:
                self._windows[j] = (read, write)
                return
        raise KeyError(f"{self.layout.name} has no window {name}")

    # ---- hardware side (no access rules)
    def get(self, name: str) -> int:
        i = self.layout.index[name]
        rd = self._readers[i]
        return rd() if rd is not None else self._values[i]

    def stored(self, name: str) -> int:
        """The stored value, ignoring any read hook."""
        return self._values[self.layout.index[name]]

    def set(self, name: str, value: int) -> None:
        i = self.layout.index[name]
        self._values[i] = value & ((1 << (8 * self._sizes[i])) - 1)

    def set_bits(self, name: str, mask: int) -> None:
        i = self.layout.index[name]
        self._values[i] |= mask

    def clear_bits(self, name: str, mask: int) -> None:
        i = self.layout.index[name]
        self._values[i] &= ~mask

    def field(self, name: str, fname: str) -> int:
        f = self.layout[name].field(fname)
        return (self.get(name) & f.mask) >> f.lsb

    def set_field(self, name: str, fname: str, value: int) -> None:
        f = self.layout[name].field(fname)
        i = self.layout.index[name]
        self._values[i] = (self._values[i] & ~f.mask) | ((value << f.lsb) & f.mask)

    def reset(self, *, keep_sticky: bool) -> None:
        """Every register to its reset value; sticky bits kept if `keep_sticky`."""
        lay, values = self.layout, self._values
        kept = [(i, mask, values[i] & mask) for i, mask in lay.sticky] if keep_sticky else []
        values[:] = lay.reset_values
        for i, mask, bits in kept:
            values[i] = (values[i] & ~mask) | bits

    def snapshot(self) -> tuple[int, ...]:
        return tuple(self._values)

    # ---- software side (access rules)
    def read(self, offset: int, size: int) -> int:
        """Little-endian value of `size` bytes at `offset` (must lie inside the layout)."""
        i = self.layout.starts.get(offset)
        if i is not None and self._sizes[i] == size:
            rd = self._readers[i]
            return rd() if rd is not None else self._values[i]
        return int.from_bytes(self._read_slow(offset, size), "little")

    def read_bytes(self, offset: int, size: int) -> bytes:
        i = self.layout.starts.get(offset)
        if i is not None and self._sizes[i] == size:
            rd = self._readers[i]
            v = rd() if rd is not None else self._values[i]
            return v.to_bytes(size, "little")
        return self._read_slow(offset, size)

    def _read_slow(self, offset: int, size: int) -> bytes:
        owner = self.layout.owner
        out = bytearray(size)
        pos, end = offset, offset + size
        while pos < end:
            tag = owner[pos]
            if tag >= 0:
                r = self.layout.registers[tag]
                rd = self._readers[tag]
                v = rd() if rd is not None else self._values[tag]
                stop = min(end, r.end)
                raw = v.to_bytes(r.size, "little")
                out[pos - offset : stop - offset] = raw[pos - r.offset : stop - r.offset]
                pos = stop
            elif tag == -1:
                pos += 1
            else:
                w = self.layout.windows[-2 - tag]
                stop = min(end, w.end)
                io = self._windows[-2 - tag]
                if io is not None:
                    out[pos - offset : stop - offset] = io[0](pos - w.offset, stop - pos)
                pos = stop
        return bytes(out)

    def write(self, offset: int, size: int, value: int) -> None:
        """Apply a software write of `size` bytes (little-endian `value`) at `offset`."""
        i = self.layout.starts.get(offset)
        if i is not None and self._sizes[i] == size:
            self._apply(i, value, (1 << (8 * size)) - 1)
            return
        self.write_bytes(offset, value.to_bytes(size, "little"))

    def write_bytes(self, offset: int, data: bytes) -> None:
        owner = self.layout.owner
        pos, end = offset, offset + len(data)
        while pos < end:
            tag = owner[pos]
            if tag >= 0:
                r = self.layout.registers[tag]
                stop = min(end, r.end)
                shift = 8 * (pos - r.offset)
                nbytes = stop - pos
                value = int.from_bytes(data[pos - offset : stop - offset], "little") << shift
                self._apply(tag, value, ((1 << (8 * nbytes)) - 1) << shift)
                pos = stop
            elif tag == -1:
                pos += 1
            else:
                w = self.layout.windows[-2 - tag]
                stop = min(end, w.end)
                io = self._windows[-2 - tag]
                if io is not None:
                    io[1](pos - w.offset, data[pos - offset : stop - offset])
                pos = stop

    def _apply(self, i: int, value: int, bytemask: int) -> None:
        r = self.layout.registers[i]
        old = self._values[i]
        written = value & bytemask
        new = (old & ~(r.rw_mask & bytemask)) | (written & r.rw_mask)
        new &= ~(written & r.w1c_mask)
        self._values[i] = new
        hook = self._writers[i]
        if hook is not None:
            hook(old, new, written)


def describe_fields(r: Register) -> str:
    """One cell of documentation: `bits name ACCESS (reset)` per field, MSB first."""
    parts = []
    for f in sorted(r.fields, key=lambda f: -f.lsb):
        bits = f"{f.msb}:{f.lsb}" if f.width > 1 else f"{f.lsb}"
        reset = f" ={f.reset:#x}" if f.reset else ""
        sticky = "S" if f.sticky else ""
        doc = f" - {f.doc}" if f.doc else ""
        parts.append(f"[{bits}] {f.name} {f.access.value}{sticky}{reset}{doc}")
    return "<br>".join(parts)


def markdown_table(layout: Layout, registers: Sequence[Register] | None = None,
                   base: int = 0) -> str:
    """A Markdown table of registers (offset, size, name, fields) for the docs."""
    rows = ["| offset | size | register | fields (bits, name, access, reset) |",
            "|---|---|---|---|"]
    for r in registers if registers is not None else layout.registers:
        doc = f"{r.doc}<br>" if r.doc else ""
        cells = f"{doc}{describe_fields(r)}"
        rows.append(f"| 0x{r.offset - base:04x} | {r.size} | {r.name} | {cells} |")
    return "\n".join(rows)
