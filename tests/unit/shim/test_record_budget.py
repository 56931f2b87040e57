"""RecordBudgets (hypervisor_shim/hcall/budget.py): per owner, bytes of records a second
in bursts, a call admitted while the bucket holds any, refusals summarized per window."""

from __future__ import annotations

from hypervisor_shim.hcall.budget import OTHER_CALLS, RecordBudget, RecordBudgets


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_an_owner_writes_at_most_its_burst_then_its_rate() -> None:
    clock = Clock()
    rb = RecordBudgets(RecordBudget(bytes_per_s=1000, burst_bytes=5000), clock)
    written = 0
    while rb.admit("g1", "report") is None:
        rb.charge("g1", 700)
        written += 700
    assert 5000 <= written < 5000 + 700  # the last call admitted is charged after
    retry = rb.admit("g1", "report")
    assert retry is not None and retry >= 10
    assert rb.admit("g2", "report") is None  # others unaffected
    clock.t += retry / 1000
    assert rb.admit("g1", "report") is None  # refilled by the hint


def test_refusals_are_summarized_once_per_window() -> None:
    clock = Clock()
    rb = RecordBudgets(RecordBudget(bytes_per_s=10, burst_bytes=10, window_s=1.0), clock)
    rb.charge("g1", 100)
    for i in range(40):
        assert rb.admit("g1", f"call-{i % 20}") is not None
    assert rb.due() == []  # the window is open
    clock.t += 1.0
    [(owner, top, data)] = rb.due()
    assert owner == "g1" and data["refused"] == 40 and data["over_budget"]
    assert len(data["calls"]) == 17 and data["calls"][OTHER_CALLS] == 8  # names bounded
    assert top in data["calls"]
    assert rb.due(force=True) == []  # closed
