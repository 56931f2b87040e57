"""What the console needs from the platform: `PlatformApi`, implemented on the PE policy.

Every method is a coroutine run on the console's event loop. A call with a bad argument
(an unknown PE, a VF PE given a fundamental reset, a policy value out of range) raises
`PlatformApiError` with a message for the operator; the console answers it as a QMP
`GenericError` carrying that message. Any other exception is a bug in the backend: the
console logs it and answers `GenericError` "internal error ...", and goes on serving.

The console has already checked the arguments' types (and names, for the error function)
before it calls; what it passes is documented on each method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hypervisor_shim.errors import ShimError

# eeh-inject kinds and eeh-reset-pe kinds, as the console accepts them.
INJECT_KINDS = ("errinjct", "adapter-fatal", "vf-error")
RESET_KINDS = ("hot", "fundamental")
# Flags a PE may carry in query_pes() (a backend may add its own).
PE_FLAGS = ("isolated", "recovering", "locked-out", "permanent")

# Platform event names (the backend may emit others: the console forwards any name).
EVENT_PE_STATE_CHANGED = "EEH_PE_STATE_CHANGED"
EVENT_RECOVERY_STEP = "EEH_RECOVERY_STEP"
EVENT_PE_PERMANENT_FAILURE = "EEH_PE_PERMANENT_FAILURE"
EVENT_LOCKOUT_LIFTED = "EEH_LOCKOUT_LIFTED"

PlatformListener = Callable[[str, dict[str, Any]], None]
"""Receives a platform event: (QMP event name, data object)."""


class PlatformApiError(ShimError):
    """A platform request the backend refuses; the message is shown to the operator."""


class PlatformApi(Protocol):
    """The PE side of the console (one per platform, shared by every console socket)."""

    async def query_pes(self) -> list[dict[str, Any]]:
        """Every PE, adapter first: {"pe": "adapter"|"vf0"..., "address": int (PE config
        address), "state": int (PAPR 0/1/2/4/5), "retry_ms": int, "owner": str|None (guest
        name), "freeze_count": int, "flags": list[str] (see PE_FLAGS)}."""
        ...

    async def inject(self, pe: str, kind: str, function: int | None, address: int,
                     mask: int) -> dict[str, Any]:
        """Inject an error. `kind` is one of INJECT_KINDS; `function` is the ibm,errinjct
        function code 0..19 (eeh_abi.papr.ErrorFunction) for "errinjct" and None for the
        others; `address` and `mask` are 64-bit unsigned (0 when not given)."""
        ...

    async def reset_pe(self, pe: str, kind: str) -> dict[str, Any]:
        """Reset a PE; `kind` is one of RESET_KINDS."""
        ...

    async def error_log(self, pe: str) -> list[dict[str, Any]]:
        """The PE's error log, oldest first."""
        ...

    async def set_policy(self, max_freezes: int | None,
                         window_s: float | None) -> dict[str, Any]:
        """Change the freeze policy (None: keep that value); returns the policy in force."""
        ...

    async def query_policy(self) -> dict[str, Any]:
        """The policy in force, e.g. {"max-freezes": 5, "window-s": 3600.0}."""
        ...

    def add_listener(self, callback: PlatformListener) -> None:
        """Call `callback(name, data)` for every platform event from now on. It may be
        called from any thread; the console marshals it to its own loop."""
        ...
