"""`up`'s own output and artifacts (issue 19), without guests: the PE state lines it prints
and the session's steps in timeline.md / summary.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from eeh_sriov import __main__ as cli
from eeh_sriov.operator_cli import StateLines, probed, traffic_flows_line
from eeh_sriov.report import session_injections, session_steps, write_summary, write_timeline_md
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from eeh_sriov.traffic import pcap_names
from hypervisor_shim.platform_api import PeInfo
from hypervisor_shim.timeline import Entry

VF0 = PeInfo("vf0", 0x8000, 5, 100, "g1", 1, ("isolated",))
ADAPTER = PeInfo("adapter", 0, 0, 0, "svc", 1, ())


def _pes(**changes: Any) -> list[PeInfo]:
    return [ADAPTER, dataclasses.replace(VF0, **changes)]


def test_a_state_line_is_printed_once_when_only_unprinted_fields_move() -> None:
    lines = StateLines()
    first = lines.changed(_pes())
    assert first == "adapter=0  vf0=5(isolated)"
    # the retry hint, the freeze count and the owner are not on the line: no second line
    assert lines.changed(_pes(retry_ms=250)) is None
    assert lines.changed(_pes(retry_ms=250, freeze_count=2)) is None
    assert lines.changed(_pes(retry_ms=250, freeze_count=2, owner=None)) is None
    # what the line shows changes: printed
    assert lines.changed(_pes(state=0, flags=())) == "adapter=0  vf0=0"
    assert lines.changed(_pes(state=0, flags=())) is None


def test_up_says_what_traffic_does_in_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli._parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["up", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--traffic" in text and "Without it (the default) no traffic runs" in text
    assert parser.parse_args(["up"]).traffic is False
    assert parser.parse_args(["up", "--traffic"]).traffic is True


def test_up_says_which_vfs_its_traffic_watches() -> None:
    """One adapter: every VF. Several: every VF of every adapter, each through its own
    adapter's uplink (it once probed the first adapter's VFs only)."""
    one = load_topology(DEFAULT_TOPOLOGY)
    assert traffic_flows_line(one, list(probed(one))) == \
        "up: traffic flows through every VF (vf0, vf1, vf2)"
    two = load_topology(DEFAULT_TOPOLOGY.parent / "two-adapters.toml")
    assert traffic_flows_line(two, list(probed(two))) == (
        "up: traffic flows through every VF (nic0.vf0, nic0.vf1, nic1.vf0, nic1.vf1), "
        "each through its own adapter's uplink")


def test_up_names_a_capture_per_adapter() -> None:
    assert pcap_names([""]) == {"": "uplink.pcap"}
    assert pcap_names(["nic0", "nic1"]) == {"nic0": "uplink-nic0.pcap",
                                            "nic1": "uplink-nic1.pcap"}


def test_status_after_up_has_ended_says_so(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """runs/latest outlives `up`; its console socket does not: one line that says the
    last `up` has ended (it used to be the connection's "[Errno 2] No such file")."""
    run = tmp_path / "20261207-160054-up-0"
    run.mkdir()
    (run / "consoles.json").write_text(json.dumps({"platform": str(tmp_path / "gone.qmp")}))
    (tmp_path / "latest").symlink_to(run)
    for cmd in (["status"], ["inject", "adapter", "adapter-fatal"]):
        assert cli.main(["--runs", str(tmp_path), *cmd]) == 1
        err = capsys.readouterr().err
        assert err == (f"error: no running topology: the last `up` ({run}) has ended (its "
                       f"console {tmp_path / 'gone.qmp'} is gone); start one with "
                       "`python -m eeh_sriov up` or pass --console\n"), err


def test_inject_names_a_bad_address_or_mask(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli._parser()
    for opt in ("--address", "--mask"):
        with pytest.raises(SystemExit):
            parser.parse_args(["inject", "vf0", "errinjct", opt, "zz"])
        err = capsys.readouterr().err.splitlines()[-1]
        assert err.endswith(f"argument {opt}: 'zz' is not an integer (decimal, or "
                            "hexadecimal as 0x...)"), err
    args = parser.parse_args(["inject", "vf0", "errinjct", "--address", "0x1000",
                              "--mask", "4095"])
    assert (args.address, args.mask) == (0x1000, 4095)


def _session() -> list[Entry]:
    return [
        Entry(10.0, "shim", "drivers-ready", None, None, {"s": 30.0}),
        Entry(11.0, "console", "inject", "vf1", None,
              {"kind": "errinjct", "function": 14}),
        Entry(11.5, "policy", "pe-frozen", "vf1", "g1", {"side_effect": False,
                                                          "reason": "dma-read"}),
        Entry(11.9, "driver", "recovered", "vf1", "g1", {"ledger": {"balanced": True}}),
        Entry(12.0, "traffic", "traffic-back", "vf1", None, {"after": "recovered",
                                                              "ms": 100.0}),
        Entry(20.0, "console", "inject", "adapter", None, {"kind": "adapter-fatal"}),
        Entry(20.1, "policy", "pe-frozen", "adapter", "svc", {"side_effect": False}),
        Entry(20.1, "policy", "pe-frozen", "vf0", "g1", {"side_effect": True}),
        Entry(21.0, "driver", "recovered", "adapter", "svc"),
        Entry(21.5, "driver", "recovered", "vf0", "g1"),
        Entry(21.6, "driver", "recovered", "vf1", "g1"),
        Entry(21.7, "traffic", "traffic-back", "vf0", None, {"after": "recovered",
                                                              "ms": 200.0}),
    ]


def test_session_steps_name_every_action_recovery_and_traffic_back() -> None:
    steps = session_steps(_session(), ["vf0", "vf1"], traffic=True)
    assert [(s.key, s.ok) for s in steps] == [
        ("inject", True), ("pe-frozen", True), ("recovered", True), ("traffic-back", True),
        ("inject", True), ("pe-frozen", True),  # the adapter's own freeze, not vf0's
        ("recovered", True), ("recovered", True), ("recovered", True),
        ("traffic-back", True),
        ("traffic-back", False)]  # vf1 recovered again, and no echo came back after
    assert steps[-1].title == "traffic back through vf1" and "recovered" in steps[-1].detail
    # without traffic nothing is expected back
    assert all(s.ok for s in session_steps(_session(), ["vf0", "vf1"], traffic=False))


def test_session_injections_time_the_traffic_back_per_action() -> None:
    got = session_injections(_session(), 10.0)
    assert [(i["pe"], i["kind"], i["ms"]) for i in got] == [
        ("vf1", "errinjct", 1000.0), ("adapter", "adapter-fatal", 10000.0)]
    assert got[0]["traffic_back_ms"] == {"vf1": 1000.0}
    assert got[1]["traffic_back_ms"] == {"vf0": 1700.0}


def test_session_files_are_well_formed(tmp_path: Path) -> None:
    entries = _session()
    steps = session_steps(entries, ["vf0", "vf1"], traffic=True)
    write_timeline_md(tmp_path / "timeline.md", "Operator session", steps, entries, 10.0,
                      since="drivers ready")
    md = (tmp_path / "timeline.md").read_text()
    assert "| step | since drivers ready | who | result |" in md
    assert "| traffic back through vf1 (100.0 ms after its driver) | 2000.0 ms | traffic " \
           "| ok |" in md
    write_summary(tmp_path / "summary.json", steps=steps, t0=10.0, counters={},
                  extra={"kind": "up", "recovery_ms": 1000.0})
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["kind"] == "up" and summary["recovery_ms"] == 1000.0
    assert not summary["ok"]  # vf1's last recovery: no traffic back
