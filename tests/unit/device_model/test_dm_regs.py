"""The declarative register engine: access rules, widths, windows, layouts."""

from __future__ import annotations

import pytest

from device_model.errors import LayoutError
from device_model.regs import (
    Layout,
    Register,
    RegisterFile,
    Window,
    const,
    hw,
    markdown_table,
    reg,
    ro,
    rw,
    rw1c,
    sc,
)


def sample() -> RegisterFile:
    layout = Layout("t", 0x40, [
        reg("A", 0x00, 4, rw("lo", 0, 8, 0x12), ro("id", 8, 8, 0xAB), rw1c("st", 16, 4),
            hw("hw", 20, 4, 0x5), sc("go", 31)),
        reg("B", 0x04, 2, rw("x", 0, 16, 0xBEEF, sticky=True)),
        reg("C", 0x08, 8, rw("all", 0, 64)),
        const("K", 0x10, 1, 0x7E),
    ], [Window("W", 0x20, 0x10)])
    return RegisterFile(layout)


def test_reset_values_and_rules() -> None:
    f = sample()
    assert f.read(0x00, 4) == 0x0050AB12
    f.write(0x00, 4, 0xFFFFFFFF)
    # lo takes the write, id stays, st clears (nothing set), hw stays, go reads 0
    assert f.read(0x00, 4) == 0x0050ABFF
    f.set_bits("A", 0xF << 16)  # hardware sets status
    assert f.field("A", "st") == 0xF
    f.write(0x00, 4, 0x00050000 | 0xFF)  # write-1-to-clear bits 16 and 18 only
    assert f.field("A", "st") == 0b1010
    f.write(0x00, 4, 0)  # writing 0 clears nothing
    assert f.field("A", "st") == 0b1010
    assert f.read(0x10, 1) == 0x7E
    f.write(0x10, 1, 0)
    assert f.read(0x10, 1) == 0x7E


def test_sc_bits_reach_the_hook_and_read_zero() -> None:
    f = sample()
    seen: list[tuple[int, int, int]] = []
    f.on_write("A", lambda old, new, written: seen.append((old, new, written)))
    f.write(0x00, 4, 1 << 31)
    assert seen and seen[0][2] == 1 << 31
    assert f.read(0x00, 4) & (1 << 31) == 0


def test_partial_and_unaligned_accesses() -> None:
    f = sample()
    assert f.read(0x01, 1) == 0xAB
    assert f.read(0x02, 4) == int.from_bytes(bytes([0x50, 0x00, 0xEF, 0xBE]), "little")
    f.write(0x08, 8, 0x1122334455667788)
    assert f.read(0x0C, 4) == 0x11223344
    f.write(0x0A, 2, 0xAAAA)  # only bytes 2-3 of C change
    assert f.read(0x08, 8) == 0x11223344AAAA7788
    f.set_bits("A", 0xF << 16)
    f.write(0x02, 1, 0x01)  # byte 2 holds st bits 16-19: clear bit 16 only
    assert f.field("A", "st") == 0b1110
    assert f.read(0x11, 4) == 0  # reserved bytes read 0


def test_window_and_read_hook() -> None:
    f = sample()
    mem = bytearray(16)
    f.bind_window("W", lambda o, n: bytes(mem[o:o + n]), lambda o, d: mem.__setitem__(
        slice(o, o + len(d)), d))
    f.write_bytes(0x22, b"\x01\x02\x03")
    assert mem[2:5] == b"\x01\x02\x03"
    assert f.read(0x20, 8) == int.from_bytes(bytes(mem[:8]), "little")
    f.on_read("B", lambda: 0x4242)
    assert f.read(0x04, 2) == 0x4242 and f.stored("B") == 0xBEEF


def test_sticky_survives_all_but_fundamental_reset() -> None:
    f = sample()
    f.write(0x04, 2, 0x1234)
    f.write(0x00, 4, 0x99)
    f.reset(keep_sticky=True)
    assert f.read(0x04, 2) == 0x1234 and f.field("A", "lo") == 0x12
    f.reset(keep_sticky=False)
    assert f.read(0x04, 2) == 0xBEEF


def test_bad_declarations_are_refused() -> None:
    with pytest.raises(LayoutError):
        reg("X", 0, 2, rw("a", 0, 8), rw("b", 4, 8))  # overlapping fields
    with pytest.raises(LayoutError):
        reg("X", 0, 2, rw("a", 12, 8))  # beyond 16 bits
    with pytest.raises(LayoutError):
        Register("X", 0, 3, ())
    with pytest.raises(LayoutError):
        rw("a", 0, 4, reset=0x10)
    with pytest.raises(LayoutError):
        Layout("t", 8, [const("A", 0, 4, 0), const("B", 2, 4, 0)])  # overlap
    with pytest.raises(LayoutError):
        Layout("t", 8, [const("A", 6, 4, 0)])  # past the end
    with pytest.raises(LayoutError):
        Layout("t", 8, [const("A", 0, 2, 0), const("A", 4, 2, 0)])  # duplicate name


def test_markdown_table_lists_fields() -> None:
    table = markdown_table(sample().layout)
    assert "| 0x0000 | 4 | A |" in table
    assert "[31] go SC" in table and "[19:16] st RW1C" in table and "[15:0] x RWS =0xbeef" in table
