"""Adaptive polling shares spinning: at most `spinners` pollers of a process are in their
busy phase at once; the others sleep at once (guest_drivers.poll)."""

from __future__ import annotations

import threading
import time

from guest_drivers.poll import AdaptivePoller, PollConfig, SpinSlots


def test_only_the_allowed_number_of_pollers_spin_at_once() -> None:
    cfg = PollConfig(busy_s=0.5, min_sleep_s=0.001, max_sleep_s=0.002, spinners=1)
    slots = SpinSlots()
    a = AdaptivePoller(cfg, threading.Event(), slots)
    b = AdaptivePoller(cfg, threading.Event(), slots)
    a.idle(True)
    b.idle(True)
    a.idle(False)  # a takes the one slot and spins (no sleep)
    assert a.sleeps == 0 and a.spins_skipped == 0
    b.idle(False)  # b may not spin: it sleeps at once
    assert b.spins_skipped == 1 and b.sleeps == 1
    a.idle(False)  # a keeps its slot for the rest of its busy phase
    assert a.sleeps == 0
    b.idle(False)  # b's busy phase is over: it keeps sleeping, not asking again
    assert b.spins_skipped == 1 and b.sleeps == 2


def test_a_slot_frees_when_its_busy_phase_ends() -> None:
    cfg = PollConfig(busy_s=0.02, min_sleep_s=0.001, max_sleep_s=0.002, spinners=1)
    slots = SpinSlots()
    a = AdaptivePoller(cfg, threading.Event(), slots)
    b = AdaptivePoller(cfg, threading.Event(), slots)
    a.idle(True)
    a.idle(False)
    time.sleep(0.03)  # a's busy phase ended (a thread that stopped holds nothing)
    b.idle(True)
    b.idle(False)
    assert b.spins_skipped == 0 and b.sleeps == 0


def test_more_spinners_allowed_when_configured() -> None:
    cfg = PollConfig(busy_s=0.5, spinners=3)
    slots = SpinSlots()
    pollers = [AdaptivePoller(cfg, threading.Event(), slots) for _ in range(3)]
    for p in pollers:
        p.idle(True)
        p.idle(False)
    assert [p.spins_skipped for p in pollers] == [0, 0, 0]
