"""A PE's error log keeps the last ERROR_LOG_DEPTH entries and counts the ones it lost."""

from __future__ import annotations

from device_model import Adapter, EventHistory, EventKind
from device_model.pe import ERROR_LOG_DEPTH


def test_depth_limit_and_overflow_count(adapter: Adapter, history: EventHistory) -> None:
    pe = adapter.pes.vf(1)
    first = [adapter.inject_vf_error(1, f"error {n}") for n in range(ERROR_LOG_DEPTH)]
    assert pe.error_log() == tuple(first) and pe.log_overflow == 0  # full, nothing lost yet

    extra = [adapter.inject_vf_error(1, f"error {ERROR_LOG_DEPTH + n}") for n in range(3)]
    log = pe.error_log()
    assert len(log) == ERROR_LOG_DEPTH and pe.log_overflow == 3
    assert log == tuple(first[3:] + extra)  # the oldest went, in order
    assert [e.seq for e in log] == sorted(e.seq for e in log)
    assert len(history.of(EventKind.ERROR_LOGGED)) == ERROR_LOG_DEPTH + 3  # all reported

    other = adapter.pes.vf(0)
    assert other.error_log() == () and other.log_overflow == 0  # per PE

    pe.clear_error_log()
    assert pe.error_log() == ()
    again = adapter.inject_vf_error(1, "after clear")
    assert pe.error_log() == (again,) and pe.log_overflow == 3
