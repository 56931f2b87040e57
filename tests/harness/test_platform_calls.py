"""Every platform call over real channels, from several callers, against the real model.

The platform (device model + vfio-user server + PE policy + platform-call server) runs
as it does for guests; callers are `eeh_abi.hcall.Channel` clients on its unix sockets.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eeh_abi.hcall import MAX_LINE, Channel, Event
from eeh_abi.papr import EehOption, PeState, SlotReset, Status
from eeh_abi.schema import Call
from eeh_abi.vf_settings import VfSettings
from eeh_abi.vocabulary import Kind
from hypervisor_shim.platform import Platform, PlatformConfig

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2", "vf2": "g2"}
PF, VF0, VF1, VF2 = 0x10000, 0x18000, 0x18100, 0x18200


class Inbox:
    """A channel's pushed events, with a wait for one of them."""

    def __init__(self, ch: Channel) -> None:
        self.events: list[Event] = []
        self.cond = threading.Condition()
        ch.subscribe(self._on)

    def _on(self, ev: Event) -> None:
        with self.cond:
            self.events.append(ev)
            self.cond.notify_all()

    def wait(self, name: str, pe: int, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for ev in self.events:
                    if ev.name == name and ev.pe == pe:
                        return ev
                left = deadline - time.monotonic()
                assert left > 0, f"no {name} for {pe:#x}; got {self.events}"
                self.cond.wait(left)


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=4, enabled_vfs=3, owners=OWNERS,
                         vf_settings={0: VfSettings("02:ee:00:00:01:00", None, 1500)})
    with Platform(cfg, tmp_path) as p:
        yield p


def chan(p: Platform, owner: str) -> Channel:
    """A connected channel: its first call returns once the platform serves it, so events
    pushed from then on reach it (events go to connected channels only)."""
    ch = Channel.unix(str(p.hcall_path(owner)), timeout=5)
    assert ch.call(Call.QUERY_FUNCTIONS).status == 0
    return ch


def test_query_functions_and_addresses(plat: Platform) -> None:
    with chan(plat, "g2") as g2, chan(plat, "svc") as svc:
        fns = g2.call(Call.QUERY_FUNCTIONS).ret["functions"]
        assert [(f["name"], f["addr"], f["kind"]) for f in fns] == [
            ("vf1", VF1, "vf"), ("vf2", VF2, "vf")]
        pf = svc.call(Call.QUERY_FUNCTIONS).ret["functions"]
        assert pf[0]["name"] == "pf" and pf[0]["adapter"]["num_vfs"] == 3
        assert pf[0]["adapter"]["vf_pes"] == [VF0, VF1, VF2]
        r = g2.call(Call.GET_CONFIG_ADDR_INFO2, addr=VF1, function=0)
        assert (r.status, r.get("pe")) == (0, VF1)
        assert svc.call(Call.GET_CONFIG_ADDR_INFO2, addr=PF, function=1).get("mode") == 2
        assert g2.call(Call.GET_CONFIG_ADDR_INFO2, addr=VF1, function=1).get("mode") == 1


def test_ownership_is_enforced(plat: Platform) -> None:
    with chan(plat, "g1") as g1, chan(plat, "g2") as g2, chan(plat, "svc") as svc:
        assert g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).get("state") == 0
        for call, args in (("read-slot-reset-state2", {"pe": VF1}),
                           ("set-eeh-option", {"pe": VF1, "option": 2}),
                           ("set-slot-reset", {"pe": VF1, "function": 1}),
                           ("slot-error-detail", {"pe": VF1, "function": 1}),
                           ("configure-pe", {"pe": PF}),
                           ("set-slot-reset", {"pe": PF, "function": 1}),
                           ("open-sriov-allow-unfreeze", {"pe": PF, "vf_pes": [VF0]})):
            r = g1.call(call, **args)
            assert r.status == Status.PARAM_ERROR, (call, args, r)
        assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
        assert svc.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0  # PF owner follows VFs
        assert svc.call(Call.SET_EEH_OPTION, pe=VF1, option=2).status == Status.PARAM_ERROR


def test_bad_arguments_get_statuses(plat: Platform) -> None:
    with chan(plat, "g1") as g1:
        cases = [("no-such-call", {}), ("set-eeh-option", {"pe": VF0}),
                 ("set-eeh-option", {"pe": "x", "option": 2}),
                 ("set-eeh-option", {"pe": VF0, "option": True}),
                 ("set-eeh-option", {"pe": VF0, "option": 2, "extra": 1}),
                 ("set-eeh-option", {"pe": VF0, "option": 17}),
                 ("set-slot-reset", {"pe": VF0, "function": 3}),
                 ("errinjct", {"pe": VF0, "function": 12}),
                 ("slot-error-detail", {"pe": VF0, "function": 7}),
                 ("read-slot-reset-state2", {"pe": 1 << 70})]
        for call, args in cases:
            r = g1.call(call, **args)
            assert r.status in (Status.PARAM_ERROR, Status.NOT_SUPPORTED), (call, args, r)
            assert r.error, (call, r)
        assert g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).status == 0  # still serving


def test_malformed_lines_oversized_and_flood(plat: Platform) -> None:
    path = str(plat.hcall_path("g1"))
    with socket.socket(socket.AF_UNIX) as s, chan(plat, "g2") as g2:
        s.connect(path)
        s.settimeout(5)
        s.sendall(b"not json\n[1,2]\n{\"v\":2,\"id\":3,\"call\":\"x\"}\n"
                  + b"x" * (MAX_LINE + 10) + b"\n"
                  + b'{"v":1,"id":9,"call":"read-slot-reset-state2","args":{"pe":98304}}\n')
        got = b""
        while got.count(b"\n") < 5:
            got += s.recv(65536)
        lines = got.splitlines()
        assert [b'"status":-3' in ln for ln in lines[:4]] == [True] * 4
        assert b'"id":9' in lines[4] and b'"status":0' in lines[4]
        # a flood on one channel does not stall another caller
        s.sendall(b'{"v":1,"id":1,"call":"query-functions"}\n' * 3000)
        t0 = time.monotonic()
        assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
        assert time.monotonic() - t0 < 5.0


