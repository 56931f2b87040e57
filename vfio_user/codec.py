"""The vfio-user wire format, shared by the server and the client.

Every message is a 16-byte header and a command-specific payload. Payload layouts are
declared once, as field lists with widths (`@wire` classes), and packed/unpacked by one
generic codec; `SPECS` says for each command which layout a request and a reply use and
whether variable data follows the fixed part. Numbers and names follow QEMU's
`hw/vfio-user/protocol.h` and `docs/interop/vfio-user.rst`; where QEMU's code and the
spec disagree (DMA_READ/DMA_WRITE), QEMU's layout is declared, since QEMU is the peer.
All integers are little-endian.
"""

from __future__ import annotations

import inspect
import json
import struct
from collections import namedtuple
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntFlag
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast, dataclass_transform

from vfio_user.commands import Command as Command
from vfio_user.commands import command_name as command_name
from vfio_user.errors import Malformed

# --------------------------------------------------------------------------- fields


def u16() -> int:
    f: int = field(metadata={"fmt": "H"})
    return f


def u32() -> int:
    f: int = field(metadata={"fmt": "I"})
    return f


def u64() -> int:
    f: int = field(metadata={"fmt": "Q"})
    return f


def raw8() -> bytes:
    """Exactly 8 bytes (shorter values are NUL-padded when packed)."""
    f: bytes = field(metadata={"fmt": "8s"})
    return f


class Wire:
    """Base of every declared layout: an immutable tuple of its fields in wire order,
    packed and unpacked by its `struct.Struct` alone (no Python code per field)."""

    __slots__ = ()
    STRUCT: ClassVar[struct.Struct]
    SIZE: ClassVar[int]
    NAMES: ClassVar[tuple[str, ...]]
    # The layout from its field values in order, unchecked: for a caller that already
    # checked the length (`layout.from_fields(layout.STRUCT.unpack_from(buf, offset))`).
    from_fields: ClassVar[Callable[[Iterable[Any]], Any]]

    if TYPE_CHECKING:
        def __iter__(self) -> Iterator[Any]: ...  # a tuple at run time (see `wire`)

    def pack(self) -> bytes:
        try:
            return self.STRUCT.pack(*self)
        except struct.error as e:
            raise ValueError(f"{type(self).__name__}: {e}") from None

    @classmethod
    def unpack(cls, buf: bytes | bytearray | memoryview, offset: int = 0) -> Self:
        """Decode the fixed part at `offset`; raises Malformed if `buf` is too short."""
        if len(buf) - offset < cls.SIZE:
            raise Malformed(f"{cls.__name__} needs {cls.SIZE} bytes, got {len(buf) - offset}")
        decoded: Self = cls.from_fields(cls.STRUCT.unpack_from(buf, offset))
        return decoded


W = TypeVar("W", bound=Wire)


@dataclass_transform(field_specifiers=(u16, u32, u64, raw8))
def wire(cls: type[W]) -> type[W]:
    """Make `cls` a layout: its annotated fields, in order, with their widths. At run time
    the class is a named tuple (fields read by name, compared and hashed as values),
    declared for type checkers like a dataclass of those fields."""
    names = tuple(inspect.get_annotations(cls))  # its own fields, in order
    widths = [cls.__dict__[n].metadata["fmt"] for n in names]  # u16() & co. are fields
    own = {k: v for k, v in cls.__dict__.items()
           if k not in names and k not in ("__annotations__", "__dict__", "__weakref__")}
    base = namedtuple(f"{cls.__name__}Fields", names)  # type: ignore[misc]  # dynamic names
    layout: Any = type(cls.__name__, (base, *cls.__bases__), {**own, "__slots__": ()})
    layout.STRUCT = struct.Struct("<" + "".join(widths))
    layout.SIZE = layout.STRUCT.size
    layout.NAMES = names
    layout.from_fields = partial(tuple.__new__, layout)
    return cast(type[W], layout)


# --------------------------------------------------------------------------- header


class MsgFlag(IntFlag):
    REPLY = 0x1  # the type field (bits 0-3): 0 command, 1 reply
    NO_REPLY = 0x10
    ERROR = 0x20


TYPE_MASK = 0xF
TYPE_COMMAND = 0
TYPE_REPLY = 1
HEADER_SIZE = 16
NO_REPLY = int(MsgFlag.NO_REPLY)  # plain ints for the hot path (IntFlag ops are slow)
ERROR = int(MsgFlag.ERROR)


@wire
class Header(Wire):
    id: int = u16()
    command: int = u16()
    size: int = u32()
    flags: int = u32()
    error: int = u32()

    @property
    def type(self) -> int:
        return self.flags & TYPE_MASK

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & NO_REPLY)


_HEADER = Header.STRUCT


def pack_message(msg_id: int, command: int, flags: int, payload: bytes = b"",
                 error: int = 0) -> bytes:
    """A whole message: header (size computed) + payload."""
    return _HEADER.pack(msg_id, command, HEADER_SIZE + len(payload), flags, error) + payload


