"""What a PE's recovery (guest_drivers.recovery) works with: the drivers' error handlers
(Linux's struct pci_error_handlers), a PE's status as the platform reads it, the config
space a driver saves at probe and restores after a reset, the recovery's tunables, and its
outcome. Standard library and eeh_abi only (runs in guests)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Protocol

from eeh_abi import nic
from eeh_abi.papr import MAX_RESET_TRIES, ChannelState, ErsResult, PeState, SlotReset
from guest_drivers.platform.base import ConfigAccess


class ErrorHandlers(Protocol):
    """Linux's struct pci_error_handlers, for one function's driver. A driver may also
    have `recovery_detail() -> dict`, added to the "recovered" report."""

    def error_detected(self, state: ChannelState) -> ErsResult: ...
    def mmio_enabled(self) -> ErsResult: ...
    def slot_reset(self) -> ErsResult: ...
    def resume(self) -> None: ...


class Outcome(enum.Enum):
    RECOVERED = "recovered"
    DISCONNECTED = "disconnected"  # permanent failure, or a driver asked to disconnect
    ABORTED = "aborted"  # the driver is stopping: recovery left off, no callbacks


@dataclass(frozen=True)
class PeStatus:
    state: int
    retry_ms: int = 0
    flags: tuple[str, ...] = ()

    @property
    def permanent(self) -> bool:
        return (self.state == PeState.UNAVAILABLE and self.retry_ms == 0) or \
            "permanent" in self.flags


@dataclass
class SavedConfig:
    """The config space a driver saved at probe, restored after a PE reset (Linux's
    eeh_restore_device_bars / pci_restore_state for what this device needs): the saved
    values written back as they are, as pci_restore_config_space does (a reset leaves
    nothing of these registers worth keeping; the read-only bits of each, e.g. the MSI-X
    table size, are what the saved value holds): two writes, no read, in that order, as
    one message where the backend carries config writes together (`config_write_many`,
    optional: harness mode's one REGION_WRITE_MULTI, waited for as a config write is)."""

    command: int
    msix_ctl: int

    @classmethod
    def save(cls, cfg: ConfigAccess) -> SavedConfig:
        return cls(cfg.config_read(nic.CFG_COMMAND, 2), cfg.config_read(nic.MSIX_MSGCTL, 2))

    def restore(self, cfg: ConfigAccess) -> dict[str, int]:
        writes = [(nic.CFG_COMMAND, 2, self.command), (nic.MSIX_MSGCTL, 2, self.msix_ctl)]
        many = getattr(cfg, "config_write_many", None)
        if many is not None:
            many(writes)
        else:
            for offset, size, value in writes:
                cfg.config_write(offset, size, value)
        return {"command": self.command, "msix_ctl": self.msix_ctl}


@dataclass
class Participant:
    """One driver of the PE: its handlers and, for the restore, its config space."""

    name: str
    handlers: ErrorHandlers
    config: ConfigAccess | None = None
    saved: SavedConfig | None = None


@dataclass(frozen=True)
class RecoveryPolicy:
    # reset kind of each try (at most MAX_RESET_TRIES); a VF PE has no fundamental reset
    reset_kinds: tuple[SlotReset, ...] = (SlotReset.HOT, SlotReset.FUNDAMENTAL,
                                          SlotReset.FUNDAMENTAL)
    state_timeout_s: float = 300.0  # Linux waits up to 300 s for a PE state
    lockout_fallback_min_s: float = 0.05  # bounds on the reply's retry_ms as a timeout
    lockout_fallback_max_s: float = 60.0
    backoff_min_s: float = 0.005  # -7 or a settling reset without a hint
    backoff_max_s: float = 0.25
    call_retries: int = 3  # a call that timed out is tried again this often

    @classmethod
    def for_vf(cls, **kw: Any) -> RecoveryPolicy:
        return cls(reset_kinds=(SlotReset.HOT,) * MAX_RESET_TRIES, **kw)
