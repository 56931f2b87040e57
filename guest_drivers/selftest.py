"""Guest-side self-test of the platform path: `python3 -m guest_drivers.selftest`.

Runs INSIDE a guest (python3, stdlib) and exercises the PF served over vfio-user; the
host side is eeh_sriov.transport_demo.transport_host_side (make demo and the VM tests).

Steps, each recorded in /mnt/results/transport.json:
  regs     BAR0 read (MAC), write + read back (MTU)
  dma_tx   a frame with a pattern sent from guest memory (host checks the uplink)
  msix     MSI-X enabled and vector 0 aimed at an unused CPU vector, so its delivery
           shows in the kernel log ("No irq handler for vector")
  dma_rx   the host's echo written into guest memory by the device, pattern verified
  freeze   host freezes the adapter PE: reads all-ones, a write is dropped
Host and guest meet through files in /mnt/results (sync-*).
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time

from eeh_abi import nic
from eeh_abi.nic import DESC, DESC_SIZE, DescStatus
from guest_drivers.platform.dma import DmaPage
from guest_drivers.platform.sysfs import find_one, functions

RESULTS = "/mnt/results"
TEST_VECTOR = 0xD0  # high in the device range: Linux allocates from the bottom
UNHANDLED = f"No irq handler for 0.{TEST_VECTOR}"  # x86: "... for <cpu>.<vector>"
PATTERN = bytes(range(256))[16:16 + 100]
out: dict[str, object] = {}


def save() -> None:
    with open(f"{RESULTS}/transport.json", "w") as f:
        json.dump(out, f, indent=1)


def wait_file(name: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(f"{RESULTS}/{name}"):
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.05)


def touch(name: str) -> None:
    open(f"{RESULTS}/{name}", "w").close()


def kmsg_lines() -> list[str]:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    lines = []
    try:
        while True:
            try:
                lines.append(os.read(fd, 8192).decode(errors="replace"))
            except BlockingIOError:
                return lines
            except OSError:  # EPIPE: records overwritten while reading
                continue
    finally:
        os.close(fd)


def main() -> int:
    pf = find_one(nic.VENDOR_ID, nic.PF_DEVICE_ID)
    pf.enable()
    command = pf.config_read(nic.CFG_COMMAND, 2)
    pf.config_write(nic.CFG_COMMAND, 2, command | nic.Command.MEMORY | nic.Command.BUS_MASTER)
    bar = pf.bar(nic.BAR0)
    mac = (struct.pack("<I", bar.read32(nic.MAC_LO))
           + struct.pack("<I", bar.read32(nic.MAC_HI))[:2])
    bar.write32(nic.MTU, 9000)
    out["regs"] = {"mac": mac.hex(), "mtu": bar.read32(nic.MTU), "bar0_size": bar.size}
    save()

    # rings: one page each for TX ring, RX ring, TX buffer, RX buffer
    txr, rxr, txb, rxb = DmaPage(), DmaPage(), DmaPage(), DmaPage()
    bar.write32(nic.MAC_HI, bar.read32(nic.MAC_HI) | nic.MacHi.VALID)
    for base, page in ((nic.TX_BASE_LO, txr), (nic.RX_BASE_LO, rxr)):
        bar.write32(base + nic.RING_BASE_LO, page.phys & 0xFFFFFFFF)
        bar.write32(base + nic.RING_BASE_HI, page.phys >> 32)
        bar.write32(base + nic.RING_LEN, 8)
    rxr.write(0, DESC.pack(rxb.phys, 2048, 0, 0, 0))
    bar.write32(nic.RX_TAIL, 1)
    bar.write32(nic.CTRL, nic.Ctrl.TXEN | nic.Ctrl.RXEN)

    # MSI-X: enable in the capability, aim vector RX at TEST_VECTOR, unmask it
    ctrl = pf.config_read(nic.MSIX_MSGCTL, 2)
    pf.config_write(nic.MSIX_MSGCTL, 2, ctrl | nic.MsixMsgCtl.ENABLE)
    table = pf.bar(nic.MSIX_BAR)
    entry = nic.MSIX_TABLE_OFFSET + nic.MSIX_ENTRY_SIZE * nic.Vector.RX
    table.write32(entry + nic.MSIX_ENTRY_ADDR_LO, 0xFEE00000)
    table.write32(entry + nic.MSIX_ENTRY_ADDR_HI, 0)
    table.write32(entry + nic.MSIX_ENTRY_DATA, TEST_VECTOR)
    table.write32(entry + nic.MSIX_ENTRY_CTRL, 0)  # unmask
    bar.write32(nic.IMR, 0xFF)  # every cause
    before = sum(UNHANDLED in line for line in kmsg_lines())

    frame = b"\x02\xaa\xbb\xcc\xdd\xee" + mac + b"\x88\xb5" + PATTERN
    txb.write(0, frame)
    txr.write(0, DESC.pack(txb.phys, len(frame), 0, 0, 0))
    bar.write32(nic.TX_TAIL, 1)
    deadline = time.monotonic() + 30
    while not DESC.unpack(txr.read(0, DESC_SIZE))[3] & DescStatus.DD:
        if time.monotonic() > deadline:
            raise TimeoutError("TX descriptor never completed")
        time.sleep(0.01)
    out["dma_tx"] = {"status": DESC.unpack(txr.read(0, DESC_SIZE))[3]}
    save()

    deadline = time.monotonic() + 60
    while not (desc := DESC.unpack(rxr.read(0, DESC_SIZE)))[3] & DescStatus.DD:
        if time.monotonic() > deadline:
            raise TimeoutError("no RX frame")
        time.sleep(0.01)
    received = rxb.read(0, desc[1])
    out["dma_rx"] = {"status": desc[3], "length": desc[1], "payload": received[14:].hex()}
    time.sleep(0.5)
    after = sum(UNHANDLED in line for line in kmsg_lines())
    out["msix"] = {"unhandled_vector_messages": after - before,
                   "icr": bar.read32(nic.ICR)}
    save()

    # freeze: the host freezes the adapter PE between sync files
    touch("sync-freeze-request")
    wait_file("sync-frozen")
    frozen_reads = [bar.read32(nic.MTU), bar.read32(nic.MAC_LO), bar.read32(nic.STATUS)]
    bar.write32(nic.MTU, 1234)  # must be dropped
    touch("sync-frozen-checked")
    wait_file("sync-thawed")
    out["freeze"] = {"reads": frozen_reads, "mtu_after_thaw": bar.read32(nic.MTU)}
    save()

    # hot-plug: the host adds a VF over QMP, then removes it
    def vfs() -> list[str]:
        return [f.address for f in functions(nic.VENDOR_ID, nic.VF_DEVICE_ID)]

    present = vfs()
    touch("sync-plug-request")
    wait_file("sync-plugged")
    deadline = time.monotonic() + 30
    while len(vfs()) <= len(present) and time.monotonic() < deadline:
        time.sleep(0.05)
    added = sorted(set(vfs()) - set(present))
    touch("sync-plug-seen")
    wait_file("sync-unplugged")
    with open(f"{RESULTS}/sync-unplugged") as f:
        removal = f.read().strip()  # "removed", or why the host did not remove it
    deadline = time.monotonic() + 30
    while removal == "removed" and set(added) & set(vfs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    after_unplug = vfs()
    touch("sync-unplug-seen")
    wait_file("sync-replugged")
    with open(f"{RESULTS}/sync-replugged") as f:
        replug = f.read().strip()
    deadline = time.monotonic() + 30
    while replug == "added" and len(vfs()) <= len(after_unplug) and time.monotonic() < deadline:
        time.sleep(0.05)
    out["hotplug"] = {"before": present, "added": added, "removal": removal,
                      "after_unplug": after_unplug, "replug": replug,
                      "readded": sorted(set(vfs()) - set(after_unplug))}
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
