"""Wire layouts are values: decoded once, never changed, compared and hashed by content."""

from __future__ import annotations

import dataclasses

import pytest

from vfio_user import codec as c


def _assign(obj: object, name: str, value: object) -> None:
    setattr(obj, name, value)


def test_a_decoded_layout_cannot_be_changed() -> None:
    """A handler cannot alter the request it was given, nor a reply what it decoded."""
    access = c.RegionAccess.unpack(c.RegionAccess(0x10, 0, 4).pack())
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        _assign(access, "count", 8)
    header = c.Header(1, c.Command.REGION_READ, 32, 0, 0)
    with pytest.raises((AttributeError, dataclasses.FrozenInstanceError)):
        _assign(header, "flags", c.NO_REPLY)
    assert access == c.RegionAccess(0x10, 0, 4) and access.count == 4


def test_layouts_are_values_by_content() -> None:
    a, b = c.IrqInfo(16, 1, 4, 2), c.IrqInfo(16, 1, 4, 2)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert c.IrqInfo(16, 1, 4, 3) != a
    assert repr(a) == "IrqInfo(argsz=16, flags=1, index=4, count=2)"
    assert (a.index, a.count) == (4, 2)  # fields named like tuple methods read as fields


def test_from_fields_builds_the_layout_unchecked() -> None:
    raw = c.DmaUnmap(24, 2, 0, 0).pack()
    assert c.DmaUnmap.from_fields(c.DmaUnmap.STRUCT.unpack_from(raw)) == c.DmaUnmap.unpack(raw)
    assert isinstance(c.DmaUnmap.unpack(raw), c.DmaUnmap | c.Wire)
