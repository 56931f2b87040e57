"""The platform channel's writes (eeh_abi.hcall.Channel, issue 22): held posts go out with
the next request or at flush(), a recovery round's reports are held (Services.holding),
and lines of threads calling at once are written by one of them, none left behind.

A raw peer on a socket pair stands for the platform: a line written by the channel is
readable on it at once (a unix socket's write is in the peer's buffer when it returns),
so "nothing readable" after a post means it was not written."""

from __future__ import annotations

import select
import threading

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.services import Services
from tests.support.channel_peer import channel
from tests.support.waiting import wait_for

PE = 0x18000


def call_in_thread(ch: Channel) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(
        ch.call(Call.READ_SLOT_RESET_STATE2, timeout=10, pe=PE)))
    t.start()
    return t, got


def test_held_posts_go_out_with_the_next_call_in_one_write() -> None:
    with channel() as (ch, peer):
        for n in range(3):
            ch.post(Call.REPORT, quiet=True, hold=True, step=f"s{n}", pe=PE)
        assert not peer.readable()  # held: nothing written yet
        t, got = call_in_thread(ch)
        msgs = peer.read_lines()  # one write: the held lines, then the call
        assert [m.get("call") for m in msgs] == ["report"] * 3 + ["read-slot-reset-state2"]
        assert [m["args"]["step"] for m in msgs[:3]] == ["s0", "s1", "s2"]  # type: ignore[index]
        ids = [int(str(m["id"])) for m in msgs]
        assert ids == sorted(ids) and all(m.get("quiet") is True for m in msgs[:3])
        peer.answer(msgs)
        t.join(10)
        assert got and getattr(got[0], "ok", False)
        assert ch.posted_pending == 0  # the call's reply settled the quiet posts


def test_flush_writes_what_is_held_and_a_plain_post_is_written_at_once() -> None:
    with channel() as (ch, peer):
        ch.post(Call.REPORT, quiet=True, hold=True, step="held", pe=PE)
        assert not peer.readable()
        ch.flush()
        assert [m["args"]["step"] for m in peer.read_lines()] == ["held"]  # type: ignore[index]
        ch.post(Call.REPORT, quiet=True, step="plain", pe=PE)
        assert [m["args"]["step"] for m in peer.read_lines()] == ["plain"]  # type: ignore[index]


def test_services_hold_a_rounds_reports_until_its_call_or_the_end() -> None:
    with channel() as (ch, peer):
        services = Services(ch)
        with services.holding():
            assert services.report(Kind.ERROR_DETECTED, PE, {"driver": "vf0"}, wait=False)
            assert not peer.readable()
            t, _ = call_in_thread(ch)  # another thread's call takes the held line along
            msgs = peer.read_lines()
            assert [m["call"] for m in msgs] == ["report", "read-slot-reset-state2"]
            peer.answer(msgs)
            t.join(10)
            assert services.report(Kind.RESET, PE, {"driver": "vf0"}, wait=False)
            assert not peer.readable()
        # the scope's end flushed it
        assert [m["args"]["step"] for m in peer.read_lines()] == [Kind.RESET]  # type: ignore[index]
        assert services.report(Kind.RESUME, PE, {"driver": "vf0"}, wait=False)
        assert [m["args"]["step"] for m in peer.read_lines()] == [Kind.RESUME]  # type: ignore[index]
        assert services.reports_sent == 3 and services.reports_failed == 0


def test_lines_of_many_threads_calling_at_once_all_go_out_once_each() -> None:
    threads, calls = 16, 40
    with channel() as (ch, peer):
        seen: list[int] = []
        stop = threading.Event()

        def platform() -> None:
            while not stop.is_set():
                if select.select([peer.sock], [], [], 0.05)[0]:
                    msgs = peer.read_lines()
                    seen.extend(int(str(m["id"])) for m in msgs)
                    peer.answer(msgs)

        srv = threading.Thread(target=platform)
        srv.start()
        errors: list[BaseException] = []

        def caller(n: int) -> None:
            try:
                for k in range(calls):
                    if k % 3 == 0:
                        ch.post(Call.REPORT, quiet=True, hold=k % 2 == 0, step="x", pe=PE)
                    assert ch.call(Call.READ_SLOT_RESET_STATE2, timeout=10, pe=PE).ok
            except BaseException as e:  # reported below
                errors.append(e)

        ts = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        ch.flush()
        posts = threads * len(range(0, calls, 3))
        assert wait_for(lambda: len(seen) >= threads * calls + posts, 10)
        stop.set()
        srv.join(10)
        assert not errors, errors[:3]
        assert sorted(seen) == list(range(1, threads * calls + posts + 1))
        assert seen == sorted(seen)  # written in id order
