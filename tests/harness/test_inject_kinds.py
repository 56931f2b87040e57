"""Every injectable error kind (hypervisor_shim.injection.INJECT_KINDS) on the real
platform: what it returns, which PEs it freezes, what it logs, who is told; and the
table reaching the console's eeh-inject and the CLI's `inject` choices.

What each kind does is written out here, not read from the table: a kind added to the
table without its line in EXPECTED fails test_every_kind_in_the_table_is_tested.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp import ExecuteError, QMPClient

from eeh_sriov.__main__ import _parser
from hypervisor_shim.injection import INJECT_KINDS
from hypervisor_shim.platform import Platform, PlatformConfig, PlatformError
from tests.harness.console_rig import ConsoleThread

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
PES = ("adapter", "vf0", "vf1")


@dataclass(frozen=True)
class Expected:
    pe: str  # where it is injected
    args: dict[str, Any]  # beyond pe and kind
    reply: dict[str, Any]  # its wire form ("id" of an errinjct: any int)
    states: dict[str, int]  # every PE's state afterwards (PAPR)
    logged: dict[str, int] = field(default_factory=dict)  # error-log entries per PE
    told: dict[str, str] = field(default_factory=dict)  # PE -> owner pushed pe-frozen


EXPECTED = {
    "errinjct": Expected(
        "vf0", {"function": 14, "address": 0x1000, "mask": 0xFFF},
        {"pe": "vf0", "kind": "errinjct", "function": 14, "armed": True},
        {"adapter": 0, "vf0": 0, "vf1": 0}),  # armed: fires on the next matching access
    "adapter-fatal": Expected(
        "adapter", {}, {"pe": "adapter", "kind": "adapter-fatal", "log-seq": 1},
        {"adapter": 2, "vf0": 5, "vf1": 5}, {"adapter": 1},
        {"adapter": "svc", "vf0": "g1", "vf1": "g2"}),
    "vf-error": Expected(
        "vf1", {}, {"pe": "vf1", "kind": "vf-error", "log-seq": 1},
        {"adapter": 0, "vf0": 0, "vf1": 2}, {"vf1": 1}, {"vf1": "g2"}),
    "freeze": Expected(
        "vf0", {}, {"pe": "vf0", "kind": "freeze", "frozen": True},
        {"adapter": 0, "vf0": 2, "vf1": 0}, {}, {"vf0": "g1"}),
}


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    with Platform(PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS), tmp_path) as p:
        yield p


def test_every_kind_in_the_table_is_tested() -> None:
    assert set(INJECT_KINDS) == set(EXPECTED)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_kind_on_the_real_platform(plat: Platform, kind: str) -> None:
    want = EXPECTED[kind]
    t0 = plat.timeline.snapshot()[-1].t
    got = asyncio.run(plat.inject(want.pe, kind, **want.args)).to_json()
    if kind == "errinjct":
        assert isinstance(got.pop("id"), int)
    assert got == want.reply
    states = {p.pe: p.state for p in asyncio.run(plat.query_pes())}
    assert states == want.states
    logs = {pe: len(asyncio.run(plat.error_log(pe))) for pe in PES}
    assert logs == {pe: want.logged.get(pe, 0) for pe in PES}
    after = [e for e in plat.timeline.snapshot() if e.t > t0]
    told = {e.pe: e.data["to"] for e in after
            if (e.source, e.kind) == ("policy", "pe-frozen")}
    assert told == {pe: [owner] for pe, owner in want.told.items()}
    # an error logged is an error the hardware saw: AER status set on its function
    logged_by_model = {e.pe for e in after if (e.source, e.kind) == ("model", "error-logged")}
    assert logged_by_model == set(want.logged)
    assert [(e.source, e.kind, e.pe) for e in after if e.kind == "inject"] == \
        [("shim", "inject", want.pe)]


def test_freeze_has_no_hardware_cause_and_counts_once(plat: Platform) -> None:
    """A freeze sets no AER status and no adapter error register; freezing a frozen PE
    changes nothing; on the adapter PE it freezes and locks out every VF PE."""
    def hardware() -> tuple[int, ...]:
        fns = [plat.adapter.pf, *plat.adapter.vfs]
        return (*(f.config.aer_snapshot()["uncor_status"] for f in fns),
                plat.adapter.pf.bar0.get("ADAPTER_ERR"), plat.adapter.pf.bar0.get("VF_ERR"))
    clean = plat.call(hardware)
    assert asyncio.run(plat.inject("vf1", "freeze")).frozen is True
    again = asyncio.run(plat.inject("vf1", "freeze"))
    assert again.to_json() == {"pe": "vf1", "kind": "freeze", "frozen": False}
    assert plat.pe_states()["vf1"]["freeze_count"] == 1
    assert plat.call(hardware) == clean
    asyncio.run(plat.inject("adapter", "freeze"))
    st = plat.pe_states()
    assert [(st[pe]["state"], st[pe]["flags"]) for pe in PES] == [
        (2, ["isolated", "recovering"]), (5, ["isolated", "recovering", "locked-out"]),
        (5, ["isolated", "recovering", "locked-out"])]  # locked out: state 5, whatever froze it
    assert [e.kind for e in plat.timeline.snapshot() if e.kind == "lockout-start"] == \
        ["lockout-start"]
    assert plat.call(hardware) == clean


def test_the_console_and_the_cli_take_every_kind(plat: Platform) -> None:
    con = ConsoleThread(plat)
    try:
        async def session() -> tuple[object, str]:
            qmp = QMPClient("test")
            await qmp.connect(str(con.console.platform_path))
            try:
                ok = await qmp.execute("eeh-inject", {"pe": "vf1", "kind": "freeze"})
                try:
                    await qmp.execute("eeh-inject", {"pe": "vf0", "kind": "freeze",
                                                     "function": 1})
                except ExecuteError as e:
                    return ok, e.error.error.desc
                return ok, ""
            finally:
                await qmp.disconnect()
        ok, refused = con.run(session())
    finally:
        con.close()
    assert ok == {"pe": "vf1", "kind": "freeze", "frozen": True}
    assert refused == "Parameter 'function' applies to kind 'errinjct' only, not 'freeze'"
    for kind in EXPECTED:
        assert _parser().parse_args(["inject", "vf0", kind]).kind == kind
    with pytest.raises(SystemExit):
        _parser().parse_args(["inject", "vf0", "meteor"])


def test_a_kind_not_in_the_table_is_refused(plat: Platform) -> None:
    with pytest.raises(PlatformError, match="no error kind 'meteor'"):
        asyncio.run(plat.inject("vf0", "meteor"))
    with pytest.raises(PlatformError, match="kind errinjct needs error function"):
        asyncio.run(plat.inject("vf0", "errinjct"))
    # the timeline records what was asked of a known kind, refused or not
    assert [e.data["kind"] for e in plat.timeline.snapshot() if e.kind == "inject"] == \
        ["errinjct"]
    assert plat.pe_states()["vf0"]["state"] == 0
