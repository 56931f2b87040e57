"""The wire codec and the framing, without sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vfio_user import codec as c
from vfio_user.errors import FramingError, Malformed
from vfio_user.framing import FrameReader

# Sizes of QEMU's protocol.h structs without their 16-byte header.
QEMU_SIZES = {c.Header: 16, c.Version: 4, c.DmaMap: 32, c.DmaUnmap: 24, c.DeviceInfo: 16,
              c.RegionInfo: 32, c.RegionIoFds: 16, c.IrqInfo: 16, c.IrqSet: 20,
              c.RegionAccess: 16, c.DmaAccess: 12, c.WriteMultiHead: 8, c.WriteOne: 24}


@pytest.mark.parametrize("layout", list(QEMU_SIZES), ids=lambda t: t.__name__)
def test_layout_sizes_match_qemu(layout: type[c.Wire]) -> None:
    assert layout.SIZE == QEMU_SIZES[layout]


def test_header_bytes_are_little_endian_in_spec_order() -> None:
    raw = c.pack_message(0x0102, c.Command.REGION_READ, c.MsgFlag.NO_REPLY, b"xy", 0)
    assert raw == struct.pack("<HHIII", 0x0102, 9, 18, 0x10, 0) + b"xy"
    err = c.pack_error(c.Header(7, 5, 48, 0, 0), 22)
    assert err == struct.pack("<HHIII", 7, 5, 16, 0x21, 22)


def test_command_numbers() -> None:
    assert (c.Command.VERSION, c.Command.DMA_READ, c.Command.DEVICE_RESET,
            c.Command.REGION_WRITE_MULTI) == (1, 11, 13, 15)
    assert c.command_name(15) == "REGION_WRITE_MULTI" and c.command_name(99) == "command 99"


U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


@settings(max_examples=60)
@given(a=U32, b=U32, x=U64, y=U64, z=U64)
def test_roundtrips(a: int, b: int, x: int, y: int, z: int) -> None:
    for value in (c.DmaMap(a, b, x, y, z), c.DmaUnmap(a, b, x, y),
                  c.RegionInfo(a, b, a, b, x, y), c.RegionAccess(x, a, b),
                  c.IrqSet(a, b, a, b, a), c.WriteOne(x, a, b, b"12345678")):
        assert type(value).unpack(value.pack()) == value


def test_pack_refuses_values_wider_than_their_field() -> None:
    with pytest.raises(ValueError):
        c.RegionAccess(0, 2**32, 0).pack()
    with pytest.raises(ValueError):
        c.Header(-1, 0, 0, 0, 0).pack()


def test_unpack_refuses_short_input() -> None:
    with pytest.raises(Malformed):
        c.DmaMap.unpack(bytes(31))
    assert c.DmaMap.unpack(bytes(40), 8) == c.DmaMap(0, 0, 0, 0, 0)


def test_split_payload_per_spec_table() -> None:
    fixed, tail = c.split_payload(c.Command.REGION_WRITE, c.RegionAccess(0, 1, 2).pack() + b"ab")
    assert fixed == c.RegionAccess(0, 1, 2) and tail == b"ab"
    with pytest.raises(Malformed):
        c.split_payload(c.Command.REGION_READ, c.RegionAccess(0, 1, 2).pack() + b"a")
    with pytest.raises(Malformed):
        c.split_payload(c.Command.DEVICE_RESET, b"\0")
    assert c.split_payload(c.Command.DEVICE_RESET, b"") == (None, b"")


def test_capabilities_json() -> None:
    caps = c.Capabilities(16, 1 << 20, 4096, 65535, True,
                          present=frozenset({"max_msg_fds", "write_multiple", "pgsizes"}))
    raw = caps.to_json()
    assert raw.endswith(b"\0") and b"migration" not in raw and b"max_dma_maps" not in raw
    back = c.Capabilities.from_json(raw)
    assert (back.max_msg_fds, back.write_multiple, back.present) == (16, True, caps.present)
    qemu = (b'{"capabilities": {"migration": {"pgsize": 4096, "max_bitmap_size": 268435456},'
            b' "max_msg_fds": 16, "max_data_xfer_size": 1048576, "pgsizes": 4096,'
            b' "max_dma_maps": 65535, "write_multiple": true}}\0')
    q = c.Capabilities.from_json(qemu)
    assert q.migration and q.write_multiple and q.max_dma_maps == 65535
    assert c.Capabilities.from_json(b"") == c.Capabilities()
    assert c.Capabilities.from_json(b'{"capabilities": {"future": 1}}\0').present == {"future"}


def test_limit_violations_follow_qemu() -> None:
    assert c.Capabilities(16, 64 << 20, 8192, 65535).limit_violations() == []
    bad = c.Capabilities(17, (64 << 20) + 1, 4095, 65536).limit_violations()
    assert len(bad) == 4


# ------------------------------------------------------------------ framing


def _msg(i: int, payload: bytes) -> bytes:
    return c.pack_message(i, c.Command.REGION_WRITE, 0, payload)


@settings(max_examples=60)
@given(payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=8),
       with_fds=st.lists(st.booleans(), min_size=8, max_size=8),
       cuts=st.lists(st.integers(1, 30), min_size=1, max_size=40))
def test_fds_go_to_the_message_they_were_sent_with(payloads: list[bytes],
                                                   with_fds: list[bool],
                                                   cuts: list[int]) -> None:
    """Models Linux AF_UNIX delivery (unix_stream_read_generic): one receive may glue
    segments of several sends, but ends right after taking bytes of a segment that
    carries fds; byte counts are otherwise arbitrary."""
    sends = [(_msg(i, p), [100 + i] if with_fds[i] else []) for i, p in enumerate(payloads)]
    reader = FrameReader(1 << 16)
    frames = []
    queue = [(bytearray(data), fds) for data, fds in sends]
    k = 0
    while queue:
        want = cuts[k % len(cuts)]
        k += 1
        chunk, fds = bytearray(), []
        while queue and len(chunk) < want:
            data, seg_fds = queue[0]
            take = min(want - len(chunk), len(data))
            chunk += data[:take]
            del data[:take]
            fds.extend(seg_fds)
            queue[0] = (data, [])
            if not data:
                queue.pop(0)
            if seg_fds:
                break
        reader.feed(bytes(chunk), fds)
        while (f := reader.next_frame()) is not None:
            frames.append(f)
    assert [f.payload for f in frames] == payloads
    assert [f.fds for f in frames] == [fds for _, fds in sends]


def test_framing_errors() -> None:
    for raw in (struct.pack("<HHIII", 0, 1, 15, 0, 0), struct.pack("<HHIII", 0, 1, 100, 0, 0),
                struct.pack("<HHIII", 0, 1, 16, 3, 0)):
        reader = FrameReader(64)
        reader.feed(raw)
        with pytest.raises(FramingError):
            reader.next_frame()
    reader = FrameReader(64)
    reader.feed(struct.pack("<HHIII", 0, 1, 20, 0, 0) + b"abc")
    assert reader.next_frame() is None  # waits for the last byte
    reader.feed(b"d")
    frame = reader.next_frame()
    assert frame is not None and frame.payload == b"abcd" and reader.buffered == 0
