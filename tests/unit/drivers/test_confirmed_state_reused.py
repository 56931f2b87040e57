"""A round started by a confirmed all-ones read takes the state the confirmation read
(issue 22): in a TCG service guest the adapter driver's mailbox poll often read all-ones
before the freeze's push was handled; it asked the platform for the PE's state
(`confirm_all_ones`), requested the recovery, and the round read the state again, a round
trip more before the lockout's release. A lift or a reset pushed in between makes the
round read it afresh. Scripted platform: the freeze's push arrives after the confirmation
(freeze(push=False)), as it did in the guest."""

from __future__ import annotations

from eeh_abi.papr import ErsResult
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome, Participant, RecoveryPolicy
from guest_drivers.services import Services
from tests.support.scripted_platform import Recorder, ScriptedPlatform

PE = 0x10000
ALL_ONES = 0xFFFFFFFF


def _confirmed_round(between: str | None) -> list[str]:
    plat = ScriptedPlatform()
    plat.add(PE)
    rec = PeRecovery(Services(plat.channel), PE, [Participant("pf", Recorder(
        "pf", [], detected=ErsResult.NEED_RESET))], name="t",
        policy=RecoveryPolicy(state_timeout_s=5.0, backoff_min_s=0.001, backoff_max_s=0.01))
    rec.attach()
    try:
        plat.freeze(PE, push=False)  # the push not handled yet when the read saw all-ones
        assert rec.confirm_all_ones("MBX_REQ", ALL_ONES)
        plat.channel.push(Kind.PE_FROZEN, PE, origin=PE, side_effect=False,
                          reason="scripted", freeze_count=1, locked_out=False)
        if between is not None:
            plat.channel.push(between, PE)
        assert rec.pending
        assert rec.run() is Outcome.RECOVERED
    finally:
        rec.detach()
    return plat.channel.names()


def test_the_round_takes_the_state_the_confirmation_read() -> None:
    names = _confirmed_round(None)
    assert names.count(Call.READ_SLOT_RESET_STATE2) == 1, names
    assert names[0] == Call.READ_SLOT_RESET_STATE2 and names[1] == Call.SET_SLOT_RESET, names


def test_a_lift_pushed_in_between_makes_the_round_read_it_again() -> None:
    names = _confirmed_round(Kind.LOCKOUT_LIFTED)
    assert names[:2] == [Call.READ_SLOT_RESET_STATE2] * 2, names
