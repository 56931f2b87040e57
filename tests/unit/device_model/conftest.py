"""Fixtures: an adapter on a manual clock with a queue uplink, drivers for PF and VFs."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dm_helpers import bring_up, check_clean, make_adapter

from device_model import Adapter, EventHistory, ManualClock, QueueUplink, ResetTiming
from device_model.testkit import MiniDriver, PfDriver, RamGuest


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def uplink() -> QueueUplink:
    return QueueUplink()


@pytest.fixture
def history() -> EventHistory:
    return EventHistory()


@pytest.fixture
def adapter(clock: ManualClock, uplink: QueueUplink, history: EventHistory) -> Iterator[Adapter]:
    a = make_adapter(clock, uplink)
    a.events.add_listener(history)
    yield a
    check_clean(a)


@pytest.fixture
def spec_adapter(clock: ManualClock, uplink: QueueUplink,
                 history: EventHistory) -> Iterator[Adapter]:
    a = make_adapter(clock, uplink, timing=ResetTiming.SPEC)
    a.events.add_listener(history)
    yield a
    check_clean(a)


@pytest.fixture
def guest() -> RamGuest:
    return RamGuest(size=8 << 20)


@pytest.fixture
def up(adapter: Adapter, guest: RamGuest) -> tuple[PfDriver, list[MiniDriver]]:
    return bring_up(adapter, guest)
