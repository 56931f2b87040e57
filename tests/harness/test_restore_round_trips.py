"""What a VF's restore after an adapter error costs in vfio-user round trips, on the real
platform with the real drivers (harness backend: BAR writes posted, config writes waited
for, as QEMU's vfio-user-pci does). Counted on the server: the messages each VF's socket
answered (posted writes are never answered) and the messages it took, posted ones
included, from the injection until the VF's driver reported `recovered`.

A VF's restore is the config space written back (Command, MSI-X control: two config
writes, one REGION_WRITE_MULTI waited for as a config write is, `config_write_many`),
MAC/VLAN/MTU written with the rings reprogrammed and started (one posted
REGION_WRITE_MULTI, `write32_many`), read back with RESET_COUNT in one REGION_READ
(`read_many`: MAC_LO..RESET_COUNT), the mailbox's "PF reset done" read: 3 round trips,
4 messages. It was 10 round trips (the config space read-modified-written, one read per
MAC/VLAN/MTU register), then 6 round trips and 7 messages (two config writes, two
8-byte read-backs and RESET_COUNT read apart). The bounds leave room for the driver's
idle health check (two reads, once a second) landing in the window."""

from __future__ import annotations

import time
from pathlib import Path

from eeh_abi.vocabulary import Kind, Source
from guest_drivers.poll import PollConfig
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import host_config, running
from tests.support.waiting import wait_for

NVFS = 4
HEALTH_CHECK = 2  # one idle health check's reads may fall in the window
ROUND_TRIPS_PER_VF = 3 + HEALTH_CHECK
MESSAGES_PER_VF = 4 + HEALTH_CHECK  # the round trips and one run of posted writes


def _answered(plat: Platform) -> dict[str, tuple[int, int]]:
    """(replies sent, messages taken) of each function's socket (its session's; one
    client each here)."""
    out = {}
    for ep in plat.host.server.server.endpoints.values():
        conn = ep.connection
        stats = conn.session.stats if conn is not None else None
        out[ep.name] = (stats.replies, stats.messages) if stats is not None else (0, 0)
    return out


def test_a_vf_restore_is_a_few_round_trips(tmp_path: Path) -> None:
    names = [f"vf{n}" for n in range(NVFS)]
    with running(host_config(NVFS, vf_settings={}), tmp_path) as rig:
        plat = rig.plat
        agent = rig.agent(poll=PollConfig())  # the default idle health check: once a second
        assert len(agent.start()) == NVFS + 1
        before = plat.call(lambda: _answered(plat))
        t0 = plat.timeline.snapshot()[-1].t
        plat.inject_adapter_error("round trips")

        def recovered() -> bool:
            return set(names) <= {e.pe for e in plat.timeline.snapshot() if e.t > t0 and (
                e.source, e.kind) == (Source.DRIVER, Kind.RECOVERED)}

        assert wait_for(recovered, 30), "the VFs did not recover"
        after = plat.call(lambda: _answered(plat))
    trips = {n: after[n][0] - before[n][0] for n in names if n in after}
    messages = {n: after[n][1] - before[n][1] for n in names if n in after}
    assert set(trips) == set(names), sorted(after)
    assert max(trips.values()) <= ROUND_TRIPS_PER_VF, trips
    assert max(messages.values()) <= MESSAGES_PER_VF, messages


def _quiet(plat: Platform, name: str, quiet_s: float = 0.3) -> dict[str, tuple[int, int]]:
    """`_answered` once `name`'s socket took no message for `quiet_s` (within 20 s)."""
    last = plat.call(lambda: _answered(plat))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = plat.call(lambda: _answered(plat))
        if now[name] == last[name]:
            return now
        last = now
    raise AssertionError(f"{name} never went quiet: {last}")


def test_a_vf_own_error_is_a_few_round_trips(tmp_path: Path) -> None:
    """A VF PE's own freeze (no reset: CAN_RECOVER, mmio_enabled): the config-lost checks
    (Command; CTRL+STATUS and MAC_HI in one read), the restore (one run of posted writes,
    MAC+MTU+VLAN read back in one read, the mailbox): 4 round trips, 5 messages (6 and 7
    with CTRL+STATUS, MAC_HI, MAC and MTU+VLAN read apart; 7 and 8 before that, CTRL and
    STATUS read one by one). No idle health check in the window."""
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        plat = rig.plat
        agent = rig.agent(poll=PollConfig(health_s=600.0))
        assert len(agent.start()) == 2
        before = _quiet(plat, "vf0")  # the probe's last reads and first health check done
        t0 = plat.timeline.snapshot()[-1].t
        plat.inject_vf_error(0, "round trips")

        def recovered() -> bool:
            return any(e.t > t0 and e.pe == "vf0" and (e.source, e.kind) == (
                Source.DRIVER, Kind.RECOVERED) for e in plat.timeline.snapshot())

        assert wait_for(recovered, 30), "vf0 did not recover"
        after = plat.call(lambda: _answered(plat))
    trips, messages = (a - b for a, b in zip(after["vf0"], before["vf0"], strict=True))
    assert (trips, messages) == (4, 5)
