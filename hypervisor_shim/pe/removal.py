"""Functions whose driver has no error handlers: removed, recovered by the platform, re-added.

Linux's EEH core does this for a driver without `pci_error_handlers`: it removes the
device before the reset and adds it back afterwards. Here, when a VF PE freezes and the
driver registered on it said `handlers: false`:

1. the function is removed from its owner: `function-removed` is pushed (harness: the
   backend detaches the driver) and `hooks.on_remove(name)` runs (VM mode: QMP device_del);
2. when the PE may be recovered (its lockout lifted, or at once after a VF-only error),
   the platform resets it (an FLR), which also thaws it;
3. when the reset is done (state 0), `hooks.on_add(name)` runs (VM mode: device_add) and
   `function-added` is pushed; the driver probes the function as new.

Every step is a policy notice in the timeline ("function-removed", "platform-reset",
"function-added"). Runs on the model's loop thread, driven by the policy's notices. The
hooks are given at construction (`Platform(..., removal_hooks=...)`), never assigned
later; they run on the model's loop thread and must not block (hand the work to your own
loop with `call_soon_threadsafe`, as `eeh_sriov.system.System` does).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device_model import PeKind, ResetKind
from eeh_abi.vocabulary import Kind
from hypervisor_shim.pe.policy import Notice, PeFlag, PePolicy, PeRecord


def _nothing(name: str) -> None:
    pass


@dataclass(frozen=True)
class RemovalHooks:
    """What the platform's owner does when a function is removed from its guest and added
    back (VM mode: QMP device_del / device_add). Called on the model's loop thread."""

    on_remove: Callable[[str], None] = _nothing
    on_add: Callable[[str], None] = _nothing


class Stage(enum.Enum):
    REMOVED = "removed"  # waiting for the lockout to lift
    RESETTING = "resetting"  # FLR under way


@dataclass
class NoHandlerRecovery:
    policy: PePolicy
    handlers_of: Callable[[int], bool | None]  # PE address -> the driver's handlers flag
    function_name: Callable[[PeRecord], str]
    hooks: RemovalHooks = field(default_factory=RemovalHooks)
    stages: dict[int, Stage] = field(default_factory=dict)

    def __call__(self, n: Notice) -> None:
        """A policy notice (register with the platform's notice listeners)."""
        if n.address is None:
            return
        rec = self.policy.record(n.address)
        if rec is None or rec.pe.kind is not PeKind.VF:
            return
        if n.kind == Kind.PE_FROZEN and self.handlers_of(rec.address) is False:
            if rec.address not in self.stages:
                self._remove(rec)
            elif self.stages[rec.address] is Stage.RESETTING:
                self.stages[rec.address] = Stage.REMOVED  # frozen again: start over
            self._maybe_reset(rec)
        elif n.kind == Kind.LOCKOUT_LIFTED and self.stages.get(rec.address) is Stage.REMOVED:
            self._maybe_reset(rec)
        elif n.kind == Kind.PE_THAWED and self.stages.get(rec.address) is Stage.RESETTING:
            del self.stages[rec.address]
            self.policy.recovered(rec)  # the platform recovered it: no longer recovering
            name = self.function_name(rec)
            self.hooks.on_add(name)
            self._notice(Kind.FUNCTION_ADDED, rec, {"name": name}, event=True)

    def _remove(self, rec: PeRecord) -> None:
        name = self.function_name(rec)
        self.stages[rec.address] = Stage.REMOVED
        self._notice(Kind.FUNCTION_REMOVED, rec, {"name": name, "reason": "no error handlers"},
                     event=True)
        self.hooks.on_remove(name)

    def _maybe_reset(self, rec: PeRecord) -> None:
        if rec.flags & (PeFlag.LOCKED_OUT | PeFlag.PERMANENT):
            return
        self.stages[rec.address] = Stage.RESETTING
        self._notice(Kind.PLATFORM_RESET, rec, {"reset": "hot"})
        status = rec.pe.reset(ResetKind.HOT)
        if int(status) != 0:
            self.stages[rec.address] = Stage.REMOVED
            self._notice(Kind.PLATFORM_RESET_FAILED, rec, {"status": int(status)})

    def _notice(self, kind: str, rec: PeRecord, data: Mapping[str, Any],
                event: bool = False) -> None:
        self.policy.emit(kind, rec, data, event=kind if event else None,
                         owners=(rec.owner,) if rec.owner and event else ())
