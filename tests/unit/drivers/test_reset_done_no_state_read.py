"""A VF PE's reset, once released, needs no state read when its pe-reset-done came (issue
22): the platform pushes it before the release's reply (FLR has no settle time), and it
says the PE is back in state 0, so the round goes on to configure-pe at once (one round
trip less a VF, on the platform's loop too, after the lockout's release). A failed reset
(`pe-reset-done` with `failed`) is still read and retried. On the scripted and the real
platform."""

from __future__ import annotations

import pytest

from eeh_abi.hcall import Reply
from eeh_abi.papr import ErsResult, PeState
from eeh_abi.schema import Call
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome, Participant, RecoveryPolicy
from guest_drivers.services import Services
from tests.support.channels import TapChannel
from tests.support.pe_subjects import KINDS, make_subject, recover_from_a_vf_error
from tests.support.scripted_platform import Recorder, ScriptedPlatform


def _calls_of_a_reset_round(kind: str) -> tuple[Outcome, list[str], int]:
    log: list[str] = []
    with make_subject(kind) as s:
        tap = TapChannel(s.channel)
        calls: list[str] = []

        def note(call: str, args: dict[str, object], reply: Reply) -> None:
            if call != Call.REPORT:  # (the scripted channel has no post: reports are calls)
                calls.append(f"{call} {args.get('function', '')}".strip())
        tap.after.append(note)
        rec = PeRecovery(Services(tap), s.pe, [Participant("vf", Recorder(
            "vf", log, detected=ErsResult.NEED_RESET))], name="t",
            policy=RecoveryPolicy.for_vf(state_timeout_s=5.0))
        outcome = recover_from_a_vf_error(s, rec)
        state = int(s.call(Call.READ_SLOT_RESET_STATE2, pe=s.pe).get("state", -1))
    return outcome, calls, state


@pytest.mark.parametrize("kind", KINDS)
def test_no_state_read_between_the_release_and_configure_pe(kind: str) -> None:
    outcome, calls, state = _calls_of_a_reset_round(kind)
    assert outcome is Outcome.RECOVERED
    assert state == PeState.NORMAL
    released = calls.index("set-slot-reset 0")
    assert calls[released + 1] == "configure-pe", calls
    assert calls[:released] == ["read-slot-reset-state2", "set-slot-reset 1"], calls


def test_a_failed_reset_is_still_read_and_retried() -> None:
    plat = ScriptedPlatform()
    pe = 0x18000
    plat.add(pe, vf=True, resets_fail=1)  # the first release leaves the PE frozen (failed)
    log: list[str] = []
    services = Services(plat.channel)
    rec = PeRecovery(services, pe, [Participant("vf", Recorder(
        "vf", log, detected=ErsResult.NEED_RESET))], name="t",
        policy=RecoveryPolicy.for_vf(state_timeout_s=5.0, backoff_min_s=0.001,
                                     backoff_max_s=0.01))
    rec.attach()
    plat.freeze(pe)
    assert rec.run() is Outcome.RECOVERED
    names = plat.channel.names()
    # the first release: pe-reset-done failed, so its state is read (frozen: a reset
    # failed, tried again); the second: back, no read
    first = names.index("set-slot-reset")
    assert names[first:] == ["set-slot-reset", "set-slot-reset", "read-slot-reset-state2",
                             "set-slot-reset", "set-slot-reset", "configure-pe"], names
    assert plat.pes[pe].state == PeState.NORMAL
