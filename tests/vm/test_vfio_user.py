"""The device model inside a real QEMU guest over vfio-user (issue: vfio-user transport).

One guest gets the PF and two VFs as `vfio-user-pci` devices on root ports. Inside it,
lspci must show each function properly; Python in the guest drives the PF's registers
through sysfs `resource0`, DMAs both ways through the shared memfd, receives an MSI-X
interrupt, sees a freeze as all-ones reads and dropped writes; the host hot-plugs and
removes a VF over QMP meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from device_model import Adapter, AdapterConfig, AsyncioClock, QueueUplink
from device_model.vfio_user import ServerThread
from hypervisor_shim.vm.assets import REPO, GuestAssets
from hypervisor_shim.vm.config import MachineConfig, VfioUserDevice
from hypervisor_shim.vm.machine import Machine

PATTERN = bytes(range(256))[16:116]
GUEST_MAC = bytes.fromhex("02aabbccddee")


class Echo(threading.Thread):
    """Answers the guest's pattern frame from the uplink with the reversed pattern."""

    def __init__(self, st: ServerThread, uplink: QueueUplink) -> None:
        super().__init__(daemon=True)
        self.st, self.uplink = st, uplink
        self.seen: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for f in self.st.call(self.uplink.take):
                self.seen.append(f)
                if PATTERN in f:
                    reply = f[6:12] + GUEST_MAC + b"\x88\xb5" + PATTERN[::-1]
                    self.st.call(lambda r=reply: self.uplink.inject(r))
            time.sleep(0.05)


async def _wait_file(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"guest never wrote {path.name}"
        await asyncio.sleep(0.05)


def test_pf_and_vfs_served_to_a_guest(
    assets: GuestAssets, machine_config: MachineConfig, run_dir: Callable[..., Path]
) -> None:
    d = run_dir()
    loop = asyncio.new_event_loop()
    uplink = QueueUplink()
    adapter = Adapter(AdapterConfig(total_vfs=4), clock=AsyncioClock(loop), uplink=uplink)
    adapter.pf.enable_vfs(3)  # the platform sets SR-IOV up before handing VFs out
    sock_dir = Path(tempfile.mkdtemp(prefix="eeh-vu-"))
    functions = {"pf": adapter.pf, "vf0": adapter.vf(0), "vf1": adapter.vf(1),
                 "vf2": adapter.vf(2)}
    results = d / "results"
    frozen_state: dict[str, object] = {}
    with ServerThread(functions, sock_dir, loop=loop) as st:
        devs = {name: VfioUserDevice(id=name, socket=path, root_port=f"rp{i}")
                for i, (name, path) in enumerate(st.paths.items())}
        cfg = MachineConfig(name="vfio-user", accel=machine_config.accel, root_ports=4,
                            vfio_user=(devs["pf"], devs["vf0"], devs["vf1"]))
        echo = Echo(st, uplink)
        echo.start()
        command = ("{ lspci -vvv -nn -d 1b36:10ee; lspci -vvv -nn -d 1b36:10ef; } "
                   "> /mnt/results/lspci.txt 2>&1; "
                   "python3 tests/vm/guest/transport_check.py")

        async def host_side(vm: Machine) -> None:
            await _wait_file(results / "sync-freeze-request")
            st.call(lambda: adapter.pes.adapter.freeze("test: host froze the adapter PE"))
            frozen_state["code"] = st.call(lambda: adapter.pes.adapter.status().code)
            (results / "sync-frozen").touch()
            await _wait_file(results / "sync-frozen-checked")
            for pe in (adapter.pes.adapter, *(adapter.pes.vf(i) for i in range(4))):
                # VF PEs froze as a side-effect; QEMU cannot even realize a frozen
                # function (its config space reads all-ones), so thaw them all
                assert st.call(pe.thaw_mmio) == 0 and st.call(pe.thaw_dma) == 0
            (results / "sync-thawed").touch()
            await _wait_file(results / "sync-plug-request")
            try:
                await asyncio.wait_for(vm.hotplug(devs["vf2"]), 60)
            except asyncio.TimeoutError:
                states = st.call(lambda: {n: (ep.state.name, [e.kind for e in ep.history])
                                          for n, ep in st.server.endpoints.items()})
                raise AssertionError(f"device_add did not return; endpoints {states}") from None
            (results / "sync-plugged").touch()
            await _wait_file(results / "sync-plug-seen")
            await vm.unplug("vf2")
            (results / "sync-unplugged").touch()

        async def go() -> int:
            async with Machine(cfg, assets, run_dir=d, repo=REPO, command=command) as vm:
                host = asyncio.ensure_future(host_side(vm))
                guest = asyncio.ensure_future(vm.wait_exit(timeout=240))
                await asyncio.wait({host, guest}, return_when=asyncio.FIRST_EXCEPTION)
                if host.done() and host.exception() is not None:
                    guest.cancel()
                    await host  # raises the host side's failure
                host.cancel()
                return (await guest).status

        try:
            status = asyncio.run(go())
        finally:
            echo.stop.set()
        pf_irqs = st.call(lambda: adapter.pf.irq_delivered)
    assert status == 0, (results / "guest-output.log").read_text()

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
    assert out["regs"]["mac"] == adapter.config.mac(0).hex()
    assert out["regs"]["mtu"] == 9000
    assert [f for f in echo.seen if PATTERN in f], "the guest's frame never left the PF"
    assert out["dma_tx"]["status"] & 1
    assert bytes.fromhex(out["dma_rx"]["payload"])[:len(PATTERN)] == PATTERN[::-1]
    assert pf_irqs >= 1, "the PF never signalled an MSI-X vector"
    assert out["msix"]["unhandled_vector_messages"] >= 1, out["msix"]
    assert frozen_state["code"] == 2
    assert out["freeze"]["reads"] == [0xFFFFFFFF] * 3
    assert out["freeze"]["mtu_after_thaw"] == 9000  # the frozen write of 1234 was dropped
    hp = out["hotplug"]
    assert len(hp["added"]) == 1 and not set(hp["added"]) & set(hp["after_unplug"])
