"""Per-guest budgets on what a guest's platform calls make the host do (issue 20).

`report` is the one call a guest may make at will (any step, no PE needed) whose effect
grows the host: a timeline entry, a line of `events.jsonl` and an `EEH_RECOVERY_STEP`
pushed to every console client. Its budget, per caller (owner) and per PE it reports on
(its reports naming no PE share one more), is a token bucket:
`rate_per_s` reports a second with bursts of `burst`; over it the call answers -2 (busy)
with `retry_ms`, and the timeline records one summarized entry per `window_s` of
refusals (how many were refused). A `detail` over `max_detail_bytes` (as JSON) answers
-3. The numbers are declared here, once; docs/platform-calls.md states them.

`RecordBudget` bounds what any call of an owner makes the host write and push: the bytes
of timeline entries (each also a line of `events.jsonl`; the console's events mirror
them) written while its calls are answered, its own entries and the policy's notices
they cause. Over it any call answers -2 with `retry_ms` (when the budget holds bytes
again), is not run nor recorded, and one summarized entry per owner per `window_s`
counts the refusals (`RecordBudgets`).

`ChannelBudget` bounds the host memory one connection's unread output may take: replies
and pushed events wait in the connection's write buffer while the caller does not read;
when more than `max_unread_bytes` wait as the next reply or event is to be sent, the
connection is aborted (its waiting output dropped), logged with the numbers and recorded
as one `channel-closed` timeline entry carrying them (`over_budget: true`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReportBudget:
    rate_per_s: float = 500.0  # reports a second, per owner and PE, sustained
    burst: int = 1000  # reports at once, per owner and PE (the bucket's size)
    max_detail_bytes: int = 8192  # a report's `detail`, as JSON
    window_s: float = 1.0  # refusals summarized in one timeline entry per window
    retry_ms: int = 100  # the hint in a -2 reply


REPORT_BUDGET = ReportBudget()


@dataclass(frozen=True)
class ChannelBudget:
    max_unread_bytes: int = 1 << 20  # replies and events waiting unread, per connection


CHANNEL_BUDGET = ChannelBudget()


@dataclass
class Bucket:
    """One owner's report budget: its tokens and its current window of refusals."""

    tokens: float
    last: float  # when tokens were last refilled (monotonic seconds)
    refused: int = 0  # refusals in the open window
    window_start: float = 0.0
    refused_total: int = 0

    def take(self, budget: ReportBudget, now: float, n: int = 1) -> bool:
        """Take `n` tokens (a batched report's steps), all or none."""
        self.tokens = min(float(budget.burst),
                          self.tokens + (now - self.last) * budget.rate_per_s)
        self.last = now
        if self.tokens >= n:
            self.tokens -= n
            return True
        return False


@dataclass(frozen=True)
class RecordBudget:
    """What one owner's calls may make the platform write to its timeline (events.jsonl
    and the entries kept in memory), in bytes of JSON lines: every entry written while
    one of its calls is answered (the call's own entry or report, the policy's notices it
    causes) is charged to it."""

    bytes_per_s: int = 1 << 20  # sustained, per owner
    burst_bytes: int = 8 << 20  # at once, per owner (the bucket's size)
    window_s: float = 1.0  # refusals summarized in one timeline entry per call per window
    min_retry_ms: int = 10  # the least hint in a -2 reply


RECORD_BUDGET = RecordBudget()


@dataclass
class RecordBucket:
    """One owner's record budget: its tokens (bytes; below zero after a costly call) and
    its open window of refusals."""

    tokens: float
    last: float
    refused: dict[str, int] = field(default_factory=dict)  # call -> refusals this window
    window_start: float = 0.0
    refused_total: int = 0


OTHER_CALLS = "(other)"  # a summary's key for names beyond the first 16 refused


class RecordBudgets:
    """Every owner's `RecordBudget`: `admit` before answering a call, `charge` what
    answering it wrote, `due` the summaries of refusals whose window is over. A call is
    admitted while the owner's bucket holds any bytes, so an owner writes at most
    `burst_bytes + bytes_per_s * t` bytes in t seconds, plus one call's worth (the last
    one admitted, charged after the fact: a reply or report, under 64 KiB)."""

    def __init__(self, budget: RecordBudget = RECORD_BUDGET,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.budget = budget
        self.clock = clock
        self.buckets: dict[str, RecordBucket] = {}
        self.refusing = False  # some bucket has an open window of refusals (for `due`)

    def _bucket(self, owner: str, now: float) -> RecordBucket:
        b = self.buckets.get(owner)
        if b is None:
            b = self.buckets[owner] = RecordBucket(float(self.budget.burst_bytes), now)
        b.tokens = min(float(self.budget.burst_bytes),
                       b.tokens + (now - b.last) * self.budget.bytes_per_s)
        b.last = now
        return b

    def admit(self, owner: str, call: str) -> int | None:
        """None if `owner` may make `call` now; else the refusal is counted and its
        retry hint (ms: when the bucket holds bytes again) returned."""
        now = self.clock()
        b = self._bucket(owner, now)
        if b.tokens > 0:
            return None
        if not b.refused:
            b.window_start = now
        self.refusing = True
        key = call[:64] if call in b.refused or len(b.refused) < 16 else OTHER_CALLS
        b.refused[key] = b.refused.get(key, 0) + 1
        b.refused_total += 1
        return max(self.budget.min_retry_ms,
                   math.ceil((1.0 - b.tokens) / self.budget.bytes_per_s * 1000))

    def charge(self, owner: str, nbytes: int) -> None:
        """After `admit` (which refilled the bucket just now): the refill up to this
        instant comes with the next `admit`."""
        b = self.buckets.get(owner)
        if b is None:
            b = self._bucket(owner, self.clock())
        b.tokens -= nbytes

    def due(self, force: bool = False) -> list[tuple[str, str, dict[str, Any]]]:
        """(owner, the call refused most, data) for each window of refusals that is over
        (every open one with `force`); those windows are closed."""
        if not self.refusing:  # (every call: nothing to look at, most of the time)
            return []
        now = self.clock()
        out = []
        for owner, b in self.buckets.items():
            if b.refused and (force or now - b.window_start >= self.budget.window_s):
                top = max(b.refused, key=lambda k: b.refused[k])
                out.append((owner, top, {
                    "status": -2, "over_budget": True, "budget": "records",
                    "refused": sum(b.refused.values()), "calls": dict(b.refused),
                    "window_s": round(now - b.window_start, 3),
                    "refused_total": b.refused_total}))
                b.refused = {}
        self.refusing = any(b.refused for b in self.buckets.values())
        return out
