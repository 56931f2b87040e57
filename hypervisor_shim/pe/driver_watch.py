"""A dead or stuck adapter driver does not strand the VFs.

While the adapter PE is frozen or recovering its VF PEs are locked out until the adapter
driver calls open-sriov-allow-unfreeze: without that driver they would wait forever. The
watch notices a lost adapter driver (`adapter-driver-lost`, with `why`):

- `channel-closed`: the PF owner's last platform channel closed (its QEMU died, or in
  harness mode the driver's process or channel went away), the PF owner having
  registered a driver on the adapter PE (a channel that never ran an adapter driver, as
  a test's or an operator's, loses none);
- `guest-gone`: the System says the PF owner's QEMU exited (`Platform.guest_gone`);
- `deadline`: the adapter PE is frozen or recovering and the PF owner made no recovery
  step (a `report` or any call naming the adapter PE) for
  `PolicyConfig.adapter_driver_deadline_ms`, counted from the freeze or its last step.

and then acts by `PolicyConfig.on_adapter_driver_lost` (pe.policy.OnDriverLost):

- `restart-guest` (the default): the service guest is restarted (`guest-restart`; the
  `restart` hook, given by eeh_sriov.system.System, boots it again with the same machine
  configuration and command); its adapter driver finds the adapter PE left recovering
  (or frozen) at probe and recovers it (guest_drivers.pf). A frozen adapter PE is reset
  by the platform first (`slot_reset: true`; the restart is asked at its pe-reset-done):
  QEMU cannot realize a function whose config space reads all-ones. Once the guest is back
  (`guest_restarted`) the deadline runs again for its driver. Where there is no guest to
  restart (no hook: harness mode, or the PF held by "host"), or the guest was already
  restarted once in this adapter recovery, or a restart failed, it falls back to
  `platform-recover` (the entry says `fallback_from`).
- `platform-recover`: the platform recovers the adapter itself (`platform-recovery`,
  then `platform-recovered`: pe.adapter_recovery).
- `fail`: the adapter PE and every PE below it are permanently failed (`adapter-failed`,
  then `permanent-failure` pushed to every VF's owner, cause `adapter-driver-lost`).

A driver lost while the adapter is healthy is acted on at once under `restart-guest` (so
that the next adapter error finds a driver); under the other two the platform waits: the
next adapter freeze, with the driver still lost, is acted on at once, without waiting for
the deadline. A step from the PF owner on the adapter PE (a new driver) ends "lost".

Invariant: from the adapter freeze (or the driver's loss, if later), the VFs wait at most
the deadline plus one recovery: the driver's own, the restarted guest's (its boot
included), or the platform's. Not covered: a driver that keeps making steps without ever
allowing the unfreeze.

Runs on the model's loop thread (policy notices, timeline entries of calls, reports and
channels, which are all recorded there; its timer is on that loop).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from device_model import ResetKind
from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.pe.adapter_recovery import PlatformRecovery
from hypervisor_shim.pe.policy import HOST, Notice, OnDriverLost, PeFlag, PePolicy
from hypervisor_shim.timeline import Entry

MAX_RESTARTS = 1  # restarts of the service guest per adapter recovery, then the platform's


class Why(enum.StrEnum):
    CHANNEL_CLOSED = "channel-closed"
    GUEST_GONE = "guest-gone"
    DEADLINE = "deadline"


@dataclass
class DriverWatch:
    policy: PePolicy
    recovery: PlatformRecovery
    connected: Callable[[str], bool]  # the owner has an open platform channel
    registered: Callable[[str], bool]  # the owner registered a driver on the adapter PE
    clock: Callable[[], float]
    restart: Callable[[str], None] | None = None  # restart the owner's guest (async)
    lost: Why | None = None  # the PF owner's driver is known lost (None: not known)
    restarting: bool = False
    restart_failed: bool = False
    restarts: int = 0  # in this adapter recovery
    last_step: float = 0.0  # the PF owner's last step on the adapter PE, or the freeze
    stopping: bool = False  # the platform is stopping: its channels close, nothing is lost
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _slot_reset: bool = False  # the slot's reset before a restart is under way

    @property
    def owner(self) -> str | None:
        return self.policy.adapter_record.owner

    @property
    def deadline_s(self) -> float:
        return self.policy.config.adapter_driver_deadline_ms / 1000

    def recovering(self) -> bool:
        """The adapter PE is frozen or recovering (and not permanently failed)."""
        flags = self.policy.adapter_record.flags
        return bool(flags & (PeFlag.ISOLATED | PeFlag.RECOVERING)) and \
            PeFlag.PERMANENT not in flags

    # ------------------------------------------------------------------ inputs
    def on_notice(self, n: Notice) -> None:
        """A policy notice (the platform's notice listeners)."""
        rec = self.policy.adapter_record
        if n.address != rec.address:
            return
        if n.kind == Kind.PE_FROZEN and not n.data.get("side_effect"):
            if not self.restarting:
                self.restarts = 0  # a new adapter recovery
            self.last_step = self.clock()
            if self.lost is not None and not self.restarting:
                self._act(self.lost, {"at": "adapter freeze"})
            else:
                self._arm()
        elif n.kind == Kind.PERMANENT_FAILURE:
            self._cancel()
            self._slot_reset = False
        elif n.kind == Kind.PE_RESET_DONE and self._slot_reset and self.owner is not None:
            self._slot_reset = False  # (a failed one too: the new driver resets again)
            assert self.restart is not None
            self.restart(self.owner)

    def on_entry(self, e: Entry) -> None:
        """A timeline entry: the PF owner's steps on the adapter PE and its channels.
        (Every entry of the timeline comes here: the cheap tests first.)"""
        if e.source == Source.SHIM:
            if e.kind == Kind.CHANNEL_CLOSED and self._of_owner(e):
                assert self.owner is not None
                if not self.connected(self.owner) and self.registered(self.owner):
                    self._lost(Why.CHANNEL_CLOSED, {"lines": e.data.get("lines")})
        elif e.source in (Source.DRIVER, Source.CALL) and \
                e.pe == self.policy.adapter_record.name and self._of_owner(e):
            self.last_step = self.clock()
            self.lost = None

    def _of_owner(self, e: Entry) -> bool:
        """`e` is the adapter driver's owner's, recorded on the loop thread."""
        owner = self.owner
        return owner is not None and e.owner == owner and _on_loop()

    def guest_gone(self, owner: str) -> None:
        """`owner`'s QEMU exited (Platform.guest_gone)."""
        if owner == self.owner:
            self._lost(Why.GUEST_GONE, {})

    def guest_restarted(self, owner: str, ok: bool, detail: Mapping[str, Any]) -> None:
        """The restart asked of the `restart` hook is over: the guest is up again (`ok`),
        or it could not be restarted (then the platform recovers the adapter)."""
        if owner != self.owner or not self.restarting:
            return
        self.restarting = False
        if ok:
            self.last_step = self.clock()  # its driver gets a whole deadline from now
            if self.recovering():
                self._arm()
            return
        self.restart_failed = True
        if self.recovering():
            self._act(self.lost or Why.GUEST_GONE, {"restart": "failed", **detail})

    # ------------------------------------------------------------------ decisions
    def _lost(self, why: Why, data: Mapping[str, Any]) -> None:
        if self.restarting or self.stopping:
            return  # the restart under way (or the platform's stop) took it down
        self.lost = why
        recovering = self.recovering()
        self.policy.emit(Kind.ADAPTER_DRIVER_LOST, self.policy.adapter_record,
                         {"owner": self.owner, "why": str(why), "recovering": recovering,
                          "action": str(self.policy.config.on_adapter_driver_lost), **data})
        if recovering:
            self._act(why, {})
        elif self._can_restart():
            self._restart(why)

    def _can_restart(self) -> bool:
        return (self.policy.config.on_adapter_driver_lost is OnDriverLost.RESTART_GUEST
                and self.restart is not None and self.owner not in (None, HOST)
                and not self.restart_failed and self.restarts < MAX_RESTARTS)

    def _act(self, why: Why, data: Mapping[str, Any]) -> None:
        self._cancel()
        action = self.policy.config.on_adapter_driver_lost
        extra = dict(data)
        if action is OnDriverLost.RESTART_GUEST:
            if self._can_restart():
                self._restart(why)
                return
            extra["fallback_from"] = str(action)
            extra["because"] = self._no_restart()
            action = OnDriverLost.PLATFORM_RECOVER
        rec = self.policy.adapter_record
        if action is OnDriverLost.PLATFORM_RECOVER:
            if self.recovery.active:
                return
            self.policy.emit(Kind.PLATFORM_RECOVERY, rec, {"why": str(why), **extra})
            self.recovery.start()
        else:
            self.policy.emit(Kind.ADAPTER_FAILED, rec, {"why": str(why), **extra})
            self.policy.fail_all(Kind.ADAPTER_DRIVER_LOST)

    def _no_restart(self) -> str:
        if self.restart is None or self.owner in (None, HOST):
            return "no guest to restart"
        if self.restart_failed:
            return "the guest could not be restarted"
        return f"restarted {self.restarts} time(s) in this recovery already"

    def _restart(self, why: Why) -> None:
        assert self.restart is not None and self.owner is not None
        self.restarting = True
        self.restarts += 1
        self._cancel()
        rec = self.policy.adapter_record
        # A booting QEMU cannot take a frozen function (its config space reads all-ones:
        # vfio-user-pci's realize never completes). So the slot is reset first, as
        # firmware resets a partition's slots when it activates it; the VFs stay locked
        # out and the adapter recovering until the new driver allows the unfreeze.
        frozen = int(rec.pe.status().code) != 0
        self.policy.emit(Kind.GUEST_RESTART, rec,
                         {"owner": self.owner, "why": str(why), "restarts": self.restarts,
                          "recovering": self.recovering(), "slot_reset": frozen})
        if not frozen:
            self.restart(self.owner)
            return
        self._slot_reset = True
        status = rec.pe.reset(ResetKind.HOT)
        if int(status) != 0:  # then the restart goes ahead: its driver will say
            self._slot_reset = False
            self.policy.emit(Kind.PLATFORM_RESET_FAILED, rec, {"status": int(status)})
            self.restart(self.owner)

    # ------------------------------------------------------------------ the deadline
    def _arm(self) -> None:
        if self._timer is not None:
            return
        delay = max(0.0, self.last_step + self.deadline_s - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if not self.recovering() or self.restarting or self.recovery.active:
            return
        silent = self.clock() - self.last_step
        if silent < self.deadline_s:
            self._arm()  # a step since: the deadline runs from it
            return
        self._lost(Why.DEADLINE, {"silent_ms": round(silent * 1000, 3),
                                  "deadline_ms": self.policy.config.adapter_driver_deadline_ms})


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
