"""One VF PE seen from its owner's channel, on the scripted platform or on the real one:
the two subjects of the platform contract tests (tests/unit/drivers/test_platform_contract.py)
and of the tests that must hold on both (the lost wake-up).

A subject puts its PE in a state the way its platform does it (the real platform: an
error injected into the device model, the adapter driver's calls on the PF owner's own
channel; the scripted one: by hand) and then the checks look only at what the VF owner's
channel answers and receives.

    with make_subject("real") as s:
        s.adapter_error()                      # vf0's PE frozen with the adapter, locked out
        s.channel.call(Call.READ_SLOT_RESET_STATE2, pe=s.pe)
        s.lift()                               # the adapter recovered, allow-unfreeze
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from device_model import ResetTiming
from eeh_abi.hcall import Channel, Event, Reply
from eeh_abi.papr import PeState, SlotReset
from eeh_abi.schema import Call
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome
from guest_drivers.services import ChannelLike
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.support.scripted_platform import ScriptedPlatform
from tests.support.waiting import wait_for

VF_PE = 0x18000
ADAPTER_PE = 0x10000
RETRY_MS = 10_000  # the lockout's retry hint on both (a fallback long enough to see)
KINDS = ("scripted", "real")


class PeSubject(Protocol):
    kind: str
    pe: int
    retry_ms: int
    channel: ChannelLike  # the VF owner's
    events: list[Event]  # pushed to the VF owner, in order

    def vf_error(self) -> None:
        """The VF PE freezes on its own (a VF-only error)."""

    def adapter_error(self) -> None:
        """The adapter PE freezes: the VF PE with it, as a side-effect, locked out."""

    def lift(self) -> None:
        """The adapter recovers and allows the VF PE to unfreeze; returns once the
        `lockout-lifted` event has been handed to the channel's subscribers."""

    def fail_permanently(self) -> None:
        """The VF PE's next error is a permanent failure; then that error."""

    def fail_next_reset(self) -> None:
        """The VF PE's next reset completes without bringing it back."""

    def call(self, call: Call, **args: Any) -> Reply: ...

    def wait_event(self, name: str, n: int = 1) -> Event: ...


class _Events:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self._cv = threading.Condition()

    def on_event(self, ev: Event) -> None:
        with self._cv:
            self.events.append(ev)
            self._cv.notify_all()

    def wait_event(self, name: str, n: int = 1, timeout: float = 10.0) -> Event:
        """The `n`-th event `name` for the subject's PE (waits for it)."""
        def found() -> list[Event]:
            return [e for e in self.events if e.name == name]
        with self._cv:
            assert self._cv.wait_for(lambda: len(found()) >= n, timeout), \
                (name, n, [e.name for e in self.events])
            return found()[n - 1]


class ScriptedSubject(_Events):
    kind = "scripted"

    def __init__(self) -> None:
        super().__init__()
        self.plat = ScriptedPlatform()
        self.pe = VF_PE
        self.retry_ms = RETRY_MS
        self.plat.add(self.pe, vf=True, retry_ms=RETRY_MS)
        self.channel: ChannelLike = self.plat.channel
        self.channel.subscribe(self.on_event)
        self._permanent_next = False

    def call(self, call: Call, **args: Any) -> Reply:
        return self.channel.call(call, **args)

    def vf_error(self) -> None:
        if self._permanent_next:
            self.plat.freeze(self.pe)
            self.plat.fail(self.pe, freeze_count=1)
        else:
            self.plat.freeze(self.pe)

    def adapter_error(self) -> None:
        self.plat.lock_out(self.pe)

    def lift(self) -> None:
        self.plat.lift(self.pe)  # pushed on this thread: handed over when this returns

    def fail_permanently(self) -> None:
        self._permanent_next = True
        self.vf_error()

    def fail_next_reset(self) -> None:
        self.plat.pes[self.pe].resets_fail += 1


