"""A call refused in the lockout is registered with the channel and written by its reader
thread when the platform pushes that PE's `lockout-lifted` (eeh_abi.hcall.Channel.on_lift,
issue 22): one write for every registered call of the lifted PEs, before the subscribers
(and so the driver threads) hear of the lift; the caller only takes its reply. Without a
lift the caller writes it itself (the fallback); a dropped one, or one on a closed
channel, is never written.

A raw peer on a socket pair stands for the platform in the channel's tests; the last test
runs the real drivers against the real platform, every VF meeting the lockout."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from eeh_abi.hcall import Channel, ChannelClosed, LiftRetry, Reply
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.agent import Agent
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.channel_peer import channel
from tests.support.channels import TapChannel
from tests.support.platform_rig import holding_backend
from tests.support.waiting import wait_for

PE_A, PE_B, PE_C = 0x18000, 0x18100, 0x18200


def reply_in_thread(ch: Channel, retry: LiftRetry) -> tuple[threading.Thread, list[object]]:
    got: list[object] = []

    def run() -> None:
        try:
            got.append(ch.retry_reply(retry, timeout=10))
        except ChannelClosed as e:
            got.append(e)

    t = threading.Thread(target=run)
    t.start()
    return t, got


def test_the_reader_writes_the_registered_calls_of_the_lifted_pes_in_one_write() -> None:
    with channel() as (ch, peer):
        heard: list[tuple[int | None, int]] = []
        # a subscriber hears the lift after the calls were written (the driver threads
        # it wakes find their call gone out)
        ch.subscribe(lambda ev: heard.append((ev.pe, ch.lift_retries_written)))
        ra = ch.on_lift(Call.SET_SLOT_RESET, PE_A, function=1)
        rb = ch.on_lift(Call.SET_EEH_OPTION, PE_B, option=2)
        rc = ch.on_lift(Call.SET_SLOT_RESET, PE_C, function=1)  # its PE is not lifted
        assert not peer.readable(0.05)  # registered: nothing written
        peer.lift(PE_A, PE_B)
        msgs = peer.read_lines()  # both in one write
        assert [(m["call"], m["args"]) for m in msgs] == [
            ("set-slot-reset", {"pe": PE_A, "function": 1}),
            ("set-eeh-option", {"pe": PE_B, "option": 2})]
        assert all(not m.get("quiet") for m in msgs)
        assert wait_for(lambda: len(heard) == 2, 5)
        assert heard == [(PE_A, 2), (PE_B, 2)]
        peer.answer(msgs)
        ta, got_a = reply_in_thread(ch, ra)
        tb, got_b = reply_in_thread(ch, rb)
        ta.join(10)
        tb.join(10)
        assert isinstance(got_a[0], Reply) and got_a[0].ok and got_a[0].id == msgs[0]["id"]
        assert isinstance(got_b[0], Reply) and got_b[0].ok and got_b[0].id == msgs[1]["id"]
        assert not peer.readable(0.05)  # PE_C's call stays registered
        assert ch.lift_retries_written == 2
        ch.drop_retry(rc)


def test_without_a_lift_the_caller_writes_its_call_itself() -> None:
    with channel() as (ch, peer):
        retry = ch.on_lift(Call.SET_SLOT_RESET, PE_A, function=1)
        t, got = reply_in_thread(ch, retry)  # the fallback: no lift came in time
        msgs = peer.read_lines()
        assert [(m["call"], m["args"]) for m in msgs] == [
            ("set-slot-reset", {"pe": PE_A, "function": 1})]
        peer.answer(msgs)
        t.join(10)
        assert isinstance(got[0], Reply) and got[0].ok
        peer.lift(PE_A)  # a lift after it: nothing left to write
        assert not peer.readable(0.2)
        assert ch.lift_retries_written == 0


def test_a_dropped_call_is_not_written_and_its_late_reply_is_ignored() -> None:
    with channel() as (ch, peer):
        retry = ch.on_lift(Call.SET_SLOT_RESET, PE_A, function=1)
        ch.drop_retry(retry)
        peer.lift(PE_A)
        assert not peer.readable(0.2)
        # written, then dropped (a restart right after the lift): its reply goes nowhere
        retry = ch.on_lift(Call.SET_SLOT_RESET, PE_B, function=1)
        peer.lift(PE_B)
        msgs = peer.read_lines()
        ch.drop_retry(retry)
        peer.answer(msgs)
        with pytest.raises(ChannelClosed):
            ch.retry_reply(retry, timeout=1)  # dropped: nothing to wait for
        threading.Thread(target=lambda: peer.answer(peer.read_lines()), daemon=True).start()
        r = ch.call(Call.READ_SLOT_RESET_STATE2, timeout=10, pe=PE_A)
        assert r.ok  # the channel goes on
        assert ch.handler_errors == 0 and ch.bad_lines == 0


def test_a_closed_channel_drops_the_registered_calls() -> None:
    with channel() as (ch, peer):
        retry = ch.on_lift(Call.SET_SLOT_RESET, PE_A, function=1)
        t, got = reply_in_thread(ch, retry)  # the thread's fallback is under way...
        peer.read_lines()  # ...it wrote the call: the platform goes away unanswered
        peer.sock.close()
        t.join(10)
        assert isinstance(got[0], ChannelClosed)
        assert wait_for(lambda: ch.closed, 5)
        with pytest.raises(ChannelClosed):
            ch.on_lift(Call.SET_SLOT_RESET, PE_B, function=1)
    with channel() as (ch, peer):
        retry = ch.on_lift(Call.SET_SLOT_RESET, PE_A, function=1)
        peer.sock.close()  # closed while the call is registered
        assert wait_for(lambda: ch.closed, 5)
        with pytest.raises(ChannelClosed):
            ch.retry_reply(retry, timeout=5)


class RetryingTap(TapChannel):
    """A tap that lets the channel write the registered calls (Services uses `on_lift`
    only from a channel whose class has it) and counts them."""

    def on_lift(self, call: Call, pe: int, **args: Any) -> LiftRetry:
        retry: LiftRetry = self.inner.on_lift(call, pe, **args)  # type: ignore[attr-defined]
        return retry

    def retry_reply(self, retry: LiftRetry, timeout: float | None = None) -> Reply:
        reply: Reply = self.inner.retry_reply(retry, timeout)  # type: ignore[attr-defined]
        return reply

    def drop_retry(self, retry: LiftRetry) -> None:
        self.inner.drop_retry(retry)  # type: ignore[attr-defined]


def test_every_vf_unfreeze_after_the_lift_is_written_by_the_reader(tmp_path: Path) -> None:
    nvfs = 4
    names = [f"vf{n}" for n in range(nvfs)]
    cfg = PlatformConfig(total_vfs=nvfs, enabled_vfs=nvfs,
                         owners={"pf": HOST, **dict.fromkeys(names, HOST)})
    with Platform(cfg, tmp_path) as plat:
        backend = holding_backend(plat, names)
        tap = backend.channel
        assert isinstance(tap, TapChannel)
        retrying = RetryingTap(tap.inner)
        retrying.before = tap.before
        backend.channel = retrying  # type: ignore[assignment]
        inner: Channel = tap.inner  # type: ignore[assignment]
        agent = Agent(backend, poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            plat.inject_adapter_error()
            assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered >= 1
                                        for d in agent.drivers.values()), 30)
            by_event = sum(d.recovery.lockout_woken_by_event for d in agent.drivers.values()
                           if d.recovery is not None)
        finally:
            agent.stop()
        tl = plat.timeline.snapshot()
    assert inner.lift_retries_written == nvfs == by_event
    for name in names:  # the timeline's order as without it
        mine = [e for e in tl if e.pe == name and (e.source in ("driver", "call")
                                                   or e.kind == Kind.LOCKOUT_LIFTED)]
        kinds = [(e.source, e.kind) for e in mine]
        refused = kinds.index(("driver", "unfreeze-refused"))
        lift = kinds.index(("policy", "lockout-lifted"))
        first_ok = next(i for i, e in enumerate(mine) if i > lift and e.source == "call"
                        and e.data.get("status") == 0
                        and e.kind in ("set-slot-reset", "set-eeh-option"))
        report = kinds.index(("driver", "lockout-lifted"))
        assert refused < lift < first_ok < report, (name, kinds)
        assert lift + 1 == first_ok, (name, kinds)  # nothing of this VF in between
