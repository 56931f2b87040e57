"""The timeline's vocabulary: who records an entry (`Source`) and what it says (`Kind`).

Both are `StrEnum`s: a member compares equal to its string and serializes as it, so
`events.jsonl` and every reader of it are unchanged (`Kind.PE_FROZEN == "pe-frozen"`).
Use the members when writing or matching entries, never the bare strings.

Which kinds each source records:

- `Source.POLICY`: the platform's decisions (`hypervisor_shim.pe.policy`, `pe.removal`,
  `platform`): the `POLICY_KINDS` below;
- `Source.DRIVER`: a guest driver's `report` call (its `step`): `DRIVER_KINDS`;
- `Source.SHIM`, `Source.CONSOLE`, `Source.TRAFFIC`: the platform's own life, the operator
  console and the traffic checker: `SHIM_KINDS`, `CONSOLE_KINDS`, `TRAFFIC_KINDS`;
- `Source.CALL`: one entry per platform call, its kind the call's name
  (`eeh_abi.schema.Call`);
- `Source.MODEL`: the device model's events, their kinds `device_model.events.EventKind`.

Some kinds are said by two sources (the policy's `pe-thawed` and a driver's `recovered`
are different things; `unfreeze-refused` is both the platform's refusal and the driver's
report of it): an entry is identified by its source and its kind together.
Standard library only (runs in guests).
"""

from __future__ import annotations

import enum


class Source(enum.StrEnum):
    MODEL = "model"  # the device model's events
    POLICY = "policy"  # the platform's decisions
    CALL = "call"  # one per platform call (kind: the call's name)
    DRIVER = "driver"  # a driver's report (kind: its step)
    CONSOLE = "console"  # the operator's console
    SHIM = "shim"  # the platform's own life: channels, guests, devices
    TRAFFIC = "traffic"  # the traffic checker


class Kind(enum.StrEnum):
    # ---- the platform's decisions (Source.POLICY)
    POLICY_SET = "policy-set"
    PE_FROZEN = "pe-frozen"
    LOCKOUT_START = "lockout-start"
    UNFREEZE_REFUSED = "unfreeze-refused"
    MMIO_THAWED = "mmio-thawed"
    DMA_THAWED = "dma-thawed"
    PE_THAWED = "pe-thawed"  # the PE is back in state 0
    RESET_DEACTIVATE = "reset-deactivate"  # "reset-" + the set-slot-reset function's name
    RESET_HOT = "reset-hot"
    RESET_FUNDAMENTAL = "reset-fundamental"
    PE_RESET_DONE = "pe-reset-done"
    RESET_FAILED = "reset-failed"  # also a driver's step
    CONFIGURED = "configured"
    ALLOW_UNFREEZE = "allow-unfreeze"  # also the adapter driver's step
    LOCKOUT_LIFTED = "lockout-lifted"  # also a VF driver's step
    PERMANENT_FAILURE = "permanent-failure"  # also a driver's step
    PERMANENT_CLEARED = "permanent-cleared"
    FUNCTION_REMOVED = "function-removed"
    PLATFORM_RESET = "platform-reset"
    PLATFORM_RESET_FAILED = "platform-reset-failed"
    FUNCTION_ADDED = "function-added"
    DEVICE_MODEL_DIED = "device-model-died"
    DEVICE_MODEL_STALLED = "device-model-stalled"
    OWNER_GONE = "owner-gone"
    # a dead or stuck adapter driver (hypervisor_shim.pe.driver_watch)
    ADAPTER_DRIVER_LOST = "adapter-driver-lost"  # noticed: channel closed, guest gone, deadline
    GUEST_RESTART = "guest-restart"  # decided: the service guest is restarted
    PLATFORM_RECOVERY = "platform-recovery"  # decided: the platform recovers the adapter
    PLATFORM_RECOVERED = "platform-recovered"  # ... and it has (the VFs' lockout lifted)
    ADAPTER_FAILED = "adapter-failed"  # decided: the adapter PE is permanently failed
    # ---- a driver's steps (Source.DRIVER: the report call's `step`)
    PROBE = "probe"
    PROBE_FAILED = "probe-failed"
    DETACH = "detach"
    DRIVER_ERROR = "driver-error"
    FUNCTION_GONE = "function-gone"
    ERROR_DETECTED = "error-detected"
    NO_FREEZE = "no-freeze"
    ALL_ONES_CONFIRMED = "all-ones-confirmed"
    ALL_ONES_UNCONFIRMED = "all-ones-unconfirmed"
    MMIO_ENABLED = "mmio-enabled"
    SLOT_RESET = "slot-reset"
    RESET = "reset"
    RESET_RELEASED = "reset-released"
    CONFIGURE = "configure"
    RESUME = "resume"
    RECOVERED = "recovered"
    RESTART = "restart"
    ABORTED = "aborted"
    DISCONNECT = "disconnect"
    # the adapter (PF) driver
    ERROR_LOG = "error-log"
    ADAPTER_NOT_READY = "adapter-not-ready"
    ADAPTER_RECOVERED = "adapter-recovered"
    FOUND_FROZEN = "found-frozen"  # at probe: the adapter PE frozen or left recovering
    VF_COUNT_MISMATCH = "vf-count-mismatch"
    MAILBOX = "mailbox"
    # a VF driver
    CONFIG_LOST = "config-lost"
    RINGS_REARMED = "rings-rearmed"
    PF_RESET_DONE = "pf-reset-done"
    PF_RESET_TIMEOUT = "pf-reset-timeout"
    CONFIG_RESTORED = "config-restored"
    MTU_CAPPED = "mtu-capped"
    REPLAY = "replay"
    # the guest agent and the benchmark sender
    TRAFFIC = "traffic"
    BENCH_SENT = "bench-sent"
    BENCH_SENDER_READY = "bench-sender-ready"
    # ---- the platform's own life (Source.SHIM)
    PLATFORM_STARTED = "platform-started"
    CHANNEL_CONNECTED = "channel-connected"
    CHANNEL_CLOSED = "channel-closed"
    GUESTS_STARTING = "guests-starting"
    GUEST_READY = "guest-ready"
    GUEST_DIED = "guest-died"
    GUEST_CLEANUP_FAILED = "guest-cleanup-failed"
    GUEST_CLEANED_UP = "guest-cleaned-up"
    DEVICE_DELETED = "device-deleted"
    DEVICE_DEL_FAILED = "device-del-failed"
    DEVICE_ADDED = "device-added"
    DEVICE_ADD_FAILED = "device-add-failed"
    DRIVERS_READY = "drivers-ready"
    GUEST_RESTARTING = "guest-restarting"
    GUEST_RESTARTED = "guest-restarted"
    GUEST_RESTART_FAILED = "guest-restart-failed"
    # ---- the operator's console (Source.CONSOLE; also Source.SHIM for INJECT)
    INJECT = "inject"
    RESET_PE = "reset-pe"
    # ---- the traffic checker (Source.TRAFFIC)
    TRAFFIC_BACK = "traffic-back"


