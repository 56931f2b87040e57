"""A VF driver's books: every frame it accepted ends somewhere, and is counted there.

TX, at any moment (under the driver's lock):

    submitted == sent + errors + dropped + in_ring + queued

- `submitted`: frames `send()` accepted into the books (refused ones are `dropped` too);
- `sent`: the hardware completed the descriptor with DD and no error;
- `errors`: completed with DD | ERR (by code in `error_codes`: 1 bad length, 2 spoofed,
  3 adapter failed);
- `dropped`: given up by the driver, by reason (`drop_reasons`: too long, backlog full,
  detached, permanent failure, ...);
- `in_ring`: handed to hardware, not completed yet;
- `queued`: in the driver's backlog, not yet handed to hardware (during recovery this
  includes frames taken back from the ring: `held`).

Recovery moves frames from the ring back to the backlog: `reclaimed` counts them (the
hardware counts the same descriptors TX_DROPPED when the ring is reprogrammed or reset),
and `replayed` counts the reclaimed frames handed to hardware again. `posted` counts every
descriptor handed to hardware, replays included (the hardware's view: TX_PACKETS +
TX_ERRORS + TX_DROPPED + pending).

RX: `received` frames (DD, no error) == `delivered` (to recv/the callback) + `dropped`
(receive queue full) + `queued`; `errors` counts descriptors completed with an error.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TxLedger:
    submitted: int = 0
    sent: int = 0
    bytes_sent: int = 0
    errors: int = 0
    dropped: int = 0
    posted: int = 0
    reclaimed: int = 0
    replayed: int = 0
    error_codes: Counter[int] = field(default_factory=Counter)
    drop_reasons: Counter[str] = field(default_factory=Counter)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped += n
        self.drop_reasons[reason] += n

    def balanced(self, in_ring: int, queued: int) -> bool:
        return self.submitted == self.sent + self.errors + self.dropped + in_ring + queued

    def to_json(self, in_ring: int, queued: int, held: int) -> dict[str, Any]:
        return {"submitted": self.submitted, "sent": self.sent, "bytes": self.bytes_sent,
                "errors": self.errors, "dropped": self.dropped, "in_ring": in_ring,
                "queued": queued, "held": held, "posted": self.posted,
                "reclaimed": self.reclaimed, "replayed": self.replayed,
                "error_codes": {str(k): v for k, v in sorted(self.error_codes.items())},
                "drop_reasons": dict(sorted(self.drop_reasons.items())),
                "balanced": self.balanced(in_ring, queued)}


@dataclass
class RxLedger:
    received: int = 0
    bytes: int = 0
    errors: int = 0
    delivered: int = 0
    dropped: int = 0
    error_codes: Counter[int] = field(default_factory=Counter)

    def balanced(self, queued: int) -> bool:
        return self.received == self.delivered + self.dropped + queued

    def to_json(self, queued: int) -> dict[str, Any]:
        return {"received": self.received, "bytes": self.bytes, "errors": self.errors,
                "delivered": self.delivered, "dropped": self.dropped, "queued": queued,
                "error_codes": {str(k): v for k, v in sorted(self.error_codes.items())},
                "balanced": self.balanced(queued)}
