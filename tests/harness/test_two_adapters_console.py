"""Two adapters through the operator's console and the platform calls (the real platform,
the real QMP console, real channels; no drivers): PE names that say the adapter, PE
addresses unique across adapters (each on its own bus), an injection on one adapter that
leaves the other alone, and platform calls that cannot cross adapters (query-functions
lists both adapters' functions; allow-unfreeze of one adapter cannot name the other's VF
PE; a VF's state is readable by its own adapter's PF owner only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from eeh_sriov.topology import parse_topology
from hypervisor_shim.platform import Platform
from tests.harness.console_rig import ConsoleThread
from tests.support.waiting import wait_for

TOPOLOGY = """
[uplink]
kind = "queue"
[pf_driver]
where = "svc"
[[adapter]]
total_vfs = 4
enabled_vfs = 2
[[adapter]]
total_vfs = 4
enabled_vfs = 2
[adapter.pf_driver]
where = "svc1"
[[guests]]
name = "svc"
functions = ["nic0.pf"]
[[guests]]
name = "svc1"
functions = ["nic1.pf"]
[[guests]]
name = "g1"
functions = ["nic0.vf0", "nic1.vf0"]
"""


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    topo = parse_topology(TOPOLOGY, "two")
    with Platform(topo.platform_config(), tmp_path) as p:
        yield p


def test_console_names_and_isolation(plat: Platform) -> None:
    con = ConsoleThread(plat)
    qmp = QEMUMonitorProtocol(str(con.console.platform_path))
    try:
        qmp.connect()
        pes: list[dict[str, Any]] = qmp.cmd("query-pes")  # type: ignore[assignment]
        assert [p["pe"] for p in pes] == ["nic0", "nic0.vf0", "nic0.vf1",
                                          "nic1", "nic1.vf0", "nic1.vf1"]
        assert len({p["address"] for p in pes}) == len(pes)  # unique across adapters
        assert {p["pe"]: p["owner"] for p in pes}["nic1"] == "svc1"
        with pytest.raises(Exception, match="no PE named 'vf0'"):
            qmp.cmd("eeh-inject", pe="vf0", kind="adapter-fatal")
        done: dict[str, Any] = qmp.cmd("eeh-inject", pe="nic1",  # type: ignore[assignment]
                                       kind="adapter-fatal")
        assert done["pe"] == "nic1"
        assert wait_for(lambda: plat.pe_states()["nic1.vf1"]["state"] != 0, 5)
        st = plat.pe_states()
        assert {pe: s["state"] for pe, s in st.items() if pe.startswith("nic0")} == {
            "nic0": 0, "nic0.vf0": 0, "nic0.vf1": 0}
        assert st["nic1"]["freeze_count"] == 1 and "locked-out" in st["nic1.vf0"]["flags"]
        assert st["nic0"]["freeze_count"] == 0
        reset: dict[str, Any] = qmp.cmd("eeh-reset-pe", pe="nic1",  # type: ignore[assignment]
                                        kind="hot")
        assert reset["status"] == 0
    finally:
        qmp.close()
        con.close()


def test_platform_calls_stay_on_their_adapter(plat: Platform) -> None:
    pes = {p.pe: p.address for p in plat.call(plat._present)}
    with Channel.unix(str(plat.hcall_path("g1")), timeout=5) as g1, \
            Channel.unix(str(plat.hcall_path("svc")), timeout=5) as svc:
        fns: list[dict[str, Any]] = g1.call(Call.QUERY_FUNCTIONS).get("functions")
        assert [(f["name"], f["pe"]) for f in fns] == [("nic0.vf0", pes["nic0.vf0"]),
                                                       ("nic1.vf0", pes["nic1.vf0"])]
        part = svc.call(Call.QUERY_PARTITION)
        mine: list[dict[str, Any]] = part.get("pes")
        assert part.get("pf_owner") and [p["name"] for p in mine] == ["nic0"]
        # nic0's PF owner reads nic0's VF states, not nic1's
        assert svc.call(Call.READ_SLOT_RESET_STATE2, pe=pes["nic0.vf0"]).status == 0
        assert svc.call(Call.READ_SLOT_RESET_STATE2, pe=pes["nic1.vf0"]).status == -3
        # nic0's allow-unfreeze cannot name nic1's VF PE (nor any PE of nic1)
        plat.inject_adapter_error(adapter="nic0")
        plat.inject_adapter_error(adapter="nic1")
        assert wait_for(lambda: plat.pe_states()["nic0"]["state"] != 0, 5)
        r = svc.call(Call.SET_SLOT_RESET, pe=pes["nic0"], function=1)
        assert r.status == 0
        svc.call(Call.SET_SLOT_RESET, pe=pes["nic0"], function=0)
        assert wait_for(lambda: plat.pe_states()["nic0"]["state"] == 0, 5), plat.pe_states()["nic0"]
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=pes["nic0"], vf_pes=[pes["nic1.vf0"]])
        assert r.status == -3, r
        assert "locked-out" in plat.pe_states()["nic1.vf0"]["flags"]
        r = svc.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=pes["nic0"], vf_pes=[pes["nic0.vf0"]])
        assert r.status == 0 and r.get("allowed") == [pes["nic0.vf0"]]
        st = plat.pe_states()
        assert "locked-out" not in st["nic0.vf0"]["flags"]
        assert "locked-out" in st["nic1.vf0"]["flags"] and st["nic1"]["state"] != 0
        # and svc cannot act on nic1's adapter PE at all
        assert svc.call(Call.SET_SLOT_RESET, pe=pes["nic1"], function=1).status == -3
