"""`Session.plain_read` (a guest's MMIO read without a frame) answers exactly as `process`
does: the same reply bytes, the same stats, for good reads and for every refusal; and it
declines (None) whatever is not one whole plain REGION_READ, which is then framed."""

from __future__ import annotations

import pytest
from vfio_user_fakes import FakeFunction

from vfio_user import ServerConfig, Session
from vfio_user import codec as c
from vfio_user.framing import Frame, FrameReader

READ = int(c.Command.REGION_READ)


class OddFunction(FakeFunction):
    """Returns a short read at BAR0 0x80 and raises at 0x84 (model bugs)."""

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        if (index, offset) == (0, 0x80):
            return b"\x01"
        if (index, offset) == (0, 0x84):
            raise RuntimeError("model bug")
        return super().region_read(index, offset, size)


def _session() -> Session:
    fn = OddFunction("f0")
    fn.storage[0][0x10:0x18] = bytes(range(1, 9))
    s = Session(fn, ServerConfig())
    version = c.encode_version(0, 0, b'{"capabilities":{}}\0')
    s.process(_frame(c.pack_message(0, c.Command.VERSION, 0, version)))
    return s


def _frame(message: bytes) -> Frame:
    reader = FrameReader(1 << 20)
    reader.feed(message)
    frame = reader.next_frame()
    assert frame is not None
    return frame


def _read(msg_id: int, region: int, offset: int, count: int) -> bytes:
    return c.pack_message(msg_id, READ, 0, c.RegionAccess(offset, region, count).pack())


READS = [
    (0, 0x10, 4), (0, 0x10, 8), (0, 0x10, 1), (0, 0xFFC, 4), (4, 0, 4), (7, 0, 4),
    (0, 0xFFE, 4),  # runs past the end of BAR0
    (0, 0x1000, 4),  # outside BAR0
    (1, 0, 4),  # an absent region
    (9, 0, 4),  # no such region
    (0, 0x10, 0),  # 0 bytes
    (0, 0, (1 << 20) + 1),  # larger than max_data_xfer_size
    (0, 0x80, 4),  # the function returns 1 byte
    (0, 0x84, 4),  # the function raises
    (0, (1 << 64) - 4, 8),  # offset + count wraps in 64 bits
]


@pytest.mark.parametrize(("region", "offset", "count"), READS)
def test_plain_read_answers_as_process_does(region: int, offset: int, count: int) -> None:
    plain, framed = _session(), _session()
    message = _read(7, region, offset, count)
    reply = plain.plain_read(message)
    assert reply is not None
    assert reply == framed.process(_frame(message))
    assert plain.stats == framed.stats


def test_plain_read_declines_anything_else() -> None:
    s = _session()
    ok = _read(1, 0, 0x10, 4)
    header = c.Header.STRUCT
    others = [
        ok + ok,  # two messages
        ok[:-1],  # a part of one
        c.pack_message(2, READ, int(c.MsgFlag.NO_REPLY), ok[16:]),  # posted
        c.pack_message(3, READ, c.TYPE_REPLY, ok[16:]),  # a reply
        c.pack_message(4, c.Command.REGION_WRITE, 0, ok[16:]),  # another command
        header.pack(5, READ, 40, 0, 0) + ok[16:],  # its size field says more follows
    ]
    for message in others:
        assert s.plain_read(message) is None
    assert s.stats.messages == 1  # VERSION only: nothing was counted
    before = Session(FakeFunction("f1"), ServerConfig())  # no VERSION yet: refused there
    assert before.plain_read(ok) is None
