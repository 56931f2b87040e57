"""A VF PE's reset on the real platform, what it records and writes (issue 22: the loop's
work per VF after the lockout's lift).

- The model's side of a VF PE's reset is one entry each way: `pe-reset-asserted` names
  the function it reset and how (`function`, `function_reset`: no `function-reset` entry
  of its own), and a PE with no settle time (FLR has none) goes from released to
  `pe-reset-done` (no `pe-reset-deasserted`). The policy's entries (`reset-hot`,
  `reset-deactivate`, `pe-reset-done` pushed to the owner, `pe-thawed`) stay as they were.
  An adapter PE's reset still announces the VFs it resets under the PF, each with its
  `function-reset`.
- The replies and pushed events of the lines read in one run go out in one write, not a
  write(2) for every call that pushed an event (every VF's `pe-reset-done`).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from eeh_abi.hcall import Channel
from eeh_abi.papr import SlotReset
from eeh_abi.schema import Call
from hypervisor_shim.hcall.server import LINES_PER_TURN
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry
from tests.support.platform_rig import svc_and_one_guest

NVFS = 16
PF = 0x10000
VFS = [0x18000 + 0x100 * n for n in range(NVFS)]


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    with svc_and_one_guest(tmp_path, NVFS) as p:
        yield p


def _of(plat: Platform, pe: str, since: int) -> list[Entry]:
    return [e for e in plat.timeline.snapshot()[since:] if e.pe == pe]


def _wait_for(pred: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 10
    while not pred():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_a_vf_pe_reset_is_one_model_entry_each_way(plat: Platform) -> None:
    g1 = Channel.unix(str(plat.hcall_path("g1")), timeout=10)
    try:
        since = len(plat.timeline.snapshot())
        assert g1.call(Call.SET_SLOT_RESET, pe=VFS[3], function=SlotReset.HOT).status == 0
        assert g1.call(Call.SET_SLOT_RESET, pe=VFS[3], function=SlotReset.DEACTIVATE
                       ).status == 0
        _wait_for(lambda: any(e.kind == "pe-reset-done" and e.source == "policy"
                              for e in _of(plat, "vf3", since)), "no pe-reset-done")
    finally:
        g1.close()
    mine = _of(plat, "vf3", since)
    model = [e for e in mine if e.source == "model"]
    assert [e.kind for e in model] == ["pe-reset-asserted", "pe-reset-done"], model
    assert model[0].data == {"reset": "hot", "function": "vf3", "function_reset": "flr"}
    assert model[1].data == {"reset": "hot"}
    policy = [e.kind for e in mine if e.source == "policy"]
    assert policy == ["reset-hot", "pe-reset-done", "reset-deactivate"], policy
    assert [e.data.get("status") for e in mine if e.source == "call"] == [0, 0]


def test_an_adapter_reset_still_announces_the_vfs_it_resets(plat: Platform) -> None:
    svc = Channel.unix(str(plat.hcall_path("svc")), timeout=10)
    try:
        since = len(plat.timeline.snapshot())
        assert svc.call(Call.SET_SLOT_RESET, pe=PF, function=SlotReset.HOT).status == 0
    finally:
        svc.close()
    after = plat.timeline.snapshot()[since:]
    asserted = [e for e in after if (e.source, e.kind) == ("model", "pe-reset-asserted")]
    assert [(e.pe, e.data) for e in asserted] == [
        ("adapter", {"reset": "hot", "function": "pf", "function_reset": "hot"})]
    reset = {e.data["function"] for e in after
             if (e.source, e.kind) == ("model", "function-reset")}
    assert reset == {f"vf{n}" for n in range(NVFS)}  # the PF's own: in pe-reset-asserted


def test_a_run_of_resets_is_answered_in_one_write_per_turn(plat: Platform) -> None:
    conn_sock = socket.socket(socket.AF_UNIX)
    conn_sock.connect(str(plat.hcall_path("g1")))
    conn_sock.settimeout(10)
    buf = b""

    def run(function: int) -> list[dict[str, Any]]:
        nonlocal buf
        lines = [json.dumps({"v": 1, "id": n + 1, "call": "set-slot-reset",
                             "args": {"pe": vf, "function": function}}).encode() + b"\n"
                 for n, vf in enumerate(VFS)]
        conn_sock.sendall(b"".join(lines))
        got: list[dict[str, Any]] = []
        while not any(m.get("id") == NVFS for m in got):
            while b"\n" not in buf:
                buf += conn_sock.recv(65536)
            line, buf = buf.split(b"\n", 1)
            got.append(json.loads(line))
        return got

    try:
        run(SlotReset.HOT)
        _wait_for(lambda: plat.server.connections.get("g1"), "g1 not connected")
        conn = plat.server.connections["g1"][0]
        writes: list[int] = []
        real = conn.writer.write

        def counting(data: bytes) -> None:  # a spy on the real writer: counts, then writes
            writes.append(len(data))
            real(data)

        plat.call(lambda: setattr(conn.writer, "write", counting))
        got = run(SlotReset.DEACTIVATE)
    finally:
        conn_sock.close()
    replies = [m for m in got if "id" in m]
    assert [m["status"] for m in replies] == [0] * NVFS
    events = [m for m in got if m.get("event") == "pe-reset-done"]
    pes = [p for m in events for p in (m["data"].get("pes") or [m["pe"]])]
    assert sorted(pes) == VFS  # each VF's pe-reset-done pushed, ahead of its reply
    for m in events:
        first = m["data"].get("pes", [m["pe"]])[0]
        assert got.index(m) < got.index(replies[VFS.index(first)])
    # the lines arrived in one write: one write a turn of LINES_PER_TURN lines (the
    # kernel may split a send, so at most that), not one for each pushed event
    turns = -(-NVFS // LINES_PER_TURN)
    assert 1 <= len(writes) <= turns + 1, writes
