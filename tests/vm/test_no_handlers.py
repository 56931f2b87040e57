"""A VF driver without error handlers, in a real guest (issue 10): on an adapter error the
platform removes its function over QMP (device_del), recovers the VF PE itself once the
adapter driver allows it, and adds the function back (device_add); the guest's agent
probes it again (udev) and traffic flows through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from eeh_sriov.system import AGENT_COMMAND, System
from eeh_sriov.topology import parse_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from qemu_launcher.assets import GuestAssets
from tests.support.topologies import svc_and_g1

TOPOLOGY = svc_and_g1(handlers=False, timing="spec", uplink="queue")


def test_driver_without_handlers_is_removed_and_added_back(
        assets: GuestAssets, accel: str, run_dir: Callable[..., Path], removal: None) -> None:
    d = run_dir()
    topo = parse_topology(TOPOLOGY, "no-handlers")
    mac = topo.vf_config(0).mac
    assert mac is not None

    async def go() -> list[tuple[str, str, str | None]]:
        async with System(topo, d, assets, accel=accel,
                          guest_command=lambda g: AGENT_COMMAND) as system:
            plat = system.platform

            def probed(after: float) -> bool:
                return any(e.source == "driver" and e.kind == "probe" and e.pe == "vf0"
                           and e.t > after for e in plat.timeline.snapshot())
            deadline = time.monotonic() + 120
            while not probed(0.0):
                assert time.monotonic() < deadline, "vf0 never probed"
                await asyncio.sleep(0.2)
            with UplinkTraffic(plat, {"vf0": Target(mac)}, rate_hz=20) as traffic:
                assert await asyncio.to_thread(traffic.wait_echo_after, "vf0", 0.0, 30)
                t = time.monotonic()
                plat.inject_adapter_error()
                deadline = time.monotonic() + 120
                while not probed(t):
                    assert time.monotonic() < deadline, [
                        (e.source, e.kind, e.pe) for e in plat.timeline.snapshot()
                        if e.t > t and e.source in ("policy", "shim", "driver")]
                    await asyncio.sleep(0.2)
                assert await asyncio.to_thread(traffic.wait_echo_after, "vf0",
                                               time.monotonic(), 30), "no traffic on vf0"
            return [(e.source, e.kind, e.pe) for e in plat.timeline.snapshot() if e.t > t]

    seen = asyncio.run(go())
    order = [("policy", "function-removed", "vf0"), ("shim", "device-deleted", None),
             ("policy", "allow-unfreeze", "adapter"), ("policy", "platform-reset", "vf0"),
             ("policy", "function-added", "vf0"), ("shim", "device-added", None),
             ("driver", "probe", "vf0")]
    pos = [seen.index(k) if k in seen else -1 for k in order]
    assert -1 not in pos and pos == sorted(pos), list(zip(order, pos, strict=True))
    # the driver without handlers never ran a recovery of its own
    assert ("driver", "error-detected", "vf0") not in seen
