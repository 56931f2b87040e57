"""The recovery framework, stepped through exact sequences against a scripted platform
(held to the real one by test_platform_contract.py): the order of callbacks, calls and
reports; EEH's merge; the lockout wait (woken by the event, not the fallback, also when
the event comes between the refusal and the wait: on both platforms); restarts;
permanent failure; reset retries; detection."""

from __future__ import annotations

import threading
import time

import pytest

from eeh_abi.hcall import Reply
from eeh_abi.papr import (
    MAX_RESET_TRIES,
    ChannelState,
    ErsResult,
    PeState,
    SlotReset,
    Status,
    merge_result,
)
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome, Participant, RecoveryPolicy, SavedConfig
from guest_drivers.services import Services
from tests.support.channels import TapChannel
from tests.support.pe_subjects import KINDS, make_subject
from tests.support.scripted_platform import FakeConfig, Recorder, ScriptedPlatform

PE = 0x18000
FAST = RecoveryPolicy(state_timeout_s=5.0, backoff_min_s=0.001, backoff_max_s=0.01,
                      lockout_fallback_min_s=0.01)


def rig(*recorders: Recorder, policy: RecoveryPolicy = FAST, **pe: object
        ) -> tuple[ScriptedPlatform, PeRecovery, list[FakeConfig]]:
    plat = ScriptedPlatform()
    plat.add(PE, **pe)
    configs = [FakeConfig() for _ in recorders]
    parts = [Participant(r.name, r, cfg, SavedConfig(command=0x6, msix_ctl=0x8003))
             for r, cfg in zip(recorders, configs, strict=True)]
    rec = PeRecovery(Services(plat.channel), PE, parts, name="t", policy=policy)
    rec.attach()
    return plat, rec, configs


def test_can_recover_thaws_mmio_then_dma_in_linux_order() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("a", log))
    plat.freeze(PE, origin=PE, side_effect=False)
    assert rec.pending
    assert rec.run() is Outcome.RECOVERED
    assert log == ["a.error_detected", "a.mmio_enabled", "a.resume"]
    assert plat.channel.steps() == ["error-detected", "mmio-thawed", "mmio-enabled",
                                    "dma-thawed", "resume", "recovered"]
    assert plat.channel.names() == ["read-slot-reset-state2", "set-eeh-option",
                                    "set-eeh-option"]
    options = [a["option"] for _, c, a in plat.channel.calls if c == "set-eeh-option"]
    assert options == [2, 3]
    assert plat.pes[PE].state == PeState.NORMAL
    assert plat.channel.reports("error-detected")[0]["result"] == "CAN_RECOVER"


def test_need_reset_from_error_detected_resets_configures_and_restores_config() -> None:
    log: list[str] = []
    plat, rec, (cfg,) = rig(Recorder("pf", log, detected=ErsResult.NEED_RESET))
    cfg.regs[0x04] = 0  # the reset cleared Command and the MSI-X enable
    cfg.regs[0x82] = 0x0003
    plat.freeze(PE)
    assert rec.run() is Outcome.RECOVERED
    assert log == ["pf.error_detected", "pf.slot_reset", "pf.resume"]
    assert plat.channel.steps() == ["error-detected", "reset", "configure", "slot-reset",
                                    "resume", "recovered"]
    resets = [a["function"] for _, c, a in plat.channel.calls if c == "set-slot-reset"]
    assert resets == [SlotReset.HOT, SlotReset.DEACTIVATE]
    assert "set-eeh-option" not in plat.channel.names()
    assert plat.channel.names().index("configure-pe") > plat.channel.names().index(
        "set-slot-reset")
    assert cfg.regs[0x04] == 0x6 and cfg.regs[0x82] == 0x8003  # memory+BME, MSI-X enable


def test_need_reset_from_mmio_enabled_does_not_thaw_dma() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log, mmio=ErsResult.NEED_RESET), vf=True,
                       policy=RecoveryPolicy.for_vf(state_timeout_s=5.0))
    plat.freeze(PE)
    assert rec.run() is Outcome.RECOVERED
    assert log == ["vf.error_detected", "vf.mmio_enabled", "vf.slot_reset", "vf.resume"]
    assert plat.channel.steps() == ["error-detected", "mmio-thawed", "mmio-enabled", "reset",
                                    "configure", "slot-reset", "resume", "recovered"]
    options = [a["option"] for _, c, a in plat.channel.calls if c == "set-eeh-option"]
    assert options == [2]  # MMIO only; the reset clears the DMA freeze
    assert plat.channel.reports("reset")[0]["kind"] == "hot"


