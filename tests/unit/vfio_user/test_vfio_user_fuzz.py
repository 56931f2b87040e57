"""Random and hostile message sequences against the real PF and VF behind a Session.

Every message gets a well-formed reply (or none, if posted), no handler fails with an
exception the session did not expect (those are bugs: logged as "failed unexpectedly"),
and afterwards the function still answers.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_model import Adapter, AdapterConfig
from device_model.clock import ManualClock
from vfio_user import ServerConfig, Session
from vfio_user import codec as c
from vfio_user.framing import Frame

MB = 1 << 20
U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)
# mostly where registers are (BAR0, config space, the MSI-X BAR), sometimes anywhere
OFFSETS = st.one_of(st.integers(0, 0x7F).map(lambda o: o * 4), st.integers(0, 0x1100),
                    st.sampled_from([2**32 - 4, 2**63, 2**64 - 4]))
COUNTS = st.one_of(st.sampled_from([4, 4, 4, 1, 2, 8]), st.integers(0, 64), U32)
SIZED = st.sampled_from([4, 4, 4, 1, 2, 8, 0, 3, 16]).flatmap(
    lambda n: st.binary(min_size=n, max_size=n))  # mostly what registers take
REGIONS = st.one_of(st.sampled_from([0, 7, 3]), st.integers(0, 10))


def _region_read() -> st.SearchStrategy[tuple[int, bytes]]:
    return st.builds(lambda o, r, n: (c.Command.REGION_READ, c.RegionAccess(o, r, n).pack()),
                     OFFSETS, REGIONS, COUNTS)


def _region_write() -> st.SearchStrategy[tuple[int, bytes]]:
    def make(o: int, r: int, data: bytes, lie: int | None) -> tuple[int, bytes]:
        n = len(data) if lie is None else lie
        return c.Command.REGION_WRITE, c.RegionAccess(o, r, n).pack() + data

    lie = st.sampled_from([None] * 9 + [0]).flatmap(  # now and then a count that lies
        lambda x: st.none() if x is None else COUNTS)
    return st.builds(make, OFFSETS, REGIONS, SIZED, lie)


def _irq_set() -> st.SearchStrategy[tuple[int, bytes]]:
    def make(flags: int, index: int, start: int, count: int, extra: bytes) -> tuple[int, bytes]:
        return c.Command.DEVICE_SET_IRQS, c.IrqSet(20 + len(extra), flags, index, start,
                                                   count).pack() + extra

    flags = st.one_of(st.sampled_from([0x21, 0x22, 0x09, 0x11, 0x0A, 0x24, 0x01]), U32)
    return st.builds(make, flags, st.integers(0, 6), st.integers(0, 40), st.integers(0, 40),
                     st.binary(max_size=8))


def _dma() -> st.SearchStrategy[tuple[int, bytes]]:
    addrs = st.one_of(st.integers(0, 4 * MB).map(lambda a: a & ~0xFFF), U64)
    sizes = st.one_of(st.sampled_from([4096, MB, 0]), U64)
    dma_map = st.builds(lambda f, a, s: (c.Command.DMA_MAP, c.DmaMap(32, f, 0, a, s).pack()),
                        st.integers(0, 7), addrs, sizes)
    dma_unmap = st.builds(lambda f, a, s: (c.Command.DMA_UNMAP,
                                           c.DmaUnmap(24, f, a, s).pack()),
                          st.integers(0, 3), addrs, sizes)
    return st.one_of(dma_map, dma_unmap)


def _info() -> st.SearchStrategy[tuple[int, bytes]]:
    argsz = st.integers(0, 200)
    return st.one_of(
        st.builds(lambda a: (c.Command.DEVICE_GET_INFO, c.DeviceInfo(a, 0, 0, 0).pack()),
                  argsz),
        st.builds(lambda a, i: (c.Command.DEVICE_GET_REGION_INFO,
                                c.RegionInfo(a, 0, i, 0, 0, 0).pack()),
                  argsz, st.integers(0, 12)),
        st.builds(lambda a, i: (c.Command.DEVICE_GET_IRQ_INFO, c.IrqInfo(a, 0, i, 0).pack()),
                  argsz, st.integers(0, 8)),
        st.just((c.Command.DEVICE_RESET, b"")),
    )


def _write_multi() -> st.SearchStrategy[tuple[int, bytes]]:
    def make(n: int, entries: list[tuple[int, int, int, bytes]]) -> tuple[int, bytes]:
        body = b"".join(c.WriteOne(o, r, k, d.ljust(8, b"\0")[:8]).pack()
                        for o, r, k, d in entries)
        return c.Command.REGION_WRITE_MULTI, c.WriteMultiHead(n).pack() + body

    entry = st.tuples(OFFSETS, REGIONS, st.integers(0, 12), st.binary(max_size=8))
    return st.builds(make, st.integers(0, 20), st.lists(entry, max_size=6))


def _raw() -> st.SearchStrategy[tuple[int, bytes]]:
    return st.tuples(st.integers(0, 40), st.binary(max_size=64))


MESSAGES = st.one_of(_region_write(), _region_read(), _region_write(), _irq_set(), _dma(),
                     _info(), _region_write(), _write_multi(), _raw())
ADVANCE = -1  # a step that lets the adapter's clock run (resets finish, timers fire)
FDS = st.sampled_from([0, 0, 0, 0, 1, 2, 3])  # eventfds sent with a message
STEPS = st.lists(st.one_of(st.tuples(MESSAGES, st.booleans(), FDS),
                           st.tuples(st.tuples(st.just(ADVANCE), st.binary(max_size=0)),
                                     st.booleans(), st.just(0))),
                 min_size=1, max_size=25)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _session(which: str) -> tuple[Session, int, ManualClock]:
    clock = ManualClock()
    adapter = Adapter(AdapterConfig(total_vfs=2), clock=clock)
    adapter.pf.enable_vfs(2)
    fn = adapter.function(which)
    s = Session(fn, ServerConfig())
    assert s.process(Frame(c.Header(0, c.Command.VERSION, 20, 0, 0),
                           c.encode_version(0, 0), [])) is not None
    ram = os.memfd_create("fuzz-ram")
    os.ftruncate(ram, MB)
    reply = s.process(Frame(c.Header(1, c.Command.DMA_MAP, 48, 0, 0),
                            c.DmaMap(32, 3, 0, 0, MB).pack(), [os.dup(ram)]))
    assert reply is not None and c.Header.unpack(reply).error == 0
    return s, ram, clock


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["pf", "vf0"]), steps=STEPS)
def test_random_messages_never_break_the_session(
    which: str, steps: list[tuple[tuple[int, bytes], bool, int]],
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    fds_before = _open_fds()
    session, ram, clock = _session(which)
    try:
        for i, ((command, payload), posted, nfds) in enumerate(steps, start=2):
            if command == ADVANCE:
                clock.advance(0.5 if posted else 0.005)
                continue
            flags = c.NO_REPLY if posted else 0
            header = c.Header(i, command, 16 + len(payload), flags, 0)
            fds = [os.eventfd(0) for _ in range(nfds)]  # the session owns them from here
            reply = session.process(Frame(header, payload, fds))
            if posted:
                assert reply is None
                continue
            assert reply is not None
            got = c.Header.unpack(reply)
            assert (got.id, got.command) == (i, command)
            assert got.flags & c.TYPE_MASK == c.TYPE_REPLY
            assert got.size == len(reply)
        bad = [r.getMessage() for r in caplog.records if "unexpectedly" in r.getMessage()]
        assert not bad, bad
        # the function still answers: its vendor/device ID (all-ones if a message froze it)
        final = session.process(Frame(c.Header(999, c.Command.REGION_READ, 32, 0, 0),
                                      c.RegionAccess(0, 7, 4).pack(), []))
        assert final is not None and c.Header.unpack(final).error == 0
        ids = int.from_bytes(final[-4:], "little")
        assert ids in (0x10EE1B36, 0x10EF1B36, 0xFFFFFFFF)
    finally:
        session.close()
        os.close(ram)
    assert _open_fds() == fds_before  # every received fd closed or released
