"""Isolation between guests, against the real platform (issue 13).

Extends tests/harness/test_platform_calls.py::test_ownership_is_enforced (seven calls)
and tests/unit/shim/test_pe_policy.py::test_authorization_matrix (the decision table):
here every call that names a PE or function, from every caller, on every PE it does not
own, over real channels, and proof that the refused call changed nothing. Then the data
path: a frozen VF's DMA never reaches its guest's memory (canary), a VF reaches another
VF through the switch only by the switch's rules (MAC, VLAN), and a region access outside
a region is refused by the vfio-user server before the model sees it.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device_model.nic.descriptor import DESC_SIZE, DESCRIPTOR
from eeh_abi import nic
from eeh_abi.hcall import Channel
from eeh_abi.vf_settings import VfSettings
from guest_drivers.agent import Agent
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from guest_drivers.vf import VfDriver
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.unit.drivers.drivers_fakes import wait_for
from vfio_user import Client, GuestRam
from vfio_user.errors import CommandFailed

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2", "vf2": "g2"}
PES = {"adapter": 0x10000, "vf0": 0x18000, "vf1": 0x18100, "vf2": 0x18200, "vf3": 0x18300}
OWNED = {"svc": {"adapter"}, "g1": {"vf0"}, "g2": {"vf1", "vf2"}, "nobody": set()}


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=4, enabled_vfs=4, owners=OWNERS,
                         policy=PolicyConfig(errinjct=True))
    with Platform(cfg, tmp_path) as p:
        p.add_channel("nobody")
        yield p


def calls_on(pe: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        ("read-slot-reset-state2", {"pe": pe}),
        ("get-config-addr-info2", {"addr": pe, "function": 0}),
        ("get-config-addr-info2", {"addr": pe, "function": 1}),
        ("set-eeh-option", {"pe": pe, "option": 2}),
        ("set-eeh-option", {"pe": pe, "option": 3}),
        ("set-slot-reset", {"pe": pe, "function": 1}),
        ("set-slot-reset", {"pe": pe, "function": 3}),
        ("set-slot-reset", {"pe": pe, "function": 0}),
        ("configure-pe", {"pe": pe}),
        ("slot-error-detail", {"pe": pe, "function": 1}),
        ("slot-error-detail", {"pe": pe, "function": 2}),
        ("errinjct", {"pe": pe, "function": 12, "address": 0, "mask": 0}),
        ("register", {"addr": pe, "driver": "hijack", "handlers": False}),
        ("report", {"step": "recovered", "pe": pe}),
        ("open-sriov-allow-unfreeze", {"pe": pe, "vf_pes": list(PES.values())}),
    ]


def picture(p: Platform) -> dict[str, Any]:
    """Everything a refused call must leave as it was."""
    def read() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, addr in PES.items():
            rec = p.policy.record(addr)
            assert rec is not None
            out[name] = (rec.pe.status(), rec.flags, rec.freezes.total,
                         len(rec.pe.error_log()), rec.pe.freeze_count)
        out["armed"] = len(p.adapter.injector.armed)
        out["registrations"] = dict(p.calls.registrations)
        return out
    return p.call(read)


def test_no_call_acts_on_a_pe_its_caller_does_not_own(plat: Platform) -> None:
    """Every PE call, from every caller, on every PE outside its partition: -3, and
    nothing changed. The two things the adapter driver may do beyond its own PE (read a VF
    PE's state, allow-unfreeze on the adapter PE) are the only successes."""
    plat.inject_adapter_error()  # something to thaw, reset and read logs of
    before = picture(plat)
    allowed_extra = {("svc", "read-slot-reset-state2"), ("svc", "get-config-addr-info2")}
    refused = 0
    for caller, mine in OWNED.items():
        with Channel.unix(str(plat.hcall_path(caller)), timeout=5) as ch:
            for name, addr in PES.items():
                if name in mine:
                    continue
                for call, args in calls_on(addr):
                    r = ch.call(call, **args)
                    if (caller, call) in allowed_extra and name != "adapter":
                        assert r.status == 0, (caller, call, name, r)
                        continue
                    assert r.status == -3, (caller, call, name, args, r)
                    refused += 1
            # a VF owner cannot allow-unfreeze even naming its own VF PE as the target
            if caller in ("g1", "g2"):
                own = PES[sorted(mine)[0]]
                r = ch.call("open-sriov-allow-unfreeze", pe=own, vf_pes=[own])
                assert r.status == -3, r
    assert picture(plat) == before
    print(f"\n{refused} foreign calls refused")
    # the positive control: each owner can act on its own PE (errinjct, then thaw)
    with Channel.unix(str(plat.hcall_path("g1")), timeout=5) as g1:
        assert g1.call("errinjct", pe=PES["vf0"], function=12).status == 0
        assert g1.call("slot-error-detail", pe=PES["vf0"], function=1).status == 0


# ---------------------------------------------------------------------------- DMA
VF_RAM = 1 << 20
RX_RING, TX_RING, RX_BUFS, TX_BUF = 0x1000, 0x2000, 0x4000, 0x3000
CANARY = 0xA5


def cfg_write16(c: Client, off: int, value: int) -> None:
    c.region_write(7, off, value.to_bytes(2, "little"))


def bar_write(c: Client, off: int, value: int) -> None:
    c.region_write(0, off, value.to_bytes(4, "little"))


def bar_read(c: Client, off: int) -> int:
    return int.from_bytes(c.region_read(0, off, 4), "little")


def test_a_frozen_vf_cannot_dma_into_its_guest(tmp_path: Path) -> None:
    """vf0's memory is all canary but for its rings. With its PE frozen (and after MMIO
    is thawed, in state 4, while it re-enables TX), frames arrive for it and TX
    descriptors are pending: not one byte of its memory changes and no interrupt comes.
    Thawing DMA then lets both through, so the canary could have caught a leak."""
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners={"pf": HOST, "vf0": "g1"})
    with Platform(cfg, tmp_path) as p:
        agent = Agent(HarnessBackend(str(p.hcall_path(HOST))), poll=PollConfig(max_sleep_s=0.01))
        agent.start()  # the adapter driver: switch, VF MACs, VF_TXEN/RXEN, reset done
        try:
            with GuestRam(VF_RAM) as ram, Client.open(p.host.server.paths["vf0"]) as c, \
                    Channel.unix(str(p.hcall_path("g1")), timeout=5) as g1:
                ram.write(0, bytes([CANARY]) * VF_RAM)
                c.map_ram(ram)
                c.enable_irqs(2, 1, start=0)  # MSI-X vector 0: RX
                cfg_write16(c, nic.CFG_COMMAND, int(nic.Command.MEMORY | nic.Command.BUS_MASTER))
                bar_write(c, nic.IMR, 0xFF)
                mac = bar_read(c, nic.MAC_LO).to_bytes(4, "little") + \
                    (bar_read(c, nic.MAC_HI) & 0xFFFF).to_bytes(2, "little")
                for i in range(8):
                    ram.write(RX_RING + i * DESC_SIZE,
                              DESCRIPTOR.pack(RX_BUFS + i * 0x800, 0x800, 0, 0, 0))
                frame = bytes.fromhex("02aa00000001") + mac + b"\x88\xb5" + bytes(50)
                ram.write(TX_BUF, frame)
                for i in range(8):
                    ram.write(TX_RING + i * DESC_SIZE, DESCRIPTOR.pack(TX_BUF, len(frame), 0, 0, 0))
                for base, lo in ((RX_RING, nic.RX_BASE_LO), (TX_RING, nic.TX_BASE_LO)):
                    bar_write(c, lo, base)
                    bar_write(c, lo + 4, 0)
                    bar_write(c, lo + 8, 8)
                bar_write(c, nic.RX_TAIL, 7)
                bar_write(c, nic.CTRL, int(nic.Ctrl.RXEN))  # TX held: TXEN off
                bar_write(c, nic.TX_TAIL, 3)  # three descriptors pending
                c.wait_irq(2, 0, 0.0)
                snapshot = ram.read(0, VF_RAM)
                p.inject_vf_error(0, "isolation test")
                to_vf = mac + bytes.fromhex("02aa00000001") + b"\x88\xb5" + bytes(50)
                for _ in range(5):
                    p.call(lambda: p.host.uplink.inject(to_vf))
                assert g1.call("set-eeh-option", pe=PES["vf0"], option=2).status == 0  # state 4
                bar_write(c, nic.CTRL, int(nic.Ctrl.RXEN | nic.Ctrl.TXEN))  # MMIO works now
                time.sleep(0.05)
                assert ram.read(0, VF_RAM) == snapshot, "a frozen VF's DMA reached its memory"
                assert c.wait_irq(2, 0, 0.1) == 0
                led = p.call(lambda: p.adapter.vf(0).nic.ledger.copy())
                assert (led.tx_sent, led.rx_delivered, led.rx_missed) == (0, 0, 5)
                assert p.call(lambda: p.adapter.vf(0).nic.tx_pending) == 3
                # thaw DMA: the held descriptors go out, new frames come in
                assert g1.call("set-eeh-option", pe=PES["vf0"], option=3).status == 0
                p.call(lambda: p.host.uplink.inject(to_vf))
                assert wait_for(lambda: ram.read(0, VF_RAM) != snapshot, 2)
                led = p.call(lambda: p.adapter.vf(0).nic.ledger.copy())
                assert (led.tx_sent, led.rx_delivered) == (3, 1)
        finally:
            agent.stop()