def pack_reply(request: Header, payload: bytes = b"") -> bytes:
    msg_id, command, _, _, _ = request
    return _HEADER.pack(msg_id, command, HEADER_SIZE + len(payload), TYPE_REPLY, 0) + payload


def pack_error(request: Header, errno: int) -> bytes:
    return pack_message(request.id, request.command, TYPE_REPLY | ERROR, b"", errno)


# --------------------------------------------------------------------------- payloads


@wire
class Version(Wire):
    """VERSION request and reply; a NUL-terminated JSON object may follow."""

    major: int = u16()
    minor: int = u16()


@wire
class DmaMap(Wire):
    """DMA_MAP request (0 or 1 fd). The reply has no payload."""

    argsz: int = u32()
    flags: int = u32()
    offset: int = u64()  # into the fd
    addr: int = u64()
    size: int = u64()


class DmaMapFlag(IntFlag):
    READ = 1
    WRITE = 2


@wire
class DmaUnmap(Wire):
    """DMA_UNMAP request; the reply echoes it."""

    argsz: int = u32()
    flags: int = u32()
    addr: int = u64()
    size: int = u64()


class DmaUnmapFlag(IntFlag):
    GET_DIRTY_BITMAP = 1
    ALL = 2


@wire
class DeviceInfo(Wire):
    argsz: int = u32()
    flags: int = u32()
    num_regions: int = u32()
    num_irqs: int = u32()


class DeviceFlag(IntFlag):
    RESET = 1
    PCI = 2


@wire
class RegionInfo(Wire):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    cap_offset: int = u32()
    size: int = u64()
    offset: int = u64()


@wire
class RegionIoFds(Wire):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    count: int = u32()


@wire
class IrqInfo(Wire):
    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    count: int = u32()


@wire
class IrqSet(Wire):
    """SET_IRQS; DATA_BOOL carries `count` bytes after it, DATA_EVENTFD `count` fds."""

    argsz: int = u32()
    flags: int = u32()
    index: int = u32()
    start: int = u32()
    count: int = u32()


class IrqSetFlag(IntFlag):
    DATA_NONE = 1
    DATA_BOOL = 2
    DATA_EVENTFD = 4
    ACTION_MASK = 8
    ACTION_UNMASK = 16
    ACTION_TRIGGER = 32


IRQ_DATA_MASK = 0x7
IRQ_ACTION_MASK = 0x38


@wire
class RegionAccess(Wire):
    """REGION_READ/REGION_WRITE request and reply; data follows in READ replies and
    WRITE requests."""

    offset: int = u64()
    region: int = u32()
    count: int = u32()


@wire
class DmaAccess(Wire):
    """DMA_READ/DMA_WRITE (server to client) as QEMU implements them: address u64,
    count u32, data at payload byte 12, and a payload of at least 16 bytes (C padding).
    The spec text says count u64 with data at 16. This server never sends them: DMA goes
    through the shared memory the client maps."""

    addr: int = u64()
    count: int = u32()


DMA_ACCESS_MIN_PAYLOAD = 16


@wire
class WriteMultiHead(Wire):
    wr_cnt: int = u64()


@wire
class WriteOne(Wire):
    """One entry of REGION_WRITE_MULTI: at most 8 data bytes, padded to 8."""

    offset: int = u64()
    region: int = u32()
    count: int = u32()
    data: bytes = raw8()


WRITE_MULTI_DATA = 8
WRITE_MULTI_MAX = 200


@dataclass(frozen=True)
class CommandSpec:
    """What a command's request and reply payloads are."""

    request: type[Wire] | None  # None: empty payload
    reply: type[Wire] | None
    request_tail: bool = False  # variable data after the fixed part
    reply_tail: bool = False


SPECS: Mapping[Command, CommandSpec] = {
    Command.VERSION: CommandSpec(Version, Version, request_tail=True, reply_tail=True),
    Command.DMA_MAP: CommandSpec(DmaMap, None),
    Command.DMA_UNMAP: CommandSpec(DmaUnmap, DmaUnmap),
    Command.DEVICE_GET_INFO: CommandSpec(DeviceInfo, DeviceInfo),
    Command.DEVICE_GET_REGION_INFO: CommandSpec(RegionInfo, RegionInfo, reply_tail=True),
    Command.DEVICE_GET_REGION_IO_FDS: CommandSpec(RegionIoFds, RegionIoFds, reply_tail=True),
    Command.DEVICE_GET_IRQ_INFO: CommandSpec(IrqInfo, IrqInfo),
    Command.DEVICE_SET_IRQS: CommandSpec(IrqSet, None, request_tail=True),
    Command.REGION_READ: CommandSpec(RegionAccess, RegionAccess, reply_tail=True),
    Command.REGION_WRITE: CommandSpec(RegionAccess, RegionAccess, request_tail=True),
    Command.DMA_READ: CommandSpec(DmaAccess, DmaAccess, request_tail=True, reply_tail=True),
    Command.DMA_WRITE: CommandSpec(DmaAccess, None, request_tail=True),
    Command.DEVICE_RESET: CommandSpec(None, None),
    Command.REGION_WRITE_MULTI: CommandSpec(WriteMultiHead, WriteMultiHead, request_tail=True),
}


