"""Pushed events are batched per owner on the real platform: an adapter error at N VFs
owned by one guest is one `pe-frozen` line for the VF PEs' side-effect freezes and one
`lockout-lifted` line for the lift, each naming the N PEs (`data.pes`), where it was N
lines each. The channel client hands its subscribers one event per PE, as before; the
lockout still refuses a VF's thaw until the lift, and each VF still thaws its own PE."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eeh_abi.hcall import Channel, Event
from eeh_abi.papr import EehOption, SlotReset, Status
from eeh_abi.schema import Call
from eeh_abi.vocabulary import Kind
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import svc_and_one_guest

NVFS = 8
PF = 0x10000
VFS = [0x18000 + 0x100 * n for n in range(NVFS)]


class RawOwner:
    """The owner's channel as bytes: every line as the platform wrote it."""

    def __init__(self, plat: Platform, owner: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(plat.hcall_path(owner)))
        self.sock.settimeout(10)
        self.buf = b""
        self.next_id = 1
        self.lines: list[dict[str, object]] = []
        self.sync()

    def sync(self) -> list[dict[str, object]]:
        """Every line up to the reply of a call made now (the platform writes an owner's
        events before the replies sent after them)."""
        mid = self.next_id
        self.next_id += 1
        self.sock.sendall(json.dumps({"v": 1, "id": mid, "call": "query-functions"})
                          .encode() + b"\n")
        while True:
            while b"\n" not in self.buf:
                self.buf += self.sock.recv(65536)
            line, self.buf = self.buf.split(b"\n", 1)
            msg = json.loads(line)
            if msg.get("id") == mid:
                return self.lines
            self.lines.append(msg)

    def events(self, name: str) -> list[dict[str, object]]:
        return [m for m in self.lines if m.get("event") == name]


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    with svc_and_one_guest(tmp_path, NVFS) as p:
        yield p


def _recover_adapter(svc: Channel) -> None:
    assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.HOT).status == 0
    assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.DEACTIVATE).status == 0
    deadline = time.monotonic() + 10
    while svc.call(Call.READ_SLOT_RESET_STATE2, pe=PF).get("state") != 0:
        assert time.monotonic() < deadline, "the adapter PE did not come back"
        time.sleep(0.01)
    assert svc.call(Call.CONFIGURE_PE, pe=PF).status == 0


def test_an_adapter_error_is_one_line_per_owner_and_event(plat: Platform) -> None:
    raw = RawOwner(plat, "g1")
    heard: list[Event] = []
    with Channel.unix(str(plat.hcall_path("g1")), timeout=10) as g1, \
            Channel.unix(str(plat.hcall_path("svc")), timeout=10) as svc:
        g1.subscribe(heard.append)
        g1.call(Call.QUERY_FUNCTIONS)
        plat.inject_adapter_error()
        deadline = time.monotonic() + 10
        while not (raw.sync() and raw.events(Kind.PE_FROZEN)):
            assert time.monotonic() < deadline, "no pe-frozen pushed"
            time.sleep(0.01)
        # the lockout refuses every VF's thaw until the lift
        for vf in VFS:
            assert g1.call(Call.SET_EEH_OPTION, pe=vf, option=EehOption.THAW_MMIO).status \
                == Status.BUSY
        _recover_adapter(svc)
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=PF, vf_pes=VFS)
        assert r.status == 0 and r.get("allowed") == VFS
        raw.sync()
        frozen, lifted = raw.events(Kind.PE_FROZEN), raw.events(Kind.LOCKOUT_LIFTED)
        assert len(frozen) == 1 and len(lifted) == 1, [m.get("event") for m in raw.lines]
        for line in (frozen[0], lifted[0]):
            data = line["data"]
            assert isinstance(data, dict) and data["pes"] == VFS and line["pe"] == VFS[0]
        # each VF thaws its own PE after the lift
        for vf in VFS:
            assert g1.call(Call.SET_EEH_OPTION, pe=vf, option=EehOption.THAW_MMIO).status == 0
        g1.call(Call.QUERY_FUNCTIONS)  # every event before this reply has been handed out
    # the client hands out one event per PE, without `pes`, as single events were
    got = [(ev.name, ev.pe) for ev in heard if ev.name == Kind.LOCKOUT_LIFTED]
    assert got == [(Kind.LOCKOUT_LIFTED, vf) for vf in VFS]
    assert all("pes" not in ev.data for ev in heard)
    frozen_events = [ev for ev in heard if ev.name == Kind.PE_FROZEN]
    assert [ev.pe for ev in frozen_events] == VFS
    assert all(ev.data["side_effect"] and ev.data["locked_out"] for ev in frozen_events)
    # the timeline still has one lockout-lifted entry per VF PE, after the allow-unfreeze
    kinds = [(e.kind, e.pe) for e in plat.timeline.entries if e.source == "policy"]
    allow = kinds.index(("allow-unfreeze", "adapter"))
    assert [pe for k, pe in kinds[allow:] if k == "lockout-lifted"] == \
        [f"vf{n}" for n in range(NVFS)]
    raw.sock.close()
