"""The device model inside a real QEMU guest over vfio-user (issue: vfio-user transport).

One guest gets the PF and two VFs as `vfio-user-pci` devices on root ports. Inside it,
lspci must show each function properly; Python in the guest drives the PF's registers
through sysfs `resource0`, DMAs both ways through the shared memfd, receives an MSI-X
interrupt, sees a freeze as all-ones reads and dropped writes; the host hot-plugs and
removes a VF over QMP meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from eeh_sriov.transport_demo import GUEST_COMMAND, PATTERN, Echo, run_with_guest
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from qemu_launcher.assets import REPO, GuestAssets
from qemu_launcher.config import MachineConfig
from qemu_launcher.machine import Machine


def test_pf_and_vfs_served_to_a_guest(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: Callable[..., Path],
    removal: None,
) -> None:
    d = run_dir()
    results = d / "results"
    record: dict[str, object] = {}
    with AdapterHost(AdapterHostConfig(total_vfs=4, enabled_vfs=3)) as host:
        cfg = host.machine_config(dataclasses.replace(machine_config, name="vfio-user"),
                                  ["pf", "vf0", "vf1"])
        echo = Echo(host)
        echo.start()

        async def go() -> int:
            async with Machine(cfg, assets, run_dir=d, repo=REPO, command=GUEST_COMMAND) as vm:
                assert vm.proc is not None
                tasks = Path(f"/proc/{vm.proc.pid}/task")
                record["qemu_cpus"] = {frozenset(os.sched_getaffinity(int(t.name)))
                                       for t in tasks.iterdir()}
                return await run_with_guest(host, vm, results, record)

        try:
            status = asyncio.run(go())
        finally:
            echo.stop.set()
        pf_irqs = host.call(lambda: host.adapter.pf.irq_delivered)
        mac = host.adapter.config.mac(0).hex()
    assert status == 0, (results / "guest-output.log").read_text()
    # every QEMU thread runs on the device model's CPU (AdapterHostConfig.host_cpus)
    assert record["qemu_cpus"] == {frozenset(host.host_cpus)}, record["qemu_cpus"]
    assert (d / "qemu-cmdline.txt").read_text().find(
        f"taskset -c {host.host_cpus[0]} ") >= 0

    lspci = (results / "lspci.txt").read_text()
    blocks = [b for b in lspci.split("\n\n") if b.strip()]
    heads = [b.splitlines()[0] for b in blocks]
    assert len(blocks) == 3, lspci
    assert sum("[1b36:10ee]" in h for h in heads) == 1
    assert sum("[1b36:10ef]" in h for h in heads) == 2
    for b in blocks:
        assert "Ethernet controller [0200]" in b
        assert re.search(r"Region 0: Memory at [0-9a-f]+ \(32-bit, non-prefetchable\)", b)
        assert "Express (v2) Endpoint" in b and "FLReset+" in b
        assert "MSI-X: Enable" in b
        assert "Advanced Error Reporting" in b

    out = json.loads((results / "transport.json").read_text())
    assert out["regs"]["mac"] == mac
    assert out["regs"]["mtu"] == 9000
    assert [f for f in echo.seen if PATTERN in f], "the guest's frame never left the PF"
    assert out["dma_tx"]["status"] & 1
    assert bytes.fromhex(out["dma_rx"]["payload"])[:len(PATTERN)] == PATTERN[::-1]
    assert pf_irqs >= 1, "the PF never signalled an MSI-X vector"
    assert out["msix"]["unhandled_vector_messages"] >= 1, out["msix"]
    assert record["frozen_code"] == 2
    assert out["freeze"]["reads"] == [0xFFFFFFFF] * 3
    assert out["freeze"]["mtu_after_thaw"] == 9000  # the frozen write of 1234 was dropped
    hp = out["hotplug"]
    assert len(hp["added"]) == 1, hp  # device_add over QMP reached the guest
    assert record["unplug"] == "removed"  # the `removal` fixture: this QEMU can remove
    assert not set(hp["added"]) & set(hp["after_unplug"])
    # plugged again on the same socket: the server took QEMU's new connection
    assert hp["replug"] == "added" and hp["readded"] == hp["added"], hp
