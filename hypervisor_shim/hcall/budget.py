"""Per-guest budgets on what a guest's platform calls make the host do (issue 20).

`report` is the one call a guest may make at will (any step, no PE needed) whose effect
grows the host: a timeline entry, a line of `events.jsonl` and an `EEH_RECOVERY_STEP`
pushed to every console client. Its budget, per caller (owner) and per PE it reports on
(its reports naming no PE share one more), is a token bucket:
`rate_per_s` reports a second with bursts of `burst`; over it the call answers -2 (busy)
with `retry_ms`, and the timeline records one summarized entry per `window_s` of
refusals (how many were refused). A `detail` over `max_detail_bytes` (as JSON) answers
-3. The numbers are declared here, once; docs/platform-calls.md states them.

`ChannelBudget` bounds the host memory one connection's unread output may take: replies
and pushed events wait in the connection's write buffer while the caller does not read;
when more than `max_unread_bytes` wait as the next reply or event is to be sent, the
connection is aborted (its waiting output dropped), logged with the numbers and recorded
as one `channel-closed` timeline entry carrying them (`over_budget: true`).
"""

from __future__ import annotations

from dataclasses import dataclass


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

    def take(self, budget: ReportBudget, now: float) -> bool:
        self.tokens = min(float(budget.burst),
                          self.tokens + (now - self.last) * budget.rate_per_s)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
