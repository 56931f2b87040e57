"""The operator's console on a real guest, driven by the stock qmp-shell (issue 9).

One guest holds the PF and vf0 of the real platform (device model, PE policy, platform
channel over virtio-serial). Through the guest's console socket qmp-shell lists the PEs,
injects an adapter error and sees the PE events, and its `query-status` and HMP commands
reach QEMU; through the platform socket it does the same without a QEMU behind it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path

from eeh_sriov.system import System
from eeh_sriov.topology import parse_topology
from qemu_launcher.assets import GuestAssets
from tests.support.qmpshell import run_qmp_shell

TOPOLOGY = """
[adapter]
total_vfs = 2
enabled_vfs = 2
[pf_driver]
where = "svc"
[[guests]]
name = "svc"
functions = ["pf", "vf0"]
"""


def test_qmp_shell_on_guest_and_platform_consoles(
        assets: GuestAssets, accel: str, run_dir: Callable[..., Path]) -> None:
    d = run_dir()
    topo = parse_topology(TOPOLOGY, "test")
    # the guest lists its platform port, then idles until the test ends
    command = ("for p in /sys/class/virtio-ports/*; do echo \"$p $(cat $p/name)\"; done "
               "> /mnt/results/ports.txt; sleep 600")

    async def go() -> tuple[str, str, str]:
        async with System(topo, d, assets, accel=accel,
                          guest_command=lambda g: command) as system:
            guest_sock = system.console.path("svc")
            plat_sock = system.console.platform_path
            shell = lambda sock, lines, hmp=False: asyncio.to_thread(  # noqa: E731
                run_qmp_shell, sock, lines, hmp=hmp)
            out_guest = await shell(guest_sock, [
                "query-status", "query-pes",
                "eeh-inject pe=adapter kind=adapter-fatal", 0.5, "", "query-pes"])
            out_hmp = await shell(guest_sock, ["info status"], hmp=True)
            out_plat = await shell(plat_sock, [
                "query-pes", "eeh-reset-pe pe=adapter kind=hot", 0.5, "", "query-eeh-policy",
                "query-status"])
            return out_guest, out_hmp, out_plat

    out_guest, out_hmp, out_plat = asyncio.run(go())
    (d / "qmp-shell.txt").write_text("\n---\n".join((out_guest, out_hmp, out_plat)))
    # passed through to QEMU, unchanged
    assert '"status": "running"' in out_guest, out_guest
    assert "VM status: running" in out_hmp, out_hmp
    # the PE commands: both PEs listed with owner and state, then the injection's events
    assert re.search(r'"pe": "adapter".*"owner": "svc".*"state": 0', out_guest), out_guest
    assert '"kind": "adapter-fatal"' in out_guest
    events = [json.loads(line.removeprefix("(QEMU) ").replace("'", '"'))
              for line in out_guest.splitlines() if "'event':" in line]
    changed = [e["data"] for e in events if e.get("event") == "EEH_PE_STATE_CHANGED"]
    assert {"pe": "adapter", "state": 2} in [{"pe": c["pe"], "state": c["state"]}
                                             for c in changed], events
    assert {"pe": "vf0", "state": 5} in [{"pe": c["pe"], "state": c["state"]}
                                         for c in changed], events
    assert '"locked-out"' in out_guest
    # the platform socket: PE commands, no QEMU behind it
    assert '"pe": "vf0"' in out_plat and '"max-freezes": 5' in out_plat, out_plat
    assert "CommandNotFound" in out_plat, out_plat  # query-status: no QEMU here
    # the guest saw its platform-call port
    ports = (d / "svc" / "results" / "ports.txt").read_text()
    assert "eeh.hcall" in ports, ports
