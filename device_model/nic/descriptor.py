"""The ring descriptor: 16 bytes, declared as fields, packed with one compiled struct."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from device_model.errors import LayoutError


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
    RecordField("addr", 0, 8, "buffer guest address (software)"),
    RecordField("length", 8, 2, "TX: frame length; RX: buffer size, then received length"),
    RecordField("flags", 10, 2, "reserved: software writes 0"),
    RecordField("status", 12, 2, "hardware: bit 0 DD, bit 1 ERR, bits 15:8 error code"),
    RecordField("vlan", 14, 2, "RX: VLAN ID of the port VLAN the frame arrived on"),
))
DESC_SIZE = DESCRIPTOR.size
STATUS_OFFSET = DESCRIPTOR.offsets["status"]
LENGTH_OFFSET = DESCRIPTOR.offsets["length"]

DD = 1 << 0
ERR = 1 << 1


class DescError(enum.IntEnum):
    """Error codes in status bits 15:8 (with ERR set)."""

    BAD_LENGTH = 1  # TX length shorter than an Ethernet header, or above MTU + 18
    SPOOFED = 2  # TX source MAC is not the VF's and anti-spoof is on
    ADAPTER_FAILED = 3  # the adapter had a fatal error and was not reset yet
    BUFFER_TOO_SMALL = 4  # RX buffer shorter than the frame (frame counted as an RX error)


def error_status(code: DescError) -> int:
    return DD | ERR | (int(code) << 8)


ETH_HEADER = 14
VLAN_TAG = 4
