"""The transport scenario's host side, shared by `make demo` and the VM tests.

The guest runs `python3 -m guest_drivers.selftest`; the host answers its pattern frame
from the uplink (an echo), freezes and thaws the adapter PE when the guest asks, and
hot-plugs and removes a VF. Host and guest meet through files in the results share.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

from hypervisor_shim.adapter_host import AdapterHost
from hypervisor_shim.errors import ShimError
from qemu_launcher.errors import StateError, UnplugRefused
from qemu_launcher.machine import Machine

PATTERN = bytes(range(256))[16:116]
PEER_MAC = bytes.fromhex("02aabbccddee")
GUEST_COMMAND = ("{ lspci -vvv -nn -d 1b36:10ee; lspci -vvv -nn -d 1b36:10ef; } "
                 "> /mnt/results/lspci.txt 2>&1; python3 -m guest_drivers.selftest")


class ScenarioError(ShimError):
    """Root of the exceptions of the transport scenario's host side."""


class ThawRefused(ScenarioError):
    """The platform could not thaw a PE after the scenario froze the adapter."""

    def __init__(self, pe: str, mmio: int, dma: int | None) -> None:
        dma_text = "not tried" if dma is None else str(dma)
        super().__init__(f"thaw of PE {pe} refused (MMIO thaw status {mmio}, "
                         f"DMA thaw status {dma_text})")
        self.pe = pe
        self.mmio = mmio
        self.dma = dma


class ScenarioTimeout(ScenarioError):
    """A step of the scenario did not happen in time (the guest's or QEMU's side)."""

    def __init__(self, what: str, timeout: float) -> None:
        super().__init__(f"{what} within {timeout:.0f} s")
        self.what = what
        self.timeout = timeout


class Echo(threading.Thread):
    """Answers the guest's pattern frame from the uplink with the reversed pattern."""

    def __init__(self, host: AdapterHost) -> None:
        super().__init__(daemon=True, name="uplink-echo")
        self.host = host
        self.seen: list[bytes] = []
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for f in self.host.call(self.host.uplink.take):
                    self.seen.append(f)
                    if PATTERN in f:
                        reply = f[6:12] + PEER_MAC + b"\x88\xb5" + PATTERN[::-1]
                        self.host.call(functools.partial(self.host.uplink.inject, reply))
                time.sleep(0.05)
        except StateError:
            pass  # the host closed before we were told to stop: nothing left to echo


async def wait_file(path: Path, timeout: float = 120) -> None:
    """Wait for the guest to create `path` in the results share (a 9p directory the guest
    writes: the host has no notification for it, so this polls)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ScenarioTimeout(f"the guest did not write {path.name}", timeout)
        await asyncio.sleep(0.05)


async def _within(what: str, timeout: float, step: Awaitable[None]) -> None:
    try:
        await asyncio.wait_for(step, timeout)
    except TimeoutError:
        raise ScenarioTimeout(what, timeout) from None


async def transport_host_side(host: AdapterHost, vm: Machine, results: Path,
                              record: dict[str, object], hotplug: str = "vf2",
                              port: str = "rp3") -> None:
    adapter = host.adapter
    await wait_file(results / "sync-freeze-request")
    host.call(lambda: adapter.pes.adapter.freeze("scenario: operator froze the adapter PE"))
    record["frozen_code"] = int(host.call(lambda: adapter.pes.adapter.status().code))
    (results / "sync-frozen").touch()
    await wait_file(results / "sync-frozen-checked")
    for pe in adapter.pes:  # adapter PE first
        # VF PEs froze as a side-effect of the adapter PE: thaw them all
        mmio = host.call(pe.thaw_mmio)
        dma = host.call(pe.thaw_dma) if mmio == 0 else None
        if mmio != 0 or dma != 0:
            raise ThawRefused(pe.name, int(mmio), None if dma is None else int(dma))
    (results / "sync-thawed").touch()
    await wait_file(results / "sync-plug-request")
    dev = host.device(hotplug, port)
    await _within(f"device_add of {hotplug} did not complete", 60, vm.hotplug(dev))
    (results / "sync-plugged").touch()
    await wait_file(results / "sync-plug-seen")
    try:
        await vm.unplug(dev)
        record["unplug"] = "removed"
    except UnplugRefused as e:
        record["unplug"] = f"refused: {e}"
    (results / "sync-unplugged").write_text(str(record["unplug"]) + "\n")
    if record["unplug"] != "removed":
        (results / "sync-replugged").write_text("skipped: not removed\n")
        return
    # the same function again: its server takes the new connection QEMU opens
    await wait_file(results / "sync-unplug-seen")
    await _within(f"device_add of {hotplug} (again) did not complete", 60,
                  vm.hotplug(host.device(hotplug, port)))
    record["replug"] = "added"
    (results / "sync-replugged").write_text("added\n")


async def run_with_guest(host: AdapterHost, vm: Machine, results: Path,
                         record: dict[str, object], timeout: float = 240) -> int:
    """Run the host side beside the guest; a host-side failure ends the run at once."""
    side = asyncio.ensure_future(transport_host_side(host, vm, results, record))
    guest = asyncio.ensure_future(vm.wait_exit(timeout))
    await asyncio.wait({side, guest}, return_when=asyncio.FIRST_EXCEPTION)
    if side.done() and side.exception() is not None:
        guest.cancel()
        await side
    side.cancel()
    return (await guest).status


def summarize(results: Path, record: dict[str, object], status: int) -> str:
    """A human-readable account of a transport scenario run."""
    lines = [f"guest exit status {status}"]
    lspci = results / "lspci.txt"
    if lspci.exists():
        heads = [b.splitlines()[0] for b in lspci.read_text().split("\n\n") if b.strip()]
        lines += [f"  lspci: {h}" for h in heads]
    try:
        out = json.loads((results / "transport.json").read_text())
    except (OSError, ValueError):
        return "\n".join([*lines, "  (no results from the guest)"])
    regs, fr, hp = out.get("regs", {}), out.get("freeze", {}), out.get("hotplug", {})
    lines += [
        f"  registers: MAC {regs.get('mac')} read, MTU written and read back as {regs.get('mtu')}",
        f"  DMA: TX status {out.get('dma_tx', {}).get('status')}, RX echo of "
        f"{out.get('dma_rx', {}).get('length')} bytes written into guest memory",
        f"  MSI-X: {out.get('msix', {}).get('unhandled_vector_messages')} vector(s) reached "
        f"the guest CPU",
        f"  freeze: PE state {record.get('frozen_code')}, guest reads "
        f"{[hex(v) for v in fr.get('reads', [])]}, MTU after thaw {fr.get('mtu_after_thaw')}",
        f"  hot-plug: added {hp.get('added')} over QMP; removal: {record.get('unplug')}; "
        f"plugged again: {hp.get('readded', [])}",
    ]
    return "\n".join(lines)
