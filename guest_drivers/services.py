"""What every driver of one partition shares: the platform channel, event routing and
step reports.

A guest has one platform channel (a virtio port opens for one process only), so all its
drivers share one `Services`: it subscribes once to the channel's pushed events and hands
each to the listeners of its PE (`listen_pe`) and to the partition-wide listeners
(`listen`: hot-plug). Listeners run on the channel's reader thread and must not block.

`report(step, pe, detail)` is the platform call `report` with `guest_time` =
time.monotonic(): the host's timeline shows what each driver did and when. A report that
cannot be delivered is counted, never raised: reporting must not break recovery.
`report(..., wait=False)` posts it (`Channel.post`): written at once, in order with the
channel's other requests, without waiting for the reply (a recovery's step reports: in a
TCG guest a round trip costs several milliseconds, and a VF's recovery reports a dozen
steps). The platform handles a channel's requests in order, so when a later call (or a
waited-for report) returns, every report posted before it is in the timeline. A posted
report is quiet (`"quiet": true`): the platform answers it only if it refuses it (budget,
bad arguments), so a recovery's dozen reports per VF cost the platform's loop no reply
lines and this guest's reader thread no wake-ups; it counts as sent when written and
moves to failed if its refusal comes. A channel without `post` (test fakes) gets every
report as a call.

`with services.holding():` (a recovery round, on its driver thread): the thread's posted
reports are held (`Channel.post(..., hold=True)`) and go out in the same write as the
channel's next request, so a round's run of reports and the call after them cost the
platform one read and its loop one wake-up (and a guest one virtio kick), not one a line.
The thread calls `flush()` before it blocks (a wait for an event, a sleep while the PF
resets), and the scope's end flushes: a report is never held across a wait. The order of
the reports and their `guest_time` are as if each had been written when posted. Once the
platform announced batched reports (`report_steps` in its `query-functions` reply, read
by the channel), the thread's held reports on one PE go out as one `report` line with
`steps` (docs/platform-calls.md, "Batched reports"), recorded as the same entries; a
refused one is refused as a whole, each of its reports counted failed (`_refused` runs
once per report).

Retries on a lift (`on_lift`, `retry_reply`, `drop_retry`: eeh_abi.hcall's `Channel.on_lift`):
a recovery thread refused while its PE is locked out registers the call it will make
again; the channel's reader writes it when the platform pushes that PE's
`lockout-lifted`. A channel whose class has no `on_lift` (test fakes, a wrapper that
forwards other names, an older client) gets None from `on_lift`, and the thread makes
the call itself after the lift, as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Protocol

from eeh_abi.hcall import ChannelClosed, Event, EventHandler, HcallError, LiftRetry, Reply
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind

log = logging.getLogger("guest_drivers")

EventListener = Callable[[Event], None]


class ChannelLike(Protocol):
    """The part of eeh_abi.hcall.Channel drivers use (tests pass fakes)."""

    def call(self, call: Call, timeout: float | None = None, **args: Any) -> Reply: ...
    def subscribe(self, handler: EventHandler) -> None: ...
    def unsubscribe(self, handler: EventHandler) -> None: ...


class RetryingChannel(Protocol):
    """A channel that writes registered calls on a PE's lift (eeh_abi.hcall.Channel)."""

    def on_lift(self, call: Call, pe: int, **args: Any) -> LiftRetry: ...
    def retry_reply(self, retry: LiftRetry, timeout: float | None = None) -> Reply: ...
    def drop_retry(self, retry: LiftRetry) -> None: ...


