"""Reset kinds and timing.

Timing is a frozen dataclass passed in `AdapterConfig`: `ResetTiming.FAST` completes every
reset synchronously (tests, benchmarks of the logic), `ResetTiming.SPEC` uses the numbers of
real hardware (hold 250 ms, settle 1.8 s, FLR 100 ms). Nothing ever sleeps: delays are
callbacks on the model's clock; a delay of 0 runs at once, in the caller's call.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar


class ResetKind(enum.IntEnum):
    """PE reset kinds, numbered as ibm,set-slot-reset functions."""

    HOT = 1  # on a VF PE: an FLR of the VF
    FUNDAMENTAL = 3


class FunctionReset(enum.Enum):
    """How one function got reset (for events and recovery info)."""

    FLR = "flr"  # PCIe Initiate FLR, or a hot reset of a VF PE
    SOFT = "soft"  # CTRL.RST in BAR0
    DEVICE = "device"  # the transport's VFIO_DEVICE_RESET
    HOT = "hot"  # part of an adapter PE hot reset
    FUNDAMENTAL = "fundamental"  # part of an adapter PE fundamental reset
    VF_DISABLE = "vf-disable"  # VF Enable cleared in the PF's SR-IOV capability


# PAPR recovery-info reset-kind codes (bits 28-29).
RECOVERY_KIND = {ResetKind.HOT: 1, ResetKind.FUNDAMENTAL: 2}
RECOVERY_KIND_FLR = 3


@dataclass(frozen=True)
class ResetTiming:
    hold: float = 0.0  # seconds an adapter PE reset stays asserted at least
    settle: float = 0.0  # seconds the adapter PE is unavailable (state 5) after release
    flr: float = 0.0  # seconds an FLR (or a VF PE hot reset) takes
    retry_hint_ms: int = 1000  # state-5 hint while a reset is held with no end known yet

    FAST: ClassVar[ResetTiming]
    SPEC: ClassVar[ResetTiming]

    def __post_init__(self) -> None:
        if min(self.hold, self.settle, self.flr) < 0 or self.retry_hint_ms < 0:
            raise ValueError("reset timings cannot be negative")


ResetTiming.FAST = ResetTiming()
ResetTiming.SPEC = ResetTiming(hold=0.25, settle=1.8, flr=0.1)