def split_payload(command: Command, payload: bytes | memoryview) -> tuple[Wire | None, bytes]:
    """Decode a request payload per `SPECS`: (fixed part, tail). Raises Malformed when the
    payload is shorter than the fixed part, or longer when no tail is allowed."""
    spec = SPECS[command]
    size = spec.request.SIZE if spec.request is not None else 0
    if len(payload) < size or (len(payload) > size and not spec.request_tail):
        raise Malformed(f"{command.name} payload is {len(payload)} bytes, layout is {size}"
                        + (" or more" if spec.request_tail else ""))
    fixed = spec.request.unpack(payload) if spec.request is not None else None
    return fixed, bytes(payload[size:])


# --------------------------------------------------------------------------- version


MAJOR = 0  # what QEMU speaks (protocol.h VFIO_USER_MAJOR_VER/MINOR_VER)
MINOR = 0

LIMIT_MAX_MSG_FDS = 16  # QEMU refuses more
LIMIT_MAX_DATA_XFER = 64 << 20
LIMIT_MAX_DMA_MAPS = 65535
PAGE_SIZE = 4096

DEFAULT_MAX_MSG_FDS = 1  # spec defaults when a capability is absent
DEFAULT_MAX_DATA_XFER = 1 << 20
DEFAULT_MAX_DMA_MAPS = 65535


@dataclass(frozen=True)
class Capabilities:
    """The `capabilities` object of VERSION. `present` names what was actually sent."""

    max_msg_fds: int = DEFAULT_MAX_MSG_FDS
    max_data_xfer_size: int = DEFAULT_MAX_DATA_XFER
    pgsizes: int = PAGE_SIZE
    max_dma_maps: int = DEFAULT_MAX_DMA_MAPS
    write_multiple: bool = False
    migration: bool = False
    present: frozenset[str] = frozenset()

    NUMBERS: ClassVar[tuple[str, ...]] = (
        "max_msg_fds", "max_data_xfer_size", "pgsizes", "max_dma_maps")

    def to_json(self, keys: tuple[str, ...] | None = None) -> bytes:
        """NUL-terminated JSON of the given keys (default: those present), never
        `migration`."""
        names = self.present if keys is None else keys
        caps: dict[str, Any] = {k: getattr(self, k) for k in
                                (*self.NUMBERS, "write_multiple") if k in names}
        return json.dumps({"capabilities": caps}, separators=(",", ":")).encode() + b"\0"

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Parse VERSION data (NUL-terminated JSON, or empty for defaults)."""
        if not data:
            return cls()
        if data[-1] != 0 or b"\0" in data[:-1]:
            raise Malformed("version data is not one NUL-terminated string")
        try:
            obj = json.loads(data[:-1].decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise Malformed(f"version data is not JSON: {type(e).__name__}") from None
        if not isinstance(obj, dict):
            raise Malformed("version data is not a JSON object")
        caps = obj.get("capabilities", {})
        if not isinstance(caps, dict):
            raise Malformed("capabilities is not an object")
        values: dict[str, Any] = {}
        for name in cls.NUMBERS:
            if name in caps:
                v = caps[name]
                if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v >= 1 << 64:
                    raise Malformed(f"capability {name} is not an unsigned integer")
                values[name] = v
        if "write_multiple" in caps:
            if not isinstance(caps["write_multiple"], bool):
                raise Malformed("capability write_multiple is not a boolean")
            values["write_multiple"] = caps["write_multiple"]
        if "migration" in caps:
            if not isinstance(caps["migration"], dict):
                raise Malformed("capability migration is not an object")
            values["migration"] = True
        return cls(**values, present=frozenset(k for k in caps if isinstance(k, str)))

    def limit_violations(self) -> list[str]:
        """What QEMU's client would refuse in these capabilities (empty: acceptable)."""
        bad = []
        if self.max_msg_fds > LIMIT_MAX_MSG_FDS:
            bad.append(f"max_msg_fds {self.max_msg_fds} > {LIMIT_MAX_MSG_FDS}")
        if not 0 < self.max_data_xfer_size <= LIMIT_MAX_DATA_XFER:
            bad.append(f"max_data_xfer_size {self.max_data_xfer_size} not in 1..64 MiB")
        if self.pgsizes == 0 or self.pgsizes % PAGE_SIZE:
            bad.append(f"pgsizes {self.pgsizes:#x} not a non-zero multiple of 4096")
        if self.max_dma_maps > LIMIT_MAX_DMA_MAPS:
            bad.append(f"max_dma_maps {self.max_dma_maps} > {LIMIT_MAX_DMA_MAPS}")
        return bad


def encode_version(major: int, minor: int, caps_json: bytes = b"") -> bytes:
    return Version(major, minor).pack() + caps_json


def decode_version(payload: bytes | memoryview) -> tuple[Version, Capabilities]:
    fixed, tail = split_payload(Command.VERSION, payload)
    assert isinstance(fixed, Version)
    return fixed, Capabilities.from_json(tail)
