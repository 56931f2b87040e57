"""The PF and VF drivers, each built by hand, on the real platform (hypervisor_shim's
Platform in harness mode: the device model, the vfio-user server, the PE policy with the
lockout, the platform-call server): bring-up, traffic, and recovery from VF and adapter
errors with exact books. What the drivers did is read from the platform's timeline."""

from __future__ import annotations

import time
from collections.abc import Iterator
from functools import partial

import pytest

from eeh_abi import nic
from eeh_abi.vf_settings import VfSettings, format_mac
from guest_drivers.driver import DriverError, DriverState
from guest_drivers.pf import AdapterSettings, PfDriver
from guest_drivers.poll import PollConfig
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import PlatformConfig
from tests.support.channels import TapChannel
from tests.support.frames import payload
from tests.support.platform_rig import (
    UPLINK_MAC,
    VF_SETTINGS,
    PlatformRig,
    frame,
    host_config,
    running,
)
from tests.support.waiting import wait_for

VF0, VF1 = 0x18000, 0x18100


def config(policy: PolicyConfig | None = None) -> PlatformConfig:
    return host_config(nvfs=4, enabled=3, vf_settings={1: VF_SETTINGS[1]}, policy=policy)


@pytest.fixture
def rig() -> Iterator[PlatformRig]:
    with running(config()) as r:
        yield r


@pytest.fixture
def services(rig: PlatformRig) -> Services:
    """The host's one channel, shared by the drivers (as the agent shares it)."""
    return rig.services()


def recovered_once(d: PfDriver | VfDriver) -> bool:
    return d.recovery is not None and d.recovery.recovered == 1


def stop_all(*drivers: PfDriver | VfDriver) -> None:
    for d in drivers:
        d.stop()


