"""The operator's session of issue 19, in real guests: `eeh-reset-pe pe=vf0` on the platform
console, through a QMP client, on a healthy VF that passes traffic. The VF driver in the
guest takes the reset it did not ask for as a recovery (pe-reset-done, RESET_COUNT) and
the VF passes traffic again; before, the reply was status 0 and the VF stayed dead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from qemu.qmp import QMPClient

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import AGENT_COMMAND, System
from eeh_sriov.topology import parse_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from qemu_launcher.assets import GuestAssets
from tests.support.topologies import svc_and_g1

TOPOLOGY = svc_and_g1(timing="spec", uplink="queue")
BACK_WITHIN_S = 30.0  # a hang catcher; the measured time is printed (make bench times it)


def test_a_reset_of_a_healthy_vf_from_the_console_is_recovered(
        assets: GuestAssets, accel: str, run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    topo = parse_topology(TOPOLOGY, "operator-reset")
    mac = topo.vf_config(0).mac
    assert mac is not None

    async def go() -> tuple[object, float, list[tuple[str, str, str | None]]]:
        async with System(topo, d, assets, accel=accel,
                          guest_command=lambda g: AGENT_COMMAND) as system:
            plat = system.platform
            with UplinkTraffic(plat, {"vf0": Target(mac)}, rate_hz=20) as traffic:
                assert await asyncio.to_thread(traffic.wait_echo_after, "vf0", 0.0, 180), \
                    "vf0 never passed traffic"
                client = QMPClient("operator")
                await client.connect(str(system.console.platform_path))
                try:
                    t = time.monotonic()
                    reply = await client.execute("eeh-reset-pe", {"pe": "vf0", "kind": "hot"})
                finally:
                    await client.disconnect()
                back = await asyncio.to_thread(traffic.wait_echo_after, "vf0",
                                               time.monotonic() + 0.5, BACK_WITHIN_S)
                assert back is not None, [
                    (e.source, e.kind, e.pe) for e in plat.timeline.snapshot() if e.t > t]
                seen = [(e.source, e.kind, e.pe) for e in plat.timeline.snapshot() if e.t > t]
                return reply, back - t, seen

    reply, took, seen = asyncio.run(go())
    assert reply == {"pe": "vf0", "kind": "hot", "status": 0}
    print(f"\nvf0 passed traffic again {took:.2f} s after the operator's reset")
    # the guest's driver recovered (not just the platform's state): its own reports
    assert (Source.DRIVER, Kind.ERROR_DETECTED, "vf0") in seen, seen
    assert (Source.DRIVER, Kind.RECOVERED, "vf0") in seen, seen


def test_an_adapter_reset_after_its_permanent_failure_revives_the_vf(
        assets: GuestAssets, accel: str, run_dir: Callable[..., Path]) -> None:
    """The adapter PE fails permanently (eeh-set-policy max-freezes=0, then an adapter
    error): every driver told and disconnected, vf0 passes no traffic. The operator's
    `eeh-reset-pe pe=adapter` clears the failure: the adapter driver in svc brings the
    adapter back (SR-IOV), vf0's driver in g1, told by the adapter's pe-reset-done, probes
    its function again and passes traffic."""
    d = run_dir()
    topo = parse_topology(TOPOLOGY, "operator-reset-permanent")
    mac = topo.vf_config(0).mac
    assert mac is not None

    async def go() -> tuple[float, list[tuple[str, str, str | None]]]:
        async with System(topo, d, assets, accel=accel,
                          guest_command=lambda g: AGENT_COMMAND) as system:
            plat = system.platform

            def reported(kind: str, t: float) -> set[str | None]:
                return {e.pe for e in plat.timeline.snapshot() if e.t > t
                        and e.source == Source.DRIVER and e.kind == kind}

            with UplinkTraffic(plat, {"vf0": Target(mac)}, rate_hz=20) as traffic:
                assert await asyncio.to_thread(traffic.wait_echo_after, "vf0", 0.0, 180), \
                    "vf0 never passed traffic"
                client = QMPClient("operator")
                await client.connect(str(system.console.platform_path))
                try:
                    t = time.monotonic()
                    await client.execute("eeh-set-policy", {"max-freezes": 0})
                    await client.execute("eeh-inject", {"pe": "adapter",
                                                        "kind": "adapter-fatal"})
                    deadline = time.monotonic() + BACK_WITHIN_S
                    while not {"adapter", "vf0"} <= reported(Kind.PERMANENT_FAILURE, t):
                        assert time.monotonic() < deadline, reported(Kind.PERMANENT_FAILURE, t)
                        await asyncio.sleep(0.2)
                    t_reset = time.monotonic()
                    reply = await client.execute("eeh-reset-pe", {"pe": "adapter",
                                                                  "kind": "hot"})
                    assert reply == {"pe": "adapter", "kind": "hot", "status": 0}
                finally:
                    await client.disconnect()
                back = await asyncio.to_thread(traffic.wait_echo_after, "vf0", t_reset + 0.5,
                                               BACK_WITHIN_S)
                seen = [(e.source, e.kind, e.pe) for e in plat.timeline.snapshot()
                        if e.t > t_reset]
                assert back is not None, seen
                return back - t_reset, seen

    took, seen = asyncio.run(go())
    print(f"\nvf0 passed traffic again {took:.2f} s after the reset of the adapter PE that "
          "cleared its permanent failure")
    assert (Source.DRIVER, Kind.PROBE, "adapter") in seen, seen  # both drivers revived
    assert (Source.DRIVER, Kind.PROBE, "vf0") in seen, seen