class RealSubject(_Events):
    """hypervisor_shim.platform.Platform with the PF held by "svc" and vf0 by "g1"; the
    subject's channel is g1's, the adapter driver's calls go over svc's."""

    kind = "real"

    def __init__(self, plat: Platform) -> None:
        super().__init__()
        self.plat = plat
        self.pe = VF_PE
        self.retry_ms = plat.cfg.policy.retry_hint_ms
        self._g1 = Channel.unix(str(plat.hcall_path("g1")))
        self._svc = Channel.unix(str(plat.hcall_path("svc")))
        self.channel: ChannelLike = self._g1
        self.channel.subscribe(self.on_event)
        for ch in (self._g1, self._svc):  # a reply: the platform serves the connection,
            assert ch.call(Call.QUERY_FUNCTIONS).status == 0  # its events reach it from now

    def close(self) -> None:
        self._g1.close()
        self._svc.close()

    def call(self, call: Call, **args: Any) -> Reply:
        return self.channel.call(call, **args)

    def _frozen(self, before: int) -> None:
        self.wait_event("pe-frozen", before + 1)

    def vf_error(self) -> None:
        n = sum(1 for e in self.events if e.name == "pe-frozen")
        self.plat.inject_vf_error(0)
        self._frozen(n)

    def adapter_error(self) -> None:
        n = sum(1 for e in self.events if e.name == "pe-frozen")
        self.plat.inject_adapter_error()
        self._frozen(n)

    def lift(self) -> None:
        svc = self._svc
        lifted = threading.Event()

        def marker(ev: Event) -> None:  # subscribed last: runs after every other handler
            if (ev.name, ev.pe) == ("lockout-lifted", self.pe):
                lifted.set()
        self.channel.subscribe(marker)
        try:
            for fn in (SlotReset.HOT, SlotReset.DEACTIVATE):
                assert svc.call(Call.SET_SLOT_RESET, pe=ADAPTER_PE, function=int(fn)).status == 0
            assert wait_for(lambda: svc.call(Call.READ_SLOT_RESET_STATE2, pe=ADAPTER_PE)
                            .get("state") == PeState.NORMAL, 10)
            assert svc.call(Call.CONFIGURE_PE, pe=ADAPTER_PE).status == 0
            r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=ADAPTER_PE, vf_pes=[self.pe])
            assert r.status == 0 and r.get("allowed") == [self.pe], r
            assert lifted.wait(10), "no lockout-lifted on the VF owner's channel"
        finally:
            self.channel.unsubscribe(marker)

    def fail_permanently(self) -> None:
        self.plat.call(lambda: self.plat.policy.set_config(max_freezes=0))
        self.vf_error()

    def fail_next_reset(self) -> None:
        self.plat.fail_resets("vf0", 1)


def real_config(**policy: Any) -> PlatformConfig:
    return PlatformConfig(total_vfs=2, enabled_vfs=2, owners={"pf": "svc", "vf0": "g1"},
                          timing=ResetTiming.FAST,
                          policy=PolicyConfig(retry_hint_ms=RETRY_MS, **policy))


@contextmanager
def make_subject(kind: str) -> Iterator[PeSubject]:
    if kind == "scripted":
        yield ScriptedSubject()
        return
    assert kind == "real", kind
    plat = Platform(real_config())
    plat.start()
    s: RealSubject | None = None
    try:
        s = RealSubject(plat)
        yield s
    finally:
        plat.stop()  # first: the channels then see the end of their stream at once
        if s is not None:
            s.close()


def recover_from_a_vf_error(s: PeSubject, rec: PeRecovery) -> Outcome:
    """Attach `rec` to the subject's PE, fire a VF error on it, run the round it starts and
    detach: the outcome of that one recovery."""
    rec.attach()
    try:
        s.vf_error()
        assert wait_for(lambda: rec.pending, 5)
        return rec.run()
    finally:
        rec.detach()
