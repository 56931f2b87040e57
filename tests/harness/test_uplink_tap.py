"""The adapter's uplink as a real TAP interface on the host (root only)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from eeh_abi import traffic as T
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from hypervisor_shim.uplink import TapHostPort, UplinkError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a TAP interface needs root")
NAME = "eehtest0"


def test_tap_carries_frames_both_ways_and_vanishes_after() -> None:
    cfg = AdapterHostConfig(total_vfs=2, enabled_vfs=2, host_cpus=(), uplink="tap",
                            tap_name=NAME)
    with AdapterHost(cfg) as host:
        assert Path(f"/sys/class/net/{NAME}").exists()
        port = TapHostPort(NAME)
        try:
            # host -> adapter: a broadcast reaches the switch (counted as uplink RX)
            frame = T.build(T.Probe(b"\xff" * 6, bytes.fromhex("02aabbccdd01"), T.PROBE,
                                    0, 0, 7, 0))
            port.send([frame])
            deadline = time.monotonic() + 5
            while host.call(lambda: host.adapter.switch.uplink_rx) == 0:
                assert time.monotonic() < deadline, "frame never reached the adapter"
                time.sleep(0.01)
            # adapter -> host: what the switch sends leaves on the interface
            host.call(lambda: host.adapter.switch._to_uplink(frame, 0))
            deadline = time.monotonic() + 5
            got: list[bytes] = []
            while not any(T.parse(f) for f in got):
                assert time.monotonic() < deadline, "frame never left on the TAP"
                got += port.receive()
                time.sleep(0.01)
            p = next(T.parse(f) for f in got if T.parse(f))
            assert p is not None and p.seq == 7
        finally:
            port.close()
    assert not Path(f"/sys/class/net/{NAME}").exists(), "TAP interface left behind"


def test_name_in_use_is_a_clear_error() -> None:
    # "lo" exists and is not a TAP: the kernel refuses it, the host says so in one line
    with pytest.raises(UplinkError, match="lo: cannot create the TAP interface"):
        AdapterHost(AdapterHostConfig(total_vfs=1, enabled_vfs=0, host_cpus=(),
                                      uplink="tap", tap_name="lo"))


def test_a_name_in_use_by_another_run_moves_to_the_next_free_one() -> None:
    first = AdapterHost(AdapterHostConfig(total_vfs=1, enabled_vfs=0, host_cpus=(),
                                          uplink="tap", tap_name="eehtest5"))
    try:
        second = AdapterHost(AdapterHostConfig(total_vfs=1, enabled_vfs=0, host_cpus=(),
                                               uplink="tap", tap_name="eehtest5"))
        try:
            assert first.tap is not None and second.tap is not None
            assert (first.tap.name, second.tap.name) == ("eehtest5", "eehtest6")
        finally:
            second.__exit__(None, None, None)
    finally:
        first.__exit__(None, None, None)
    assert not Path("/sys/class/net/eehtest5").exists()
    assert not Path("/sys/class/net/eehtest6").exists()