@pytest.mark.parametrize(("detected", "mmio", "expect"), [
    ((ErsResult.CAN_RECOVER, ErsResult.NEED_RESET), None, "reset"),
    ((ErsResult.CAN_RECOVER, ErsResult.CAN_RECOVER), (ErsResult.RECOVERED, ErsResult.NONE),
     "thaw-dma"),
    ((ErsResult.CAN_RECOVER, ErsResult.CAN_RECOVER),
     (ErsResult.RECOVERED, ErsResult.NEED_RESET), "reset-after-mmio"),
    ((ErsResult.DISCONNECT, ErsResult.CAN_RECOVER), None, "disconnect"),
    ((ErsResult.NEED_RESET, ErsResult.DISCONNECT), None, "reset"),
])
def test_results_of_several_drivers_merge_by_eeh_priority(
        detected: tuple[ErsResult, ErsResult], mmio: tuple[ErsResult, ErsResult] | None,
        expect: str) -> None:
    log: list[str] = []
    mm = mmio or (ErsResult.RECOVERED, ErsResult.RECOVERED)
    a = Recorder("a", log, detected=detected[0], mmio=mm[0])
    b = Recorder("b", log, detected=detected[1], mmio=mm[1])
    plat, rec, _ = rig(a, b)
    plat.freeze(PE)
    outcome = rec.run()
    steps = plat.channel.steps()
    if expect == "disconnect":
        assert outcome is Outcome.DISCONNECTED
        assert steps[-1] == "disconnect"
        assert a.states[-1] is ChannelState.PERM_FAILURE
        return
    assert outcome is Outcome.RECOVERED
    if expect == "reset":
        assert "mmio-thawed" not in steps and "reset" in steps
    elif expect == "thaw-dma":
        assert "dma-thawed" in steps and "reset" not in steps
    else:
        assert "mmio-thawed" in steps and "dma-thawed" not in steps and "reset" in steps
    assert log[-2:] == ["a.resume", "b.resume"]


def test_merge_rule_is_linux_priority() -> None:
    order = [ErsResult.NONE, ErsResult.NO_AER_DRIVER, ErsResult.RECOVERED,
             ErsResult.CAN_RECOVER, ErsResult.DISCONNECT, ErsResult.NEED_RESET]
    for i, low in enumerate(order):
        for high in order[i:]:
            assert merge_result(low, high) == high
            assert merge_result(high, low) == high


def test_locked_out_thaw_waits_for_the_lockout_lifted_event_not_the_fallback() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log), locked=True, retry_ms=10_000)
    plat.freeze(PE, side_effect=True, locked_out=True)
    lifter = threading.Timer(0.2, lambda: plat.lift(PE))
    t0 = time.monotonic()
    lifter.start()
    assert rec.run() is Outcome.RECOVERED
    elapsed = time.monotonic() - t0
    lifter.join()
    assert elapsed < 5.0, f"woke after {elapsed:.2f} s: the 10 s fallback, not the event"
    assert plat.channel.steps()[:4] == ["error-detected", "unfreeze-refused",
                                        "lockout-lifted", "mmio-thawed"]
    lifted = plat.channel.reports("lockout-lifted")[0]
    assert lifted["by"] == "event" and lifted["waited_ms"] < 5000
    assert plat.channel.reports("unfreeze-refused")[0]["retry_ms"] == 10_000
    assert rec.lockout_woken_by_event == 1 and rec.lockout_fallbacks == 0