POLICY_KINDS = frozenset({
    Kind.POLICY_SET, Kind.PE_FROZEN, Kind.LOCKOUT_START, Kind.UNFREEZE_REFUSED,
    Kind.MMIO_THAWED, Kind.DMA_THAWED, Kind.PE_THAWED, Kind.RESET_DEACTIVATE, Kind.RESET_HOT,
    Kind.RESET_FUNDAMENTAL, Kind.PE_RESET_DONE, Kind.RESET_FAILED, Kind.CONFIGURED,
    Kind.ALLOW_UNFREEZE, Kind.LOCKOUT_LIFTED, Kind.PERMANENT_FAILURE, Kind.PERMANENT_CLEARED,
    Kind.FUNCTION_REMOVED, Kind.PLATFORM_RESET, Kind.PLATFORM_RESET_FAILED,
    Kind.FUNCTION_ADDED, Kind.DEVICE_MODEL_DIED, Kind.DEVICE_MODEL_STALLED, Kind.OWNER_GONE,
    Kind.ADAPTER_DRIVER_LOST, Kind.GUEST_RESTART, Kind.PLATFORM_RECOVERY,
    Kind.PLATFORM_RECOVERED, Kind.ADAPTER_FAILED,
})
DRIVER_KINDS = frozenset({
    Kind.PROBE, Kind.PROBE_FAILED, Kind.DETACH, Kind.DRIVER_ERROR, Kind.FUNCTION_GONE,
    Kind.ERROR_DETECTED, Kind.NO_FREEZE, Kind.ALL_ONES_CONFIRMED, Kind.ALL_ONES_UNCONFIRMED,
    Kind.MMIO_THAWED, Kind.MMIO_ENABLED, Kind.DMA_THAWED, Kind.SLOT_RESET, Kind.RESET,
    Kind.RESET_FAILED, Kind.RESET_RELEASED, Kind.CONFIGURE, Kind.UNFREEZE_REFUSED,
    Kind.LOCKOUT_LIFTED, Kind.RESUME, Kind.RECOVERED, Kind.RESTART, Kind.ABORTED,
    Kind.DISCONNECT, Kind.PERMANENT_FAILURE, Kind.ERROR_LOG, Kind.ADAPTER_NOT_READY,
    Kind.ADAPTER_RECOVERED, Kind.FOUND_FROZEN, Kind.ALLOW_UNFREEZE, Kind.VF_COUNT_MISMATCH,
    Kind.MAILBOX,
    Kind.CONFIG_LOST, Kind.RINGS_REARMED, Kind.PF_RESET_DONE, Kind.PF_RESET_TIMEOUT,
    Kind.CONFIG_RESTORED, Kind.MTU_CAPPED, Kind.REPLAY, Kind.TRAFFIC, Kind.BENCH_SENT,
    Kind.BENCH_SENDER_READY,
})
SHIM_KINDS = frozenset({
    Kind.PLATFORM_STARTED, Kind.CHANNEL_CONNECTED, Kind.CHANNEL_CLOSED, Kind.GUESTS_STARTING,
    Kind.GUEST_READY, Kind.GUEST_DIED, Kind.GUEST_CLEANUP_FAILED, Kind.GUEST_CLEANED_UP,
    Kind.DEVICE_DELETED, Kind.DEVICE_DEL_FAILED, Kind.DEVICE_ADDED, Kind.DEVICE_ADD_FAILED,
    Kind.DRIVERS_READY, Kind.INJECT, Kind.GUEST_RESTARTING, Kind.GUEST_RESTARTED,
    Kind.GUEST_RESTART_FAILED,
})
CONSOLE_KINDS = frozenset({Kind.INJECT, Kind.RESET_PE})
TRAFFIC_KINDS = frozenset({Kind.TRAFFIC_BACK})

# A VF driver's recovery is over when it reports one of these (`report` with a `pe`).
RECOVERED_STEPS = frozenset({Kind.RECOVERED, Kind.RESUME})


def reset_kind(function_name: str) -> Kind:
    """The policy's entry for a set-slot-reset function ("hot" -> Kind.RESET_HOT)."""
    return Kind("reset-" + function_name.lower())
