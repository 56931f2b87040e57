"""The PF and VF drivers on the real device model, in one process (no sockets): bring-up,
traffic, and recovery from VF and adapter errors with exact books."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from device_model import Adapter, AdapterConfig, ManualClock, QueueUplink
from eeh_abi import nic
from eeh_abi.vf_settings import VfSettings
from guest_drivers.agent import Agent
from guest_drivers.driver import DriverError, DriverState
from guest_drivers.pf import AdapterSettings, PfDriver
from guest_drivers.platform.base import FunctionInfo
from guest_drivers.poll import PollConfig
from guest_drivers.recovery import RecoveryPolicy
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver, mac_str
from tests.support.frames import payload
from tests.unit.drivers.drivers_fakes import (
    HOST,
    ModelPlatform,
    locked_runner,
    wait_for,
)
from tests.unit.drivers.drivers_inprocess import InProcessBackend, InProcessFunction

POLL = PollConfig(max_sleep_s=0.005, health_s=0.05)
UPLINK_MAC = bytes.fromhex("02aa00000001")
ETYPE = b"\x88\xb5"


@dataclass
class World:
    adapter: Adapter
    uplink: QueueUplink
    lock: threading.RLock
    plat: ModelPlatform
    services: Services
    infos: dict[str, FunctionInfo]

    def fn(self, name: str) -> InProcessFunction:
        return InProcessFunction(self.infos[name], self.adapter, self.lock)

    def model(self, fn):  # type: ignore[no-untyped-def]
        with self.lock:
            return fn()

    def pf(self, poll: PollConfig = POLL) -> PfDriver:
        d = PfDriver(self.fn("pf"), self.services, poll=poll,
                     policy=RecoveryPolicy(state_timeout_s=10))
        d.start()
        return d

    def vf(self, n: int, poll: PollConfig = POLL) -> VfDriver:
        d = VfDriver(self.fn(f"vf{n}"), self.services, poll=poll)
        d.start()
        return d

    def uplink_frames(self) -> list[bytes]:
        return self.model(self.uplink.take)  # type: ignore[no-any-return]


def frame(src: bytes, dst: bytes = UPLINK_MAC, tag: str = "x") -> bytes:
    return dst + src + ETYPE + tag.encode().ljust(46, b".")


@pytest.fixture
def world() -> Iterator[World]:
    lock = threading.RLock()
    uplink = QueueUplink()
    adapter = Adapter(AdapterConfig(total_vfs=4), clock=ManualClock(), uplink=uplink)
    adapter.pf.enable_vfs(3)
    vf_settings = {1: {"mac": "02:ee:00:00:01:01", "vlan": 100, "mtu": 1500,
                       "anti_spoof": True}}
    plat = ModelPlatform(adapter, locked_runner(lock), vf_settings=vf_settings)
    services = Services(plat.channel(HOST))
    infos = {e["name"]: FunctionInfo.from_entry(e) for e in plat.directory(HOST)}
    yield World(adapter, uplink, lock, plat, services, infos)


def stop_all(*drivers: PfDriver | VfDriver) -> None:
    for d in drivers:
        d.stop()


def test_pf_probe_brings_the_adapter_up_and_configures_the_vfs(world: World) -> None:
    pf = world.pf()
    try:
        a = world.adapter
        with world.lock:
            regs = a.pf.bar0
            assert regs.stored("SWITCH_CTRL") == nic.SwitchCtrl.LOOPBACK | nic.SwitchCtrl.UPLINK
            assert regs.stored("VF_TXEN") == 0b111 and regs.stored("VF_RXEN") == 0b111
            assert a.vf(0).admin_mac() == bytes.fromhex("02ee00000001")  # PF MAC + 1 + 0
            assert a.vf(1).admin_mac() == bytes.fromhex("02ee00000101")  # configured
            assert a.vf(1).admin_vlan() == 100 and a.vf(1).anti_spoof()
            assert a.vf(2).admin_vlan() is None and not a.vf(2).anti_spoof()
            assert not a.pf_resetting  # pf_reset_done written
            assert all(vf.bar0.stored("MBX") & nic.Mbx.RSTD for vf in a.vfs[:3])
        assert world.plat.registrations[0x10000] == (HOST, "eeh-pf", True)
        probe = world.plat.report_details("probe", 0x10000)[0]
        assert probe["num_vfs"] == 3 and probe["pf_mac"] == "02:ee:00:00:00:00"
        assert pf.vf_pes() == [0x18000, 0x18100, 0x18200]
    finally:
        pf.stop()


def test_vf_traffic_to_and_from_the_uplink_and_between_vfs(world: World) -> None:
    pf = world.pf()
    vf0, vf2 = world.vf(0), world.vf(2)
    try:
        assert mac_str(vf0.mac) == "02:ee:00:00:00:01"  # the PF's admin MAC
        for i in range(20):
            assert vf0.send(frame(vf0.mac, tag=f"up{i}"))
        assert vf0.wait_tx_done(5)
        out = world.uplink_frames()
        assert [f[14:].rstrip(b".") for f in out] == [f"up{i}".encode() for i in range(20)]
        assert world.model(lambda: world.uplink.inject(frame(UPLINK_MAC, vf0.mac, "dn")))
        got = vf0.recv(timeout=5)
        assert [g[14:].rstrip(b".") for g in got] == [b"dn"]
        # VF to VF through the adapter's switch (loopback)
        vf0.send(frame(vf0.mac, vf2.mac, "v2v"))
        got2 = vf2.recv(timeout=5)
        assert [g[14:].rstrip(b".") for g in got2] == [b"v2v"]
        assert vf0.wait_tx_done(5)
        c0 = vf0.counters()
        assert c0["tx"]["sent"] == 21 and c0["tx"]["balanced"] and c0["rx"]["received"] == 1
        with world.lock:
            led = world.adapter.vf(0).nic.ledger
            assert led.tx_sent == vf0.tx.sent and led.tx_posted == vf0.tx.posted
    finally:
        stop_all(vf0, vf2, pf)


def test_refused_frames_are_counted_and_mtu_is_applied(world: World) -> None:
    pf = world.pf()
    vf = world.vf(0)
    try:
        vf.mtu = 1000
        assert world.model(lambda: world.adapter.vf(0).bar0.stored("MTU")) == 1000
        assert not vf.send(b"\x00" * 1019)  # above MTU + 18
        assert not vf.send(b"\x00" * 10)  # shorter than a header
        with pytest.raises(ValueError):
            vf.mtu = 9000  # buffers hold 1500 + 18 (max_mtu)
        c = vf.counters()["tx"]
        assert c["drop_reasons"] == {"runt": 1, "too-long": 1} and c["balanced"]
    finally:
        stop_all(vf, pf)


def test_vf_error_recovery_reclaims_pending_descriptors_and_replays_them(
        world: World) -> None:
    pf = world.pf()
    vf = world.vf(0)
    try:
        vf.mtu = 1400
        for i in range(3):
            vf.send(frame(vf.mac, tag=f"pre{i}"))
        assert vf.wait_tx_done(5)
        # hold the VF's TX (VF_TXEN off) so descriptors are pending in hardware...
        world.model(lambda: world.adapter.pf.bar0.set("VF_TXEN", 0b110))
        for i in range(5):
            vf.send(frame(vf.mac, tag=f"held{i}"))
        assert wait_for(lambda: world.model(lambda: world.adapter.vf(0).nic.tx_pending) == 5)

        def error() -> None:  # ...then a VF error freezes its PE
            world.adapter.inject_vf_error(0)
            world.adapter.pf.bar0.set("VF_TXEN", 0b111)
        world.model(error)
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1)
        assert vf.wait_tx_done(5)
        steps = world.plat.steps(0x18000)
        seq = ["error-detected", "mmio-thawed", "rings-rearmed", "mmio-enabled", "dma-thawed",
               "replay", "resume", "recovered"]
        assert [s for s in steps if s in seq] == seq
        assert "reset" not in steps
        out = [payload(f) for f in world.uplink_frames()]
        assert out == [f"pre{i}" for i in range(3)] + [f"held{i}" for i in range(5)]
        c = vf.counters()["tx"]
        assert c["reclaimed"] == 5 and c["replayed"] == 5 and c["sent"] == 8 and c["balanced"]
        with world.lock:
            led = world.adapter.vf(0).nic.ledger
            assert led.tx_dropped == 5  # the reprogrammed ring dropped them in hardware
            assert led.tx_sent == 8 == vf.tx.sent
            assert world.adapter.vf(0).bar0.stored("MTU") == 1400
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_adapter_error_recovers_pf_first_then_vfs_after_the_lockout(world: World) -> None:
    pf = world.pf()
    vf0, vf1 = world.vf(0), world.vf(1)
    try:
        vf0.mtu = 1200
        for d in (vf0, vf1):
            d.send(frame(d.mac, tag=f"{d.name}-before"))
            assert d.wait_tx_done(5)
        world.uplink_frames()

        def hold_allow(owner: str, call: str, args: dict[str, object]) -> None:
            # the adapter driver's allow-unfreeze waits until both VF drivers met the
            # lockout (in one process the PF may otherwise finish before they look)
            if call == "open-sriov-allow-unfreeze":
                assert wait_for(lambda: all("unfreeze-refused" in world.plat.steps(pe)
                                            for pe in (0x18000, 0x18100)), 10)

        world.plat.before_call = hold_allow
        world.model(lambda: world.adapter.inject_adapter_fatal("test"))
        for d in (vf0, vf1):  # sent while frozen: held, then replayed
            d.send(frame(d.mac, tag=f"{d.name}-during"))
        for d in (pf, vf0, vf1):
            assert wait_for(lambda d=d: d.recovery is not None and d.recovery.recovered == 1,
                            15), (d.name, world.plat.steps())
        for d in (vf0, vf1):
            assert d.wait_tx_done(5)
        pf_steps = world.plat.steps(0x10000)
        want_pf = ["error-detected", "reset", "configure", "adapter-recovered", "slot-reset",
                   "allow-unfreeze", "resume", "recovered"]
        assert [s for s in pf_steps if s in want_pf] == want_pf
        assert world.plat.report_details("error-log", 0x10000)[0]["entries"] >= 1
        reports = [(a["step"], a.get("pe")) for _, _, a in world.plat.reports]
        allow = reports.index(("allow-unfreeze", 0x10000))
        for pe in (0x18000, 0x18100):
            vsteps = world.plat.steps(pe)
            # frozen with the adapter: the VF driver asks for its reset at once (the
            # adapter's reset wiped the VF), no MMIO thaw first
            want = ["error-detected", "unfreeze-refused", "lockout-lifted", "reset",
                    "configure", "pf-reset-done", "config-restored", "slot-reset", "replay",
                    "resume", "recovered"]
            assert [s for s in vsteps if s in want] == want, vsteps
            assert "mmio-thawed" not in vsteps and "mmio-enabled" not in vsteps, vsteps
            assert world.plat.report_details("error-detected", pe)[0]["result"] == "NEED_RESET"
            # nothing of the VF was reset before the adapter driver allowed it
            assert reports.index(("reset", pe)) > allow
            assert world.plat.report_details("lockout-lifted", pe)[0]["by"] == "event"
        assert sorted(pf.allowed) == [0x18000, 0x18100, 0x18200]
        out = sorted(payload(f) for f in world.uplink_frames())
        assert out == ["vf0-during", "vf1-during"]
        with world.lock:
            assert world.adapter.vf(0).bar0.stored("MTU") == 1200  # restored
            assert world.adapter.vf(1).admin_vlan() == 100  # the PF restored VFCFG
        for d in (vf0, vf1):
            c = d.counters()["tx"]
            assert c["balanced"] and c["sent"] == 2 and c["dropped"] == 0
        # traffic flows again, both ways
        vf1.send(frame(vf1.mac, tag="after"))
        assert vf1.wait_tx_done(5)
        assert [payload(f) for f in world.uplink_frames()] == ["after"]
    finally:
        stop_all(vf0, vf1, pf)


def test_permanent_failure_disconnects_and_counts_what_was_pending(world: World) -> None:
    pf = world.pf()
    vf = world.vf(0)
    try:
        world.plat.permanent.add(0x18000)

        def fail() -> None:
            world.adapter.inject_vf_error(0)
        world.model(fail)
        for i in range(4):
            vf.send(frame(vf.mac, tag=f"lost{i}"))
        world.plat.push(HOST, "permanent-failure", 0x18000, freeze_count=6)
        assert wait_for(lambda: vf.state is DriverState.FAILED, 10)
        c = vf.counters()["tx"]
        assert c["balanced"] and c["sent"] == 0
        assert c["dropped"] == 4
        assert world.plat.steps(0x18000)[-1] == "permanent-failure"
        assert not vf.send(frame(vf.mac))  # refused, counted
        assert vf.counters()["tx"]["drop_reasons"].get("down") == 1
    finally:
        stop_all(vf, pf)


def test_all_ones_read_is_confirmed_before_recovery_starts(world: World) -> None:
    pf = world.pf()
    vf = world.vf(0)
    try:
        quiet = world.plat.push
        world.plat.push = lambda *a, **k: None  # type: ignore[method-assign]
        world.model(lambda: world.adapter.pes.vf(0).freeze("silent"))  # no event pushed
        world.plat.push = quiet  # type: ignore[method-assign]
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10)
        steps = world.plat.steps(0x18000)
        assert steps.index("all-ones-confirmed") < steps.index("error-detected")
        assert vf.recovery is not None and vf.recovery.trigger.startswith("all-ones")
    finally:
        stop_all(vf, pf)


def test_driver_without_handlers_is_removed_and_probed_again(world: World) -> None:
    backend = InProcessBackend(world.plat, world.adapter, world.lock)
    agent = Agent(backend, handlers=False, poll=POLL)
    try:
        names = agent.start()
        assert names == ["pf", "vf0", "vf1", "vf2"]
        vf = agent.drivers["vf0"]
        assert isinstance(vf, VfDriver)
        assert world.plat.registrations[0x18000] == (HOST, "eeh-vf", False)
        world.model(lambda: world.adapter.pes.vf(0).freeze("test"))  # a VF-only error
        assert wait_for(lambda: vf.probes == 2 and vf.state is DriverState.UP, 10)
        assert [h[1:3] for h in agent.hotplug_log] == [("removed", "vf0"), ("added", "vf0")]
        assert vf.recovery is None  # no handlers: the framework never ran
        assert "error-detected" not in world.plat.steps(0x18000)
        vf.send(frame(vf.mac, tag="back"))
        assert vf.wait_tx_done(5)
        assert [f[14:18] for f in world.uplink_frames()] == [b"back"]
        assert vf.counters()["tx"]["balanced"]
    finally:
        agent.stop()


def test_idle_drivers_sleep(world: World) -> None:
    poll = PollConfig()  # the defaults the agent runs with
    pf = world.pf(poll)
    vfs = [world.vf(n, poll) for n in range(3)]
    try:
        time.sleep(0.3)  # let the pollers back off
        wall0, cpu0 = time.monotonic(), time.process_time()
        time.sleep(2.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        print(f"\nidle CPU, PF + 3 VF drivers (in-process, max sleep "
              f"{poll.max_sleep_s * 1000:.0f} ms): {cpu / wall * 100:.2f}% of one CPU")
        assert cpu / wall < 0.25  # generous: a busy-polling thread would be ~100%
        assert all(d.poller.current_sleep == poll.max_sleep_s for d in vfs)
    finally:
        stop_all(*vfs, pf)


def test_scapy_packets_in_and_out(world: World) -> None:
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    pf = world.pf()
    vf0, vf2 = world.vf(0), world.vf(2)
    try:
        pkt = Ether(dst=mac_str(vf2.mac), src=mac_str(vf0.mac), type=0x88B5) / Raw(b"s" * 50)
        assert vf0.send(pkt)
        got = vf2.recv_packets(timeout=5)
        assert len(got) == 1 and bytes(got[0][Raw]) == b"s" * 50
        assert got[0].src == mac_str(vf0.mac)
    finally:
        stop_all(vf0, vf2, pf)


def vf0_waits_for_pf_reset_done(world: World) -> None:
    """The adapter's NIC reset behind the PF driver's back (every mailbox says "PF reset
    in progress" until someone writes pf_reset_done) and an error on vf0: its driver
    recovers up to slot_reset and waits there for MBX.rstd."""
    def adapter_reset_then_vf_error() -> None:
        world.adapter.pf.region_write(0, nic.CTRL, int(nic.Ctrl.RST).to_bytes(4, "little"))
        world.adapter.inject_vf_error(0)
    world.model(adapter_reset_then_vf_error)
    assert wait_for(lambda: "configure" in world.plat.steps(0x18000), 10)
    time.sleep(0.1)
    assert "pf-reset-done" not in world.plat.steps(0x18000)


def test_vf_waits_for_pf_reset_done_and_a_new_freeze_restarts_its_recovery(
        world: World) -> None:
    pf = world.pf()
    vf = world.vf(0)
    try:
        vf0_waits_for_pf_reset_done(world)
        world.model(lambda: world.adapter.pes.vf(0).freeze("again"))
        assert wait_for(lambda: "restart" in world.plat.steps(0x18000), 10)
        world.model(lambda: world.adapter.pf.region_write(
            0, nic.ADAPTER_CTRL, int(nic.AdapterCtrl.PF_RESET_DONE).to_bytes(4, "little")))
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10)
        steps = world.plat.steps(0x18000)
        assert steps.count("error-detected") == 2 and steps.count("restart") == 1
        assert "pf-reset-timeout" not in steps
        assert steps.index("restart") < steps.index("pf-reset-done") < steps.index("recovered")
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_a_vf_whose_config_space_is_lost_while_it_waits_for_the_pf_is_reset_again(
        world: World) -> None:
    """The VF driver waits in slot_reset for MBX.rstd; meanwhile the PF re-creates its VFs
    (VF Enable off and on: a fresh config space, memory decoding off). Waiting on would
    never end (every read is all-ones): the driver reports config-lost and asks for
    another reset."""
    pf = world.pf()
    vf = world.vf(0)
    try:
        vf0_waits_for_pf_reset_done(world)
        world.model(lambda: world.adapter.pf.enable_vfs(3))  # off and on again
        assert wait_for(lambda: "config-lost" in world.plat.steps(0x18000), 10), \
            world.plat.steps(0x18000)
        world.model(lambda: world.adapter.pf.region_write(
            0, nic.ADAPTER_CTRL, int(nic.AdapterCtrl.PF_RESET_DONE).to_bytes(4, "little")))
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10), \
            world.plat.steps(0x18000)
        steps = world.plat.steps(0x18000)
        assert steps.count("reset") == 2, steps
        lost = steps.index("config-lost")
        assert "reset" in steps[lost:] and "pf-reset-done" in steps[lost:], steps
        assert "pf-reset-timeout" not in steps
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_a_vf_that_is_not_the_configured_one_refuses_to_probe(world: World) -> None:
    # the PF driver forces another MAC on vf1 than the platform says vf1 has: the VF
    # driver is looking at a function that is not its VF (as after a wrong slot lookup)
    pf = PfDriver(world.fn("pf"), world.services, poll=POLL, settings=AdapterSettings(
        num_vfs=3, vfs={1: VfSettings("02:ee:00:00:aa:aa")}))
    pf.start()
    try:
        vf1 = VfDriver(world.fn("vf1"), world.services, poll=POLL)
        with pytest.raises(DriverError, match="not this VF"):
            vf1.start()
        assert world.plat.steps(0x18100) == ["probe-failed"]
    finally:
        pf.stop()
