"""bench.peer: a fatal AER error is watched for the whole limit, never judged "no outage"
after the quiet window: in the 20261208-001143 bench run the 7-VF peer's fatal error was
judged at 5 s ("0.0 s, 1-4 lost") while Linux reset the link ~7.7 s after the injection."""

from __future__ import annotations

from bench.peer import quiet_window


def test_a_fatal_error_is_watched_for_the_whole_limit() -> None:
    assert quiet_window("fatal", 5.0, 30.0) == 30.0


def test_a_non_fatal_error_keeps_the_quiet_window() -> None:
    assert quiet_window("nonfatal", 5.0, 30.0) == 5.0
