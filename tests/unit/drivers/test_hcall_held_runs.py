"""A thread's open run of held reports (eeh_abi.report_runs, issue 22) is its own: other
threads' writes leave it, it goes out whole with the thread's next call (a waited report
on its PE being its last step, in the same line), and the reader writes a run left open
too long. A raw peer on a socket pair stands for a platform that takes batched reports
(tests.unit.drivers.test_hcall_held_writes)."""

from __future__ import annotations

import socket
import threading
from typing import Any

from eeh_abi.hcall import Channel, Reply
from eeh_abi.report_runs import HOLD_MAX_S
from eeh_abi.schema import Call
from tests.support.channel_peer import RawPeer, channel
from tests.support.waiting import wait_for

VF0, VF1 = 0x18000, 0x18100


def held(ch: Channel, pe: int, steps: list[str], refused: list[Reply]) -> None:
    for s in steps:
        ch.post(Call.REPORT, refused.append, quiet=True, hold=True, step=s, pe=pe)


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(fn()))
    t.start()
    return t, got


def round_then(ch: Channel, steps: list[str], refused: list[Reply], pe: int,
               step: str) -> tuple[threading.Thread, list[Any]]:
    """A thread holding `steps` on VF0, then waiting for a report of `step` on `pe`."""
    def run() -> Reply:
        held(ch, VF0, steps, refused)
        return ch.call(Call.REPORT, timeout=10, pe=pe, step=step)
    return in_thread(run)


def steps_of(msg: dict[str, Any]) -> list[str]:
    a = msg["args"]
    return [s["step"] for s in a["steps"]] if "steps" in a else [a["step"]]


def test_another_threads_call_leaves_a_threads_open_run() -> None:
    with channel() as (ch, peer):
        ch.report_steps = 64  # (as learnt from query-functions)
        refused: list[Reply] = []
        held(ch, VF0, ["configure", "pf-reset-done"], refused)  # this thread's run
        t, got = in_thread(lambda: ch.call(Call.READ_SLOT_RESET_STATE2, timeout=10, pe=VF1))
        msgs = peer.read_lines()  # the other thread's call alone
        assert [m["call"] for m in msgs] == ["read-slot-reset-state2"], msgs
        peer.answer(msgs)
        t.join(10)
        assert got and got[0].ok
        held(ch, VF0, ["config-restored"], refused)  # the run takes more
        t, got = in_thread(lambda: ch.call(Call.READ_SLOT_RESET_STATE2, timeout=10, pe=VF1))
        msgs = peer.read_lines()
        assert [m["call"] for m in msgs] == ["read-slot-reset-state2"], msgs
        peer.answer(msgs)
        t.join(10)
        ch.flush()  # this thread's flush writes its run: one line, an id after the calls'
        (run,) = peer.read_lines()
        assert steps_of(run) == ["configure", "pf-reset-done", "config-restored"]
        assert run["quiet"] is True and int(str(run["id"])) > int(str(msgs[0]["id"]))
        # the later reply did not settle it: its refusal still reaches every report
        assert ch.posted_pending == 1
        peer.sock.sendall(b'{"v":1,"id":%d,"status":-2}\n' % int(str(run["id"])))
        assert wait_for(lambda: len(refused) == 3, 10)
        assert ch.posted_pending == 0


def test_a_waited_report_on_the_runs_pe_is_its_last_step() -> None:
    with channel() as (ch, peer):
        ch.report_steps = 64
        refused: list[Reply] = []
        t, got = round_then(ch, ["slot-reset", "resume"], refused, VF0, "recovered")
        (line,) = peer.read_lines()  # one line, asking for its reply
        assert steps_of(line) == ["slot-reset", "resume", "recovered"]
        assert not line.get("quiet")
        peer.answer([line])
        t.join(10)
        assert got and got[0].ok and refused == []
        # refused: the waited call gets the refusal, each held report too
        t, got = round_then(ch, ["slot-reset"], refused, VF0, "recovered")
        (line,) = peer.read_lines()
        assert steps_of(line) == ["slot-reset", "recovered"]
        peer.sock.sendall(b'{"v":1,"id":%d,"status":-2}\n' % int(str(line["id"])))
        t.join(10)
        assert got and got[0].status == -2 and [r.status for r in refused] == [-2]
        # a waited report on another PE: the run goes first, as its own line
        t, got = round_then(ch, ["reset"], refused, VF1, "probe")
        msgs = peer.read_lines()
        assert [steps_of(m) for m in msgs] == [["reset"], ["probe"]]
        peer.answer(msgs)
        t.join(10)


def test_a_run_left_open_goes_out_while_other_lines_keep_coming() -> None:
    a, b = socket.socketpair()
    ch = Channel(a.fileno(), close=a.close, timeout=10)
    ch.report_steps = 64
    peer = RawPeer(b)
    try:
        t, _ = in_thread(lambda: held(ch, VF0, ["configure"], []))  # and ends: no flush
        t.join(10)
        seen: list[list[str]] = []
        stop = threading.Event()

        def busy() -> None:  # a line to the reader every 0.1 s: it never idles
            while not stop.wait(0.1):
                peer.sock.sendall(b'{"v":1,"event":"x","pe":1,"data":{},"t":0}\n')
        s, _ = in_thread(busy)
        try:
            def run_written() -> bool:
                if peer.readable():
                    seen.extend(steps_of(m) for m in peer.read_lines())
                return ["configure"] in seen
            assert wait_for(run_written, 10 * HOLD_MAX_S + 5)
        finally:
            stop.set()
            s.join(10)
    finally:
        ch.close()
        b.close()
