"""The results contract's `notes` (docs/campaign.md): read when present, absent in lines
written before it existed, refused when not in the contract's shape."""

from __future__ import annotations

import pytest

from eeh_sriov.campaign.report_data import Note, ResultsError, parse_result
from tests.support.campaign_results import line, scenario

OVERRUN = {"rule": "receiver-overrun", "detail": "vf1: 8 probe(s) lost while it was up",
           "t": 2.00773, "pe": "vf1"}


def test_a_line_with_notes_and_one_without_read() -> None:
    s = scenario()
    assert parse_result({**line(s), "notes": [OVERRUN]}, "x:1").notes == (
        Note("receiver-overrun", OVERRUN["detail"], 2.00773, "vf1"),)  # type: ignore[arg-type]
    assert parse_result(line(s), "x:1").notes == ()


@pytest.mark.parametrize("bad", [{"rule": "receiver-overrun"}, {**OVERRUN, "extra": 1},
                                 {**OVERRUN, "t": "soon"}, "receiver-overrun"])
def test_a_note_outside_the_contract_is_refused(bad: object) -> None:
    with pytest.raises(ResultsError, match="x:1: note 0"):
        parse_result({**line(scenario()), "notes": [bad]}, "x:1")