@pytest.mark.parametrize("path", ["thaw", "reset"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_lockout_lifted_during_the_refused_call_is_not_lost(kind: str, path: str) -> None:
    """The race the lockout-lifted event can lose: the platform refuses the VF driver's
    unfreeze (-2: locked out), and the lift comes after that decision but before the
    driver starts to wait, its event delivered before the -2 reply reaches the driver.
    A driver that notes the lift sequence only after the refused call has returned
    misses that event and sleeps out the whole fallback (the reply's retry_ms: 10 s here).
    The lift is made in the channel, between the reply and the caller's return: on the
    scripted platform and on the real one (the adapter driver's reset, configure-pe and
    allow-unfreeze on its own channel; returns once the event was handed over)."""
    log: list[str] = []
    detected = ErsResult.CAN_RECOVER if path == "thaw" else ErsResult.NEED_RESET
    refused_call = "set-eeh-option" if path == "thaw" else "set-slot-reset"
    with make_subject(kind) as s:
        assert s.retry_ms == 10_000
        tap = TapChannel(s.channel)
        raced: list[str] = []

        def lift_after_the_refusal(call: str, args: dict[str, object], reply: Reply) -> None:
            if reply.status == Status.BUSY and not raced:
                raced.append(call)
                s.lift()  # decided -2 already; the driver has not started to wait
        tap.after.append(lift_after_the_refusal)
        rec = PeRecovery(Services(tap), s.pe, [Participant("vf", Recorder(
            "vf", log, detected=detected))], name="t",
            policy=RecoveryPolicy.for_vf(state_timeout_s=5.0, backoff_min_s=0.001,
                                         backoff_max_s=0.01))
        rec.attach()
        try:
            s.adapter_error()  # the VF PE frozen with the adapter, locked out
            assert rec.pending
            t0 = time.monotonic()
            assert rec.run() is Outcome.RECOVERED
            elapsed = time.monotonic() - t0
        finally:
            rec.detach()
        assert raced == [refused_call]  # the race happened, on the call it is named for
        assert elapsed < 3.0, f"recovered after {elapsed:.2f} s: the 10 s fallback, " \
            "not the event delivered before the -2 reply"
        assert (rec.lockout_waits, rec.lockout_woken_by_event, rec.lockout_fallbacks) == \
            (1, 1, 0)
        assert log[0] == "vf.error_detected" and log[-1] == "vf.resume"


def test_the_fallback_timeout_bounds_a_wait_whose_event_never_comes() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log), locked=True, retry_ms=100)
    plat.freeze(PE)
    threading.Timer(0.25, lambda: setattr(plat.pes[PE], "locked", False)).start()  # silent
    t0 = time.monotonic()
    assert rec.run() is Outcome.RECOVERED
    assert 0.2 < time.monotonic() - t0 < 3.0
    bys = [d["by"] for d in plat.channel.reports("lockout-lifted")]
    assert bys and set(bys) == {"fallback"}
    assert rec.lockout_fallbacks == len(bys)


def test_a_new_freeze_after_a_thaw_restarts_recovery() -> None:
    log: list[str] = []
    plat = ScriptedPlatform()
    plat.add(PE)
    a = Recorder("a", log, on={"mmio_enabled": lambda: plat.freeze(PE)})
    rec = PeRecovery(Services(plat.channel), PE, [Participant("a", a)], name="t",
                     policy=FAST)
    rec.attach()
    plat.freeze(PE)
    assert rec.run() is Outcome.RECOVERED
    assert log == ["a.error_detected", "a.mmio_enabled", "a.error_detected",
                   "a.mmio_enabled", "a.resume"]
    steps = plat.channel.steps()
    assert steps.count("restart") == 1 and steps.index("restart") < steps.index("resume")
    assert rec.restarts == 1


def test_the_freeze_being_handled_does_not_restart_recovery() -> None:
    log: list[str] = []
    plat = ScriptedPlatform()
    plat.add(PE)
    # the pushed pe-frozen arrives late, while error_detected runs (before any thaw)
    a = Recorder("a", log, on={"error_detected": lambda: plat.channel.push("pe-frozen", PE)})
    rec = PeRecovery(Services(plat.channel), PE, [Participant("a", a)], name="t",
                     policy=FAST)
    rec.attach()
    plat.freeze(PE, push=False)
    rec.request("all-ones STATUS")
    assert rec.run() is Outcome.RECOVERED
    assert "restart" not in plat.channel.steps()
    assert log.count("a.error_detected") == 1
    assert not rec.pending


def test_permanent_failure_event_during_the_lockout_wait_disconnects() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log), locked=True, retry_ms=10_000)
    plat.freeze(PE)

    def fail() -> None:
        plat.pes[PE].permanent = True
        plat.channel.push("permanent-failure", PE, freeze_count=6)

    threading.Timer(0.1, fail).start()
    t0 = time.monotonic()
    assert rec.run() is Outcome.DISCONNECTED
    assert time.monotonic() - t0 < 5.0
    assert log == ["vf.error_detected", "vf.perm_failure"]
    assert plat.channel.steps()[-1] == "permanent-failure"
    assert rec.failed and not rec.pending


