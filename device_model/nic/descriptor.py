"""The ring descriptor: 16 bytes, declared as fields, packed with one compiled struct.

Its layout, status bits and error codes are `eeh_abi.nic`'s (a unit test checks that the
declared record packs exactly as `eeh_abi.nic.DESC_FORMAT`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from device_model.errors import LayoutError
from eeh_abi.nic import (
    DESC_ADDR,
    DESC_FLAGS,
    DESC_LENGTH,
    DESC_STATUS,
    DESC_VLAN,
    ETH_HEADER,
    VLAN_TAG,
    DescError,
    DescStatus,
    error_status,
)


@dataclass(frozen=True)
class RecordField:
    name: str
    offset: int
    size: int  # 1, 2, 4 or 8 bytes, little-endian unsigned
    doc: str = ""


class Record:
    """A fixed little-endian record of contiguous unsigned fields."""

    _CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}

    def __init__(self, name: str, fields: tuple[RecordField, ...]) -> None:
        self.name = name
        self.fields = fields
        pos = 0
        for f in fields:
            if f.offset != pos or f.size not in self._CODES:
                raise LayoutError(name, f"field {f.name} must start at {pos}, size 1/2/4/8")
            pos += f.size
        self.size = pos
        self.struct = struct.Struct("<" + "".join(self._CODES[f.size] for f in fields))
        self.offsets = {f.name: f.offset for f in fields}

    def unpack(self, raw: bytes) -> tuple[int, ...]:
        return self.struct.unpack(raw)

    def pack(self, *values: int) -> bytes:
        return self.struct.pack(*values)


DESCRIPTOR = Record("descriptor", (
    RecordField("addr", DESC_ADDR, 8, "buffer guest address (software)"),
    RecordField("length", DESC_LENGTH, 2,
                "TX: frame length; RX: buffer size, then received length"),
    RecordField("flags", DESC_FLAGS, 2, "reserved: software writes 0"),
    RecordField("status", DESC_STATUS, 2, "hardware: bit 0 DD, bit 1 ERR, bits 15:8 error code"),
    RecordField("vlan", DESC_VLAN, 2, "RX: VLAN ID of the port VLAN the frame arrived on"),
))
DESC_SIZE = DESCRIPTOR.size
STATUS_OFFSET = DESCRIPTOR.offsets["status"]
LENGTH_OFFSET = DESCRIPTOR.offsets["length"]

DD = int(DescStatus.DD)
ERR = int(DescStatus.ERR)

__all__ = ["DD", "DESCRIPTOR", "DESC_SIZE", "ERR", "ETH_HEADER", "LENGTH_OFFSET", "STATUS_OFFSET",
           "VLAN_TAG", "DescError", "Record", "RecordField", "error_status"]