class Services:
    def __init__(self, channel: ChannelLike, *, echo: Callable[[str], None] | None = None
                 ) -> None:
        self.channel = channel
        self._lock = threading.Lock()
        self._by_pe: dict[int, list[EventListener]] = {}
        # partition-wide listeners, each with the event names it wants (None: every event)
        self._all: list[tuple[EventListener, frozenset[str] | None]] = []
        self._echo = echo  # also print each report (the agent's --verbose)
        self.reports_sent = 0
        self.reports_failed = 0
        self.listener_errors = 0
        self._holding = threading.local()  # .on: this thread's posted reports are held
        # a channel whose class has `on_lift` (eeh_abi.hcall.Channel): a wrapper that only
        # forwards unknown names (a test's tap on the calls) keeps the calls its own
        self._retrying: RetryingChannel | None = (
            channel if getattr(type(channel), "on_lift", None) is not None
            else None)  # type: ignore[assignment]
        channel.subscribe(self._dispatch)

    def close(self) -> None:
        self.channel.unsubscribe(self._dispatch)

    # ---- events
    def listen_pe(self, pe: int, listener: EventListener) -> None:
        with self._lock:
            self._by_pe.setdefault(pe, []).append(listener)

    def unlisten_pe(self, pe: int, listener: EventListener) -> None:
        with self._lock:
            lst = self._by_pe.get(pe, [])
            if listener in lst:
                lst.remove(listener)

    def listen(self, listener: EventListener, names: Iterable[str] | None = None) -> None:
        """`listener` gets every event of the partition, or only those named in `names`
        (an adapter error at 64 VFs is 64 pushed events of each kind: a listener that
        wants one kind should not be called for the others)."""
        with self._lock:
            self._all.append((listener, None if names is None else frozenset(names)))

    def unlisten(self, listener: EventListener) -> None:
        with self._lock:
            self._all = [(fn, names) for fn, names in self._all if fn != listener]

    def _dispatch(self, ev: Event) -> None:
        with self._lock:
            targets = [fn for fn, names in self._all if names is None or ev.name in names]
            if ev.pe is not None:
                targets += self._by_pe.get(ev.pe, [])
        for fn in targets:
            try:
                fn(ev)
            except Exception:
                self.listener_errors += 1
                log.exception("event listener failed on %s", ev.name)

    # ---- calls
    def call(self, call: Call, **args: Any) -> Reply:
        return self.channel.call(call, **args)

    # ---- retries on a lift (module docstring)
    def on_lift(self, call: Call, pe: int, **args: Any) -> LiftRetry | None:
        """Register `call` on `pe` to be written when its lockout lifts; None if this
        channel cannot (the caller makes the call itself after the lift)."""
        if self._retrying is None:
            return None
        try:
            return self._retrying.on_lift(call, pe, **args)
        except (ChannelClosed, HcallError, OSError):
            return None  # (the call made after the wait will say the channel is gone)

    def retry_reply(self, retry: LiftRetry) -> Reply:
        """The registered call's reply (written on the lift, or now: the fallback)."""
        assert self._retrying is not None  # (a retry comes only from on_lift)
        return self._retrying.retry_reply(retry)

    def drop_retry(self, retry: LiftRetry) -> None:
        if self._retrying is not None:
            self._retrying.drop_retry(retry)

    @contextmanager
    def holding(self) -> Iterator[None]:
        """This thread's posted reports are held until its next call, `flush()` or the
        end of the scope (module docstring). Nests."""
        outer = getattr(self._holding, "on", False)
        self._holding.on = True
        try:
            yield
        finally:
            self._holding.on = outer
            if not outer:
                self.flush()

    def flush(self) -> None:
        """Write the held reports now (before this thread blocks). Never raises: a report
        that cannot be delivered is the channel's loss, counted by its next call."""
        flush = getattr(self.channel, "flush", None)
        if flush is None:
            return
        try:
            flush()
        except (ChannelClosed, HcallError, OSError):
            pass

    def report(self, step: Kind, pe: int | None = None,
               detail: Mapping[str, Any] | None = None, *, wait: bool = True) -> bool:
        args: dict[str, Any] = {"step": step, "guest_time": time.monotonic()}
        if pe is not None:
            args["pe"] = pe
        if detail:
            args["detail"] = dict(detail)
        if self._echo is not None:
            self._echo(f"report {step} pe={pe:#x} {dict(detail or {})}" if pe is not None
                       else f"report {step} {dict(detail or {})}")
        post = None if wait else getattr(self.channel, "post", None)
        try:
            if post is not None:
                if getattr(self._holding, "on", False):
                    post(Call.REPORT, on_reply=self._refused, quiet=True, hold=True, **args)
                else:
                    post(Call.REPORT, on_reply=self._refused, quiet=True, **args)
                with self._lock:  # (its refusal may have been counted already)
                    self.reports_sent += 1
                return True
            reply = self.channel.call(Call.REPORT, **args)
        except (ChannelClosed, HcallError, OSError):
            with self._lock:
                self.reports_failed += 1
            return False
        self._posted_reply(reply)
        return reply.ok

    def _posted_reply(self, reply: Reply) -> None:
        with self._lock:
            if reply.ok:
                self.reports_sent += 1
            else:
                self.reports_failed += 1

    def _refused(self, reply: Reply) -> None:
        """A quiet posted report's reply: it was counted sent when posted; only a refusal
        is answered (an ok reply, from a platform that ignores the flag: nothing to do)."""
        if not reply.ok:
            with self._lock:
                self.reports_sent -= 1
                self.reports_failed += 1