def test_an_access_outside_a_region_is_refused_before_the_model(tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners={"vf0": "g1"})
    with Platform(cfg, tmp_path) as p, Client.open(p.host.server.paths["vf0"]) as c:
        size = c.region_info(0).size
        for region, off, n in ((0, size - 2, 4), (0, size, 1), (7, 4096, 4), (3, 1 << 40, 8)):
            with pytest.raises(CommandFailed) as e:
                c.region_read(region, off, n)
            assert e.value.errno == errno.EFAULT, (region, off, n)
        assert p.call(lambda: p.adapter.vf(0).bad_accesses) == 0


# ---------------------------------------------------------------------------- switch
def test_a_vf_reaches_another_only_by_the_switchs_rules(tmp_path: Path) -> None:
    """vf0 and vf2 share the untagged domain; vf1 is forced into VLAN 100; every MAC is
    forced by the adapter driver (anti-spoof on vf0). vf0 reaches vf2 by its MAC and by
    broadcast, never vf1 (not by its MAC, not with an 802.1Q tag of VLAN 100, not by
    broadcast); a spoofed source is refused; vf1 cannot leave VLAN 100 nor vf0 take vf2's
    MAC. A VF without a forced VLAN may join one by its own VLAN register: that is the
    switch's rule (docs/registers.md, Switch), so the topology forces VLANs to isolate."""
    owners = {"pf": HOST, "vf0": HOST, "vf1": HOST, "vf2": HOST}
    settings = {0: VfSettings("02:ee:00:00:01:00", None, 1500, True),
                1: VfSettings("02:ee:00:00:01:01", 100, 1500, False),
                2: VfSettings("02:ee:00:00:01:02", None, 1500, False)}
    cfg = PlatformConfig(total_vfs=3, enabled_vfs=3, owners=owners, vf_settings=settings)
    with Platform(cfg, tmp_path) as p:
        agent = Agent(HarnessBackend(str(p.hcall_path(HOST))), poll=PollConfig(max_sleep_s=0.01),
                      echo=None)
        agent.start()
        try:
            vf0, vf1, vf2 = (agent.drivers[f"vf{n}"] for n in range(3))
            assert isinstance(vf0, VfDriver) and isinstance(vf1, VfDriver) \
                and isinstance(vf2, VfDriver)

            def body(tag: str) -> bytes:
                return b"\x88\xb5" + tag.encode().ljust(46, b".")

            def got(vf: VfDriver, tag: str, timeout: float = 0.3) -> bool:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    for f in vf.recv(timeout=0.05):
                        if tag.encode() in f:
                            return True
                return False

            bcast = b"\xff" * 6
            vf0.send(vf2.mac + vf0.mac + body("to-vf2"))
            assert got(vf2, "to-vf2", 2)  # the rule: same domain, its MAC
            vf0.send(vf1.mac + vf0.mac + body("to-vf1"))
            vf0.send(vf1.mac + vf0.mac + b"\x81\x00\x00\x64" + body("tagged-to-vf1"))
            vf0.send(bcast + vf0.mac + body("bcast"))
            assert got(vf2, "bcast", 2)
            assert not got(vf1, "to-vf1") and not got(vf1, "tagged-to-vf1") \
                and not got(vf1, "bcast")
            # a spoofed source: completed with an error, delivered to nobody
            errors = vf0.counters()["tx"]["errors"]
            vf0.send(vf2.mac + vf1.mac + body("spoofed"))
            assert not got(vf2, "spoofed") and not got(vf1, "spoofed")
            assert wait_for(lambda: vf0.counters()["tx"]["errors"] == errors + 1, 2)
            # forced settings cannot be escaped from the VF
            vf1.fn.write32(nic.VLAN, 0)  # try to leave VLAN 100
            vf0.fn.write32(nic.MAC_LO, int.from_bytes(vf2.mac[0:4], "little"))
            vf0.fn.write32(nic.MAC_HI, int.from_bytes(vf2.mac[4:6], "little")
                           | nic.MacHi.VALID)
            # BAR writes are posted (as QEMU's vfio-user-pci posts them): a read on the
            # same function flushes them, as a driver's readl after writel does
            vf0.fn.read32(nic.MAC_HI), vf1.fn.read32(nic.VLAN)
            vf1.send(vf2.mac + vf1.mac + body("escape"))
            vf1.send(vf0.mac + vf1.mac + body("escape0"))
            assert not got(vf2, "escape") and not got(vf0, "escape0")
            vf2.send(bcast + vf2.mac + body("whose"))
            assert got(vf0, "whose", 2)  # still vf0 (its own MAC), never vf1
            assert not got(vf1, "whose")
            assert vf0.fn.read32(nic.MAC_LO) == int.from_bytes(vf0.mac[0:4], "little")
            assert vf1.fn.read32(nic.VLAN) & nic.VLAN_VID == 100
            # an unforced VF may join a VLAN of its own accord (the switch's rule)
            vf2.fn.write32(nic.VLAN, int(nic.Vlan.EN) | 100)
            vf2.fn.read32(nic.VLAN)  # flush the posted write before vf1's frame
            vf1.send(vf2.mac + vf1.mac + body("joined"))
            assert got(vf2, "joined", 2)
            for vf in (vf0, vf1, vf2):
                assert vf.counters()["tx"]["balanced"], vf.counters()
        finally:
            agent.stop()


def test_channel_sockets_are_private(tmp_path: Path) -> None:
    """Channels are identities: a caller cannot pick another's by connecting to its
    socket unless it can open the file (sockets are mode 0600 in a private directory)."""
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners={"vf0": "g1"})
    with Platform(cfg, tmp_path) as p:
        st = os.stat(p.hcall_path("g1"))
        dst = os.stat(p.chan_dir)
        assert st.st_mode & 0o077 == 0 or dst.st_mode & 0o077 == 0, (oct(st.st_mode),
                                                                     oct(dst.st_mode))
