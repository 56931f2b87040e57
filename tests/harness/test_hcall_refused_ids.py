"""A refused line's reply carries the request's id whenever the top-level object's `id`
member could be read before the line went wrong (docs/platform-calls.md, Framing): on the
real platform-call server, requests nested 40, 1000 and 30,000 deep (JSON refuses them as
nested deeper than 32) each get exactly one reply with their id when the id precedes the
nesting, and `id: null` when it cannot be read (after the nesting, not an integer, no
object, broken JSON before it)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from eeh_abi.hcall import MAX_LINE, decode
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.raw_hcall import replies_to as raw_replies

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
DEPTHS = (40, 1000, 30_000)


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS,
                         policy=PolicyConfig(errinjct=True))
    with Platform(cfg, tmp_path_factory.mktemp("ids")) as p:
        yield p


def nested(depth: int) -> bytes:
    """An array value nested `depth` deep (the message around it adds 2 more levels)."""
    return b"[" * depth + b"]" * depth


def id_first(msg_id: int, depth: int) -> bytes:
    return (b'{"v":1,"id":%d,"call":"report","args":{"step":"reset","detail":{"x":%s}}}'
            % (msg_id, nested(depth)))


def id_after(msg_id: int, depth: int) -> bytes:
    return (b'{"v":1,"call":"report","args":{"step":"reset","detail":{"x":%s}},"id":%d}'
            % (nested(depth), msg_id))


def replies_to(plat: Platform, lines: list[bytes]) -> list[dict[str, object]]:
    """Send `lines` and a sentinel on one connection of g1; every reply up to the
    sentinel's (events skipped)."""
    return raw_replies(plat.hcall_path("g1"), lines)


@pytest.mark.parametrize("depth", DEPTHS)
def test_a_request_nested_too_deep_gets_its_id_back(plat: Platform, depth: int) -> None:
    line = id_first(1000 + depth, depth)
    assert len(line) <= MAX_LINE
    t0 = time.monotonic()
    replies = replies_to(plat, [line])
    took = time.monotonic() - t0
    print(f"\nnested {depth}: one reply in {took * 1000:.1f} ms: {replies[0]}")
    assert len(replies) == 2, replies
    assert replies[0]["id"] == 1000 + depth, replies[0]
    assert replies[0]["status"] == -3 and "nested deeper than 32" in str(replies[0]["error"])


@pytest.mark.parametrize("depth", DEPTHS)
def test_an_id_that_cannot_be_read_is_null(plat: Platform, depth: int) -> None:
    lines = [
        id_after(7, depth),  # the nesting comes first: the id is never reached
        b'{"v":1,"id":"7","call":"report","args":{"x":%s}}' % nested(depth),  # not an int
        b'{"v":1,"id":-1,"call":"report","args":{"x":%s}}' % nested(depth),  # not a request id
        b'{"v":1,"id":7.5,"call":"report","args":{"x":%s}}' % nested(depth),
        b'{"v":NaN,"id":7,"call":"report","args":{"x":%s}}' % nested(depth),  # broken before
        b'{"v":1,"v":1,"id":7,"args":{"x":%s}}' % nested(depth),  # repeated key before it
        b'[{"id":7,"x":%s}]' % nested(depth),  # not an object
        b'{"a":{"id":7},"x":%s}' % nested(depth),  # not top-level
        nested(depth),
    ]
    replies = replies_to(plat, lines)
    assert len(replies) == len(lines) + 1, replies
    for line, reply in zip(lines, replies, strict=False):
        assert reply["id"] is None and reply["status"] == -3, (line[:60], reply)


def test_other_refusals_after_the_id_echo_it(plat: Platform) -> None:
    """Not only depth: any reason the line is refused after its id member was read."""
    lines = [
        b'{"v":1,"id":11,"call":"report","args":{"x":NaN}}',
        b'{"v":1,"id":12,"call":"report","args":{"x":1e999}}',
        b'{"v":1,"id":13,"call":"report","args":{"x":1,"x":2}}',
        b'{"v":1,"id":14,"call":"report","args":{"x":"\xff"}}',
        b'{"v":1,"id":15,"call":"report","args":{"x":',
        b'{ "v" : 1 , "id" : 16 , "call":"report","args":{"x":[}}',
    ]
    replies = replies_to(plat, lines)
    assert [r["id"] for r in replies[:-1]] == [11, 12, 13, 14, 15, 16], replies


def test_the_id_scan_is_bounded() -> None:
    """A 64 KiB line of 6,000 members before a nesting: refused in bounded time."""
    members = b",".join(b'"k%d":0' % i for i in range(6000))
    prefix = b'{"v":1,"id":5,' + members + b',"x":'
    line = prefix + b"[" * (MAX_LINE - len(prefix))
    t0 = time.monotonic()
    for _ in range(20):
        with pytest.raises(Exception) as e:
            decode(line)
    per = (time.monotonic() - t0) / 20
    print(f"\n{len(line)} bytes refused in {per * 1000:.2f} ms each: {e.value}")
    assert getattr(e.value, "msg_id", None) == 5
    assert per < 0.05