def test_pf_probe_brings_the_adapter_up_and_configures_the_vfs(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    a = rig.plat.adapter

    def regs() -> tuple[int, int, int]:
        b = a.pf.bar0
        return b.stored("SWITCH_CTRL"), b.stored("VF_TXEN"), b.stored("VF_RXEN")
    assert rig.model(regs) == (nic.SwitchCtrl.LOOPBACK | nic.SwitchCtrl.UPLINK, 0b111, 0b111)
    assert rig.model(lambda: a.vf(0).admin_mac()) == bytes.fromhex("02ee00000001")  # PF+1
    assert rig.model(lambda: a.vf(1).admin_mac()) == bytes.fromhex("02ee00000101")
    assert rig.model(lambda: (a.vf(1).admin_vlan(), a.vf(1).anti_spoof())) == (100, True)
    assert rig.model(lambda: (a.vf(2).admin_vlan(), a.vf(2).anti_spoof())) == (None, False)
    assert not rig.model(lambda: a.pf_resetting)  # pf_reset_done written
    assert rig.model(lambda: all(vf.bar0.stored("MBX") & nic.Mbx.RSTD for vf in a.vfs[:3]))
    reg = rig.calls("register", "adapter")
    assert [(e.owner, e.data["args"]["driver"], e.data["args"].get("handlers", True),
             e.data["status"]) for e in reg] == [(HOST, "eeh-pf", True, 0)]
    assert wait_for(lambda: bool(rig.details("probe", "adapter")))
    probe = rig.details("probe", "adapter")[0]
    assert probe["num_vfs"] == 3 and probe["pf_mac"] == "02:ee:00:00:00:00"
    assert pf.vf_pes() == [0x18000, 0x18100, 0x18200]


def test_vf_traffic_to_and_from_the_uplink_and_between_vfs(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    vf0, vf2 = rig.vf_driver(services, 0), rig.vf_driver(services, 2)
    try:
        assert format_mac(vf0.mac) == "02:ee:00:00:00:01"  # the PF's admin MAC
        for i in range(20):
            assert vf0.send(frame(vf0.mac, tag=f"up{i}"))
        assert vf0.wait_tx_done(5)
        assert [payload(f) for f in rig.uplink()] == [f"up{i}" for i in range(20)]
        assert rig.model(lambda: rig.plat.host.uplink.inject(frame(UPLINK_MAC, vf0.mac, "dn")))
        assert [payload(g) for g in vf0.recv(timeout=5)] == ["dn"]
        # VF to VF through the adapter's switch (loopback)
        vf0.send(frame(vf0.mac, vf2.mac, "v2v"))
        assert [payload(g) for g in vf2.recv(timeout=5)] == ["v2v"]
        assert vf0.wait_tx_done(5)
        c0 = vf0.counters()
        assert c0["tx"]["sent"] == 21 and c0["tx"]["balanced"] and c0["rx"]["received"] == 1
        led = rig.model(lambda: rig.plat.adapter.vf(0).nic.ledger.copy())
        assert led.tx_sent == 21 == vf0.tx.sent and led.tx_posted == vf0.tx.posted
    finally:
        stop_all(vf0, vf2, pf)


def test_refused_frames_are_counted_and_mtu_is_applied(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    vf = rig.vf_driver(services, 0)
    try:
        vf.mtu = 1000
        assert rig.model(lambda: rig.plat.adapter.vf(0).bar0.stored("MTU")) == 1000
        assert not vf.send(b"\x00" * 1019)  # above MTU + 18
        assert not vf.send(b"\x00" * 10)  # shorter than a header
        with pytest.raises(ValueError):
            vf.mtu = 9000  # buffers hold 1500 + 18 (max_mtu)
        c = vf.counters()["tx"]
        assert c["drop_reasons"] == {"runt": 1, "too-long": 1} and c["balanced"]
    finally:
        stop_all(vf, pf)


def test_vf_error_recovery_reclaims_pending_descriptors_and_replays_them(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    vf = rig.vf_driver(services, 0)
    a = rig.plat.adapter
    try:
        vf.mtu = 1400
        for i in range(3):
            vf.send(frame(vf.mac, tag=f"pre{i}"))
        assert vf.wait_tx_done(5)
        # hold the VF's TX (VF_TXEN off) so descriptors are pending in hardware...
        rig.model(lambda: a.pf.bar0.set("VF_TXEN", 0b110))
        for i in range(5):
            vf.send(frame(vf.mac, tag=f"held{i}"))
        assert wait_for(lambda: rig.model(lambda: a.vf(0).nic.tx_pending) == 5)

        def error() -> None:  # ...then a VF error freezes its PE
            a.inject_vf_error(0)
            a.pf.bar0.set("VF_TXEN", 0b111)
        rig.model(error)
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1)
        assert vf.wait_tx_done(5)
        seq = ["error-detected", "mmio-thawed", "rings-rearmed", "mmio-enabled", "dma-thawed",
               "replay", "resume", "recovered"]
        assert wait_for(lambda: "recovered" in rig.steps("vf0"))
        steps = rig.steps("vf0")
        assert [s for s in steps if s in seq] == seq
        assert "reset" not in steps
        out = [payload(f) for f in rig.uplink()]
        assert out == [f"pre{i}" for i in range(3)] + [f"held{i}" for i in range(5)]
        c = vf.counters()["tx"]
        assert c["reclaimed"] == 5 and c["replayed"] == 5 and c["sent"] == 8 and c["balanced"]
        led = rig.model(lambda: a.vf(0).nic.ledger.copy())
        assert led.tx_dropped == 5  # the reprogrammed ring dropped them in hardware
        assert led.tx_sent == 8 == vf.tx.sent
        assert rig.model(lambda: a.vf(0).bar0.stored("MTU")) == 1400
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_adapter_error_recovers_pf_first_then_vfs_after_the_lockout(
        rig: PlatformRig, services: Services) -> None:
    a = rig.plat.adapter
    # the adapter driver on a channel of its own whose allow-unfreeze is held back until
    # both VF drivers met the lockout (in one process the PF may otherwise finish first)
    pf_channel = TapChannel(rig.channel())

    def hold_allow(call: str, args: dict[str, object]) -> None:
        if call == "open-sriov-allow-unfreeze":
            assert wait_for(lambda: all(rig.policy("unfreeze-refused", n)
                                        for n in ("vf0", "vf1")), 10)
    pf_channel.before.append(hold_allow)
    pf = rig.pf_driver(Services(pf_channel))
    vf0, vf1 = rig.vf_driver(services, 0), rig.vf_driver(services, 1)
    try:
        vf0.mtu = 1200
        for d in (vf0, vf1):
            d.send(frame(d.mac, tag=f"{d.name}-before"))
            assert d.wait_tx_done(5)
        rig.uplink()
        rig.plat.inject_adapter_error("test")
        for d in (vf0, vf1):  # sent while frozen: held, then replayed
            d.send(frame(d.mac, tag=f"{d.name}-during"))
        for drv in (pf, vf0, vf1):
            assert wait_for(partial(recovered_once, drv), 15), (drv.name, rig.reports())
        for d in (vf0, vf1):
            assert d.wait_tx_done(5)
        assert wait_for(lambda: all("recovered" in rig.steps(n)
                                    for n in ("adapter", "vf0", "vf1")))
        want_pf = ["error-detected", "reset", "configure", "adapter-recovered", "slot-reset",
                   "allow-unfreeze", "resume", "recovered"]
        assert [s for s in rig.steps("adapter") if s in want_pf] == want_pf
        assert rig.details("error-log", "adapter")[0]["entries"] >= 1
        tl = rig.entries()
        allow = next(i for i, e in enumerate(tl) if (e.source, e.kind, e.pe) == (
            "policy", "allow-unfreeze", "adapter"))
        for name in ("vf0", "vf1"):
            # frozen with the adapter: the VF driver asks for its reset at once (the
            # adapter's reset wiped the VF), no MMIO thaw first
            want = ["error-detected", "unfreeze-refused", "lockout-lifted", "reset",
                    "configure", "pf-reset-done", "config-restored", "slot-reset", "replay",
                    "resume", "recovered"]
            vsteps = rig.steps(name)
            assert [s for s in vsteps if s in want] == want, vsteps
            assert "mmio-thawed" not in vsteps and "mmio-enabled" not in vsteps, vsteps
            assert rig.details("error-detected", name)[0]["result"] == "NEED_RESET"
            # nothing of the VF was reset before the adapter driver allowed it
            resets = [i for i, e in enumerate(tl) if (e.source, e.kind, e.pe) == (
                "policy", "reset-hot", name)]
            assert resets and min(resets) > allow, (name, resets, allow)
            assert rig.details("lockout-lifted", name)[0]["by"] == "event"
        assert sorted(pf.allowed) == [0x18000, 0x18100, 0x18200]
        assert sorted(payload(f) for f in rig.uplink()) == ["vf0-during", "vf1-during"]
        assert rig.model(lambda: a.vf(0).bar0.stored("MTU")) == 1200  # restored
        assert rig.model(lambda: a.vf(1).admin_vlan()) == 100  # the PF restored VFCFG
        for d in (vf0, vf1):
            c = d.counters()["tx"]
            assert c["balanced"] and c["sent"] == 2 and c["dropped"] == 0
        # traffic flows again
        vf1.send(frame(vf1.mac, tag="after"))
        assert vf1.wait_tx_done(5)
        assert [payload(f) for f in rig.uplink()] == ["after"]
    finally:
        stop_all(vf0, vf1, pf)


def test_permanent_failure_disconnects_and_counts_what_was_pending() -> None:
    # max_freezes 0: the VF PE's first freeze is its permanent failure
    with running(config(PolicyConfig(max_freezes=0))) as rig:
        services = rig.services()
        pf = rig.pf_driver(services)
        vf = rig.vf_driver(services, 0)
        a = rig.plat.adapter
        rig.model(lambda: a.pf.bar0.set("VF_TXEN", 0b110))  # held in hardware
        for i in range(4):
            assert vf.send(frame(vf.mac, tag=f"lost{i}"))
        assert wait_for(lambda: rig.model(lambda: a.vf(0).nic.tx_pending) == 4)
        rig.plat.inject_vf_error(0)
        assert wait_for(lambda: vf.state is DriverState.FAILED, 10)
        c = vf.counters()["tx"]
        assert c["balanced"] and c["sent"] == 0
        assert c["dropped"] == 4 and c["drop_reasons"] == {"permanent-failure": 4}
        assert wait_for(lambda: rig.steps("vf0")[-1:] == ["permanent-failure"])
        assert rig.policy("permanent-failure", "vf0")
        assert not vf.send(frame(vf.mac))  # refused, counted
        assert vf.counters()["tx"]["drop_reasons"].get("down") == 1
        assert rig.model(lambda: a.vf(0).nic.ledger.tx_sent) == 0
        stop_all(vf, pf)


def test_all_ones_read_is_confirmed_before_recovery_starts(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    # the VF driver's channel loses the pe-frozen event: it finds the freeze by itself
    tap = TapChannel(rig.channel())
    tap.drop.append(lambda ev: (ev.name, ev.pe) == ("pe-frozen", VF0))
    vf = rig.vf_driver(Services(tap), 0)
    try:
        rig.model(lambda: rig.plat.adapter.pes.vf(0).freeze("silent"))
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10)
        assert [(e.name, e.pe) for e in tap.dropped] == [("pe-frozen", VF0)]
        assert wait_for(lambda: "recovered" in rig.steps("vf0"))
        steps = rig.steps("vf0")
        assert steps.index("all-ones-confirmed") < steps.index("error-detected")
        assert vf.recovery is not None and vf.recovery.trigger.startswith("all-ones")
    finally:
        stop_all(vf, pf)


def test_idle_drivers_sleep(rig: PlatformRig, services: Services) -> None:
    poll = PollConfig()  # the defaults the agent runs with
    pf = rig.pf_driver(services, poll=poll)
    vfs = [rig.vf_driver(services, n, poll=poll) for n in range(3)]
    try:
        time.sleep(0.3)  # let the pollers back off
        wall0, cpu0 = time.monotonic(), time.process_time()
        time.sleep(2.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        print(f"\nidle CPU, PF + 3 VF drivers and the platform (max sleep "
              f"{poll.max_sleep_s * 1000:.0f} ms): {cpu / wall * 100:.2f}% of one CPU")
        assert cpu / wall < 0.25  # generous: a busy-polling thread would be ~100%
        assert all(d.poller.current_sleep == poll.max_sleep_s for d in vfs)
        assert all(d.poller.parked > 0 for d in vfs)  # the IdleWatch looks for them
    finally:
        stop_all(*vfs, pf)


def test_scapy_packets_in_and_out(rig: PlatformRig, services: Services) -> None:
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    pf = rig.pf_driver(services)
    vf0, vf2 = rig.vf_driver(services, 0), rig.vf_driver(services, 2)
    try:
        pkt = Ether(dst=format_mac(vf2.mac), src=format_mac(vf0.mac), type=0x88B5) / Raw(b"s" * 50)
        assert vf0.send(pkt)
        got = vf2.recv_packets(timeout=5)
        assert len(got) == 1 and bytes(got[0][Raw]) == b"s" * 50
        assert got[0].src == format_mac(vf0.mac)
    finally:
        stop_all(vf0, vf2, pf)


def vf0_waits_for_pf_reset_done(rig: PlatformRig) -> None:
    """The adapter's NIC reset behind the PF driver's back (every mailbox says "PF reset
    in progress" until someone writes pf_reset_done) and an error on vf0: its driver
    recovers up to slot_reset and waits there for MBX.rstd."""
    a = rig.plat.adapter

    def adapter_reset_then_vf_error() -> None:
        a.pf.region_write(0, nic.CTRL, int(nic.Ctrl.RST).to_bytes(4, "little"))
        a.inject_vf_error(0)
    rig.model(adapter_reset_then_vf_error)
    assert wait_for(lambda: "configure" in rig.steps("vf0"), 10)
    time.sleep(0.1)
    assert "pf-reset-done" not in rig.steps("vf0")


def pf_reset_done(rig: PlatformRig) -> None:
    rig.model(lambda: rig.plat.adapter.pf.region_write(
        0, nic.ADAPTER_CTRL, int(nic.AdapterCtrl.PF_RESET_DONE).to_bytes(4, "little")))


def test_vf_waits_for_pf_reset_done_and_a_new_freeze_restarts_its_recovery(
        rig: PlatformRig, services: Services) -> None:
    pf = rig.pf_driver(services)
    vf = rig.vf_driver(services, 0)
    try:
        vf0_waits_for_pf_reset_done(rig)
        rig.model(lambda: rig.plat.adapter.pes.vf(0).freeze("again"))
        assert wait_for(lambda: "restart" in rig.steps("vf0"), 10)
        pf_reset_done(rig)
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10), \
            str(rig.steps("vf0"))
        assert wait_for(lambda: "recovered" in rig.steps("vf0"))
        steps = rig.steps("vf0")
        assert steps.count("error-detected") == 2 and steps.count("restart") == 1, str(steps)
        assert "pf-reset-timeout" not in steps
        assert steps.index("restart") < steps.index("pf-reset-done") < steps.index("recovered"), \
            steps
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_a_vf_whose_config_space_is_lost_while_it_waits_for_the_pf_is_reset_again(
        rig: PlatformRig, services: Services) -> None:
    """The VF driver waits in slot_reset for MBX.rstd; meanwhile the PF re-creates its VFs
    (VF Enable off and on: a fresh config space, memory decoding off). Waiting on would
    never end (every read is all-ones): the driver reports config-lost and asks for
    another reset."""
    pf = rig.pf_driver(services)
    vf = rig.vf_driver(services, 0)
    try:
        vf0_waits_for_pf_reset_done(rig)
        rig.model(lambda: rig.plat.adapter.pf.enable_vfs(3))  # off and on again
        assert wait_for(lambda: "config-lost" in rig.steps("vf0"), 10), rig.steps("vf0")
        pf_reset_done(rig)
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 1, 10), \
            str(rig.steps("vf0"))
        assert wait_for(lambda: "recovered" in rig.steps("vf0"))
        steps = rig.steps("vf0")
        assert steps.count("reset") == 2, steps
        lost = steps.index("config-lost")
        assert "reset" in steps[lost:] and "pf-reset-done" in steps[lost:], steps
        assert "pf-reset-timeout" not in steps
        assert vf.state is DriverState.UP
    finally:
        stop_all(vf, pf)


def test_a_vf_that_is_not_the_configured_one_refuses_to_probe(
        rig: PlatformRig, services: Services) -> None:
    # the PF driver forces another MAC on vf1 than the platform says vf1 has: the VF
    # driver is looking at a function that is not its VF (as after a wrong slot lookup)
    pf = rig.pf_driver(services, settings=AdapterSettings(
        num_vfs=3, vfs={1: VfSettings("02:ee:00:00:aa:aa")}))
    try:
        vf1 = rig.vf_driver(services, 1, start=False)
        with pytest.raises(DriverError, match="not this VF"):
            vf1.start()
        assert wait_for(lambda: rig.steps("vf1") == ["probe-failed"]), rig.steps("vf1")
    finally:
        pf.stop()
