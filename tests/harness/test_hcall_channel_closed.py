"""A guest's `Channel` (eeh_abi.hcall) never hangs on the platform: over a real unix-socket
channel of the real platform, a write the platform does not take (its loop stalled, no
watchdog) fails with ChannelClosed within the channel's timeout instead of blocking for
good, and a channel read as a guest reads its port (end of file is not the end until the
platform has answered) knows it is closed once the platform closed it over the
unread-replies budget, so a later call fails at once (neighbour:
test_hcall_unread_budget.py)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from eeh_abi.hcall import Channel, ChannelClosed, Event
from eeh_abi.schema import Call
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
VF0, VF1 = 0x18000, 0x18100
TIMEOUT = 2.0  # the channel's


def flood(ch: Channel, outcome: list[BaseException]) -> None:
    try:
        while True:
            ch.post(Call.SLOT_ERROR_DETAIL, pe=VF0)
    except BaseException as e:
        outcome.append(e)


def test_a_write_the_platform_does_not_take_fails_with_channel_closed(
        tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS, watchdog_ms=0)
    release = threading.Event()
    with Platform(cfg, tmp_path) as plat, \
            Channel.unix(str(plat.hcall_path("g1")), timeout=TIMEOUT) as ch:
        assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
        plat.host.loop.call_soon_threadsafe(lambda: release.wait(60))  # it reads nothing
        outcome: list[BaseException] = []
        th = threading.Thread(target=flood, args=(ch, outcome), daemon=True)
        t = time.monotonic()
        th.start()
        th.join(TIMEOUT + 20)  # a generous hang timeout
        took = time.monotonic() - t
        release.set()
        assert not th.is_alive(), "the write blocked for good"
        assert isinstance(outcome[0], ChannelClosed), outcome
        assert "took nothing" in str(outcome[0])
        assert ch.closed
        t = time.monotonic()
        try:
            ch.call(Call.QUERY_PARTITION)
            raise AssertionError("a call on a closed channel was answered")
        except ChannelClosed:
            assert time.monotonic() - t < 1.0
        with Channel.unix(str(plat.hcall_path("g2")), timeout=5) as g2:  # others go on
            assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).ok
        print(f"\nblocked write given up after {took:.2f} s (channel timeout {TIMEOUT:g} s)")


def closed_by_platform(plat: Platform) -> bool:
    return any(e.kind == "channel-closed" and e.owner == "g1" and e.data.get("over_budget")
               for e in plat.timeline.snapshot())


def test_a_port_channel_knows_the_platform_closed_it(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    with Platform(cfg, tmp_path) as plat, socket.socket(socket.AF_UNIX) as s:
        s.connect(str(plat.hcall_path("g1")))
        # as a guest reads its virtio-serial port (Channel.open_device): end of file
        # before the platform answered is a port not yet connected
        ch = Channel(s.fileno(), timeout=30, eof_closes=False)
        try:
            assert ch.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ok
            hold = threading.Event()

            def stuck(ev: Event) -> None:
                hold.wait(30)  # the reader stops reading: replies pile up in the platform
            ch.subscribe(stuck)
            plat.call(lambda: plat.server.push_to("g1", "note", None, {}))
            # requests written past the Channel (its own writes would see the close)
            line = b'{"v":1,"id":0,"call":"slot-error-detail","args":{"pe":%d}}\n' % VF0
            deadline = time.monotonic() + 20
            while not closed_by_platform(plat) and time.monotonic() < deadline:
                try:
                    s.send(line * 200)
                except BlockingIOError:
                    time.sleep(0.01)
                except OSError:
                    break
            assert wait_for(lambda: closed_by_platform(plat), 5)
            assert not ch.closed
            hold.set()  # the reader goes on: what was sent, then the platform's close
            assert wait_for(lambda: ch.closed, 10), "the channel still looks open"
            t = time.monotonic()
            try:
                ch.call(Call.QUERY_PARTITION)
                raise AssertionError("a call on a closed channel was answered")
            except ChannelClosed:
                assert time.monotonic() - t < 1.0
        finally:
            ch.close()