def test_lockout_recovery_sequence_and_event_wakeup(plat: Platform) -> None:
    with chan(plat, "g1") as g1, chan(plat, "g2") as g2, chan(plat, "svc") as svc:
        in1, in2, ins = Inbox(g1), Inbox(g2), Inbox(svc)
        plat.inject_adapter_error()
        ins.wait(Kind.PE_FROZEN, PF)
        ev = in1.wait(Kind.PE_FROZEN, VF0)
        assert ev.data["side_effect"] and ev.data["locked_out"] and ev.data["origin"] == PF
        in2.wait(Kind.PE_FROZEN, VF1)
        in2.wait(Kind.PE_FROZEN, VF2)
        st = g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ret
        assert (st["state"], st["retry_ms"]) == (PeState.UNAVAILABLE, 1000)
        assert "locked-out" in st["flags"]
        r = g1.call(Call.SET_EEH_OPTION, pe=VF0, option=EehOption.THAW_MMIO)
        assert (r.status, r.get("retry_ms")) == (Status.BUSY, 1000)
        # a VF driver blocks on the lockout; the pushed event wakes it
        woke: list[float] = []

        def blocked() -> None:
            in1.wait(Kind.LOCKOUT_LIFTED, VF0, timeout=10)
            woke.append(time.monotonic())

        waiter = threading.Thread(target=blocked)
        waiter.start()
        # the adapter driver recovers the adapter PE
        assert svc.call(Call.SLOT_ERROR_DETAIL, pe=PF, function=1).ret["log"][0]["source"] \
            == "adapter-fatal"
        assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.HOT).status == 0
        assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.DEACTIVATE).status == 0
        assert svc.call(Call.READ_SLOT_RESET_STATE2, pe=PF).get("state") == 0
        assert svc.call(Call.CONFIGURE_PE, pe=PF).status == 0
        assert g1.call(Call.SET_EEH_OPTION, pe=VF0, option=2).status == Status.BUSY
        t_allow = time.monotonic()
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=PF, vf_pes=[VF0, VF1, VF2])
        assert r.status == 0 and r.get("allowed") == [VF0, VF1, VF2]
        waiter.join(5)
        assert woke, "the blocked driver was never woken"
        wake_ms = (woke[0] - t_allow) * 1000
        print(f"lockout lifted -> blocked driver woken: {wake_ms:.2f} ms")
        assert wake_ms < 10.0
        assert g1.call(Call.SET_EEH_OPTION, pe=VF0, option=2).status == 0
        assert g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).get("state") == 4
        assert g1.call(Call.SET_EEH_OPTION, pe=VF0, option=3).status == 0
        assert g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).get("state") == 0
        # the timeline has the platform's side, in order
        kinds = [(e.source, e.kind, e.pe) for e in plat.timeline.entries]
        order = [("policy", "pe-frozen", "adapter"), ("policy", "pe-frozen", "vf0"),
                 ("policy", "unfreeze-refused", "vf0"), ("policy", "allow-unfreeze", "adapter"),
                 ("policy", "lockout-lifted", "vf0"), ("policy", "mmio-thawed", "vf0"),
                 ("policy", "dma-thawed", "vf0"), ("policy", "pe-thawed", "vf0")]
        pos = [kinds.index(k) for k in order]
        assert pos == sorted(pos), list(zip(order, pos, strict=True))


def test_permanent_failure_is_pushed(tmp_path: Path) -> None:
    from hypervisor_shim.pe import PolicyConfig
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners={"pf": "svc", "vf0": "g1"},
                         policy=PolicyConfig(max_freezes=0))
    with Platform(cfg, tmp_path) as p, chan(p, "g1") as g1:
        inbox = Inbox(g1)
        p.inject_vf_error(0)
        inbox.wait(Kind.PERMANENT_FAILURE, VF0)
        st = g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).ret
        assert (st["state"], st["retry_ms"]) == (5, 0)
        assert g1.call(Call.SET_EEH_OPTION, pe=VF0, option=2).status == Status.HW_ERROR


def test_function_without_handlers_removed_recovered_and_added_back(plat: Platform) -> None:
    with chan(plat, "g1") as g1, chan(plat, "svc") as svc:
        inbox = Inbox(g1)
        assert g1.call(Call.REGISTER, addr=VF0, driver="test", handlers=False).status == 0
        plat.inject_adapter_error()
        inbox.wait(Kind.FUNCTION_REMOVED, VF0)
        # locked out: the platform does not touch the PE before the adapter recovered
        time.sleep(0.1)
        assert not [e for e in inbox.events if e.name == "function-added"]
        assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=1).status == 0
        assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=0).status == 0
        assert svc.call(Call.CONFIGURE_PE, pe=PF).status == 0
        t_allow = time.monotonic()
        assert svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=PF, vf_pes=[VF0]).status == 0
        added = inbox.wait(Kind.FUNCTION_ADDED, VF0)
        assert added.data["name"] == "vf0"
        assert g1.call(Call.READ_SLOT_RESET_STATE2, pe=VF0).get("state") == 0
        kinds = [e.kind for e in plat.timeline.entries
                 if e.source == "policy" and e.pe == "vf0"]
        order = ["function-removed", "lockout-lifted", "platform-reset", "pe-thawed",
                 "function-added"]
        assert [k for k in kinds if k in order] == order, kinds
        assert time.monotonic() - t_allow < 5
