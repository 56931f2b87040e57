"""Clocks (manual and asyncio) and the event bus."""

from __future__ import annotations

import asyncio

from device_model.clock import AsyncioClock, ManualClock
from device_model.events import EventBus, EventHistory, EventKind


def test_manual_clock_runs_callbacks_in_time_order() -> None:
    clock = ManualClock()
    seen: list[tuple[str, float]] = []
    clock.call_later(0.2, lambda: seen.append(("b", clock.now())))
    clock.call_later(0.1, lambda: seen.append(("a", clock.now())))
    t = clock.call_later(0.15, lambda: seen.append(("x", clock.now())))
    t.cancel()
    assert clock.pending() == 2
    assert clock.advance(0.12) == 1
    assert seen == [("a", 0.1)] and clock.now() == 0.12

    def chain() -> None:
        seen.append(("c", clock.now()))
        clock.call_later(0.05, lambda: seen.append(("d", clock.now())))

    clock.call_later(0.0, chain)
    clock.advance(1.0)
    assert [s for s, _ in seen] == ["a", "c", "d", "b"]
    assert seen[2][1] == 0.12 + 0.05 and seen[3][1] == 0.2
    assert clock.now() == 1.12 and clock.pending() == 0


def test_manual_clock_run_all_and_no_going_back() -> None:
    clock = ManualClock()
    hits: list[float] = []
    clock.call_later(5.0, lambda: hits.append(clock.now()))
    assert clock.next_due() == 5.0
    assert clock.run_all() == 1 and hits == [5.0]
    try:
        clock.advance(-1)
    except ValueError:
        pass
    else:
        raise AssertionError("negative advance accepted")


def test_asyncio_clock_schedules_on_the_loop() -> None:
    async def main() -> list[float]:
        clock = AsyncioClock()
        done = asyncio.Event()
        times: list[float] = []
        start = clock.now()

        def hit() -> None:
            times.append(clock.now() - start)
            done.set()

        clock.call_later(0.01, hit)
        await asyncio.wait_for(done.wait(), 5)
        return times

    times = asyncio.run(main())
    assert len(times) == 1 and times[0] >= 0.009


def test_event_bus_order_timestamps_and_faulty_listener() -> None:
    clock = ManualClock(10.0)
    bus = EventBus(clock)
    history = EventHistory()

    def broken(_: object) -> None:
        raise RuntimeError("listener bug")

    bus.add_listener(broken)
    bus.add_listener(history)
    bus.emit(EventKind.PE_FROZEN, pe=0x10000, reason="x")
    clock.advance(1.5)
    bus.emit(EventKind.PE_MMIO_THAWED, pe=0x10000, kind="still-a-data-key")
    assert history.kinds() == [EventKind.PE_FROZEN, EventKind.PE_MMIO_THAWED]
    assert [e.time for e in history] == [10.0, 11.5]
    assert history.events[1].data["kind"] == "still-a-data-key"
    assert len(bus.listener_errors) == 2
    assert history.events[0].to_json() == {"time": 10.0, "kind": "pe-frozen", "pe": 0x10000,
                                           "data": {"reason": "x"}}
    bus.remove_listener(broken)
    bus.emit(EventKind.FLR_DONE)
    assert len(bus.listener_errors) == 2 and len(history.of(EventKind.FLR_DONE)) == 1
