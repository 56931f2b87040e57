"""The IdleWatch's period (guest_drivers.poll): a settled poller (its last park ended by the
watch or by its health timeout: sparse work or none) is looked at each settled_watch_s, one
woken by an event or a send each max_sleep_s; a park asking for a shorter period than the
watch is waiting out is looked at within its own, and the last unpark ends such a wait
(the thread ends linger_s after the last driver stopped). In a TCG guest a look over eight parked
VF drivers costs ~1 ms of host CPU: at 33 looks a second, half of an idle guest's."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from guest_drivers.poll import AdaptivePoller, IdleWatch, PollConfig
from tests.support.waiting import wait_for

HANG_S = 10.0  # a hang catcher


@contextmanager
def looping(poller: AdaptivePoller, wake: threading.Event) -> Iterator[threading.Event]:
    """A driver's loop around `poller` (its wake event `wake`) that never has work, on
    its own thread."""
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            poller.idle(False)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        wake.set()  # ends its park, as a driver's stop does
        t.join(HANG_S)


def test_a_settled_poller_is_looked_at_each_settled_period() -> None:
    watch = IdleWatch()
    cfg = PollConfig(max_sleep_s=0.01, settled_watch_s=0.25, health_s=0.2, spinners=0)
    wake = threading.Event()
    poller = AdaptivePoller(cfg, wake, pending=lambda: False, watch=watch)
    with looping(poller, wake):
        # its first park ends by the health timeout: settled from then on
        assert wait_for(lambda: poller.settled and poller.parked >= 2, HANG_S)
        looks = watch.looks
        time.sleep(1.0)
        looks = watch.looks - looks
    # ~4 looks in the second at 0.25 s; each max_sleep_s (0.01) it was ~100
    assert looks <= 20, looks


def test_a_shorter_park_cuts_the_watchs_long_wait() -> None:
    watch = IdleWatch()
    wake = threading.Event()
    settled = AdaptivePoller(PollConfig(max_sleep_s=0.01, settled_watch_s=60.0, health_s=0.2,
                                        spinners=0), wake, pending=lambda: False, watch=watch)
    with looping(settled, wake):
        assert wait_for(lambda: settled.settled and settled.parked >= 2, HANG_S)
        time.sleep(0.1)  # the watch now waits out 60 s for the settled one
        woken = threading.Event()
        # a poller just woken by an event parks with max_sleep_s and has work
        watch.park(1, lambda: True, woken.set, 0.01)
        assert woken.wait(HANG_S)  # within its own period, not the settled one's 60 s
    # the settled one stopped: the thread ends linger_s later, not after its 60 s wait
    assert wait_for(lambda: not watch.running, HANG_S)