@pytest.mark.parametrize("how", ["state-5-retry-0", "status-minus-1"])
def test_permanent_failure_seen_in_replies(how: str) -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log))
    plat.freeze(PE)
    if how == "state-5-retry-0":
        plat.pes[PE].permanent = True
    else:
        def perm_on_thaw(call: str, args: dict[str, object]) -> None:
            if call == "set-eeh-option":
                plat.pes[PE].permanent = True
        plat.hooks.append(perm_on_thaw)
    assert rec.run() is Outcome.DISCONNECTED
    assert log[-1] == "vf.perm_failure"
    assert plat.channel.steps()[-1] == "permanent-failure"


def test_hot_reset_that_does_not_bring_the_pe_back_is_followed_by_fundamental() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("pf", log, detected=ErsResult.NEED_RESET),
                       hot_reset_works=False)
    plat.freeze(PE)
    assert rec.run() is Outcome.RECOVERED
    resets = [a["function"] for _, c, a in plat.channel.calls if c == "set-slot-reset"]
    assert resets == [1, 0, 3, 0]
    failed = plat.channel.reports("reset-failed")
    assert [(f["kind"], f["attempt"]) for f in failed] == [("hot", 1)]
    assert plat.channel.reports("reset")[0] | {"ms": 0} == {
        "driver": "t", "kind": "fundamental", "attempt": 2, "ms": 0}


def test_three_failed_resets_are_a_permanent_failure() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("pf", log, detected=ErsResult.NEED_RESET),
                       resets_fail=MAX_RESET_TRIES)
    plat.freeze(PE)
    assert rec.run() is Outcome.DISCONNECTED
    assert len(plat.channel.reports("reset-failed")) == MAX_RESET_TRIES
    assert log == ["pf.error_detected", "pf.perm_failure"]
    assert plat.channel.steps()[-1] == "permanent-failure"


def test_a_vf_pe_falls_back_to_hot_reset_when_fundamental_is_not_supported() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log, detected=ErsResult.NEED_RESET), vf=True)
    plat.freeze(PE)
    assert rec.run() is Outcome.RECOVERED  # the default policy: hot first
    plat.freeze(PE)
    plat.pes[PE].resets_fail = 1  # the first reset leaves it frozen
    assert rec.run() is Outcome.RECOVERED
    resets = [a["function"] for _, c, a in plat.channel.calls if c == "set-slot-reset"]
    assert resets[-7:] == [1, 0, 1, 0, 3, 1, 0]  # 2nd try fundamental: refused (-8), hot


def test_all_ones_alone_does_not_start_recovery_without_confirmation() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log))
    assert rec.confirm_all_ones("STATUS", 0xFFFFFFFF) is False
    assert not rec.pending and rec.false_alarms == 1
    assert plat.channel.steps() == ["all-ones-unconfirmed"]
    plat.freeze(PE, push=False)  # frozen, but the event was not seen
    assert rec.confirm_all_ones("STATUS", 0xFFFFFFFF) is True
    assert rec.pending and rec.trigger == "all-ones STATUS"
    assert rec.run() is Outcome.RECOVERED
    assert plat.channel.steps()[1:3] == ["all-ones-confirmed", "error-detected"]


def test_stopping_the_driver_aborts_a_wait_without_callbacks() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log), locked=True, retry_ms=30_000)
    plat.freeze(PE)
    threading.Timer(0.1, rec.detach).start()
    t0 = time.monotonic()
    assert rec.run() is Outcome.ABORTED
    assert time.monotonic() - t0 < 5.0
    assert log == ["vf.error_detected"]  # no PERM_FAILURE: the driver is only stopping


def test_a_pe_already_normal_needs_no_recovery() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log))
    plat.channel.push("pe-frozen", PE)  # the PE is (again) in state 0
    assert rec.run() is Outcome.RECOVERED
    assert log == []
    assert plat.channel.steps() == ["no-freeze"]


def test_every_report_carries_the_pe_and_a_guest_time() -> None:
    log: list[str] = []
    plat, rec, _ = rig(Recorder("vf", log))
    plat.freeze(PE)
    t0 = time.monotonic()
    rec.run()
    reports = [a for _, c, a in plat.channel.calls if c == "report"]
    assert reports and all(a["pe"] == PE and a["guest_time"] >= t0 for a in reports)
    times = [a["guest_time"] for a in reports]
    assert times == sorted(times)
