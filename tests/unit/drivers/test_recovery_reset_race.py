"""A new freeze heard just after the recovery's own reset brought the PE back (found by the
fault campaign: adapter-fatal ; vf-error:other at policy/reset-deactivate@vf2,
docs/campaign.md "Findings"): the pe-frozen comes after the PE was back in state 0 (the
pushed pe-reset-done; a state read, before the round skipped it) and before the round
went on. It is a new freeze (the reset changed the PE's state) and
restarts the recovery; before, it was taken as the freeze being handled and lost: the
round went on against a frozen function (the VF driver then waited 60 s for its PF) and
reported the PE recovered while it was frozen. On the scripted and the real platform."""

from __future__ import annotations

import pytest

from eeh_abi.hcall import Reply
from eeh_abi.papr import ErsResult, PeState, SlotReset
from eeh_abi.schema import Call
from guest_drivers.recovery import PeRecovery
from guest_drivers.recovery_types import Outcome, Participant, RecoveryPolicy
from guest_drivers.services import Services
from tests.support.channels import TapChannel
from tests.support.pe_subjects import KINDS, make_subject, recover_from_a_vf_error
from tests.support.scripted_platform import Recorder
from tests.support.waiting import wait_for


@pytest.mark.parametrize("kind", KINDS)
def test_a_freeze_heard_right_after_the_reset_restarts_the_recovery(kind: str) -> None:
    log: list[str] = []
    with make_subject(kind) as s:
        tap = TapChannel(s.channel)
        rec = PeRecovery(Services(tap), s.pe, [Participant("vf", Recorder(
            "vf", log, detected=ErsResult.NEED_RESET))], name="t",
            policy=RecoveryPolicy.for_vf(state_timeout_s=5.0, backoff_min_s=0.001,
                                         backoff_max_s=0.01))
        released: list[bool] = []
        refroze: list[bool] = []

        def freeze_after_the_reset(call: str, args: dict[str, object], reply: Reply) -> None:
            # the first call answered after the release (configure-pe: the pushed
            # pe-reset-done said the PE is back, so no state read comes in between)
            if call == Call.SET_SLOT_RESET and args.get("function") == SlotReset.DEACTIVATE:
                released.append(True)
            elif released and not refroze and s.call(
                    Call.READ_SLOT_RESET_STATE2, pe=s.pe).get("state") == PeState.NORMAL:
                refroze.append(True)
                before = rec.last_freeze
                s.vf_error()  # the PE is back, then frozen at once by a new error
                assert wait_for(lambda: rec.last_freeze is not before, 5)
        tap.after.append(freeze_after_the_reset)
        outcome = recover_from_a_vf_error(s, rec)
        assert refroze == [True]
        assert outcome is Outcome.RECOVERED
        assert rec.restarts == 1, log
        assert log.count("vf.error_detected") == 2, log
        st = s.call(Call.READ_SLOT_RESET_STATE2, pe=s.pe)
        assert st.get("state") == PeState.NORMAL
