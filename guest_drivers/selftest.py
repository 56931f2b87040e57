"""Guest-side self-test of the platform path: `python3 -m guest_drivers.selftest`.

Runs INSIDE a guest (python3, stdlib) and exercises the PF served over vfio-user; the
host side is hypervisor_shim.scenario.transport_host_side (make demo and the VM tests).

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

from device_model.nic import registers as R
from device_model.nic.descriptor import DD, DESC_SIZE, DESCRIPTOR
from guest_drivers.platform.dma import DmaPage
from guest_drivers.platform.sysfs import find_one, functions

RESULTS = "/mnt/results"
VENDOR, PF_DEVICE, VF_DEVICE = 0x1B36, 0x10EE, 0x10EF
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
    pf = find_one(VENDOR, PF_DEVICE)
    pf.enable()
    pf.config_write(0x04, 2, pf.config_read(0x04, 2) | 0x6)  # memory + bus master
    bar = pf.bar(0)
    mac = struct.pack("<I", bar.read32(R.MAC_LO)) + struct.pack("<I", bar.read32(R.MAC_HI))[:2]
    bar.write32(R.MTU, 9000)
    out["regs"] = {"mac": mac.hex(), "mtu": bar.read32(R.MTU), "bar0_size": bar.size}
    save()

    # rings: one page each for TX ring, RX ring, TX buffer, RX buffer
    txr, rxr, txb, rxb = DmaPage(), DmaPage(), DmaPage(), DmaPage()
    bar.write32(R.MAC_HI, bar.read32(R.MAC_HI) | 1 << 31)  # MAC valid
    for base, page in ((R.TX_BASE_LO, txr), (R.RX_BASE_LO, rxr)):
        bar.write32(base, page.phys & 0xFFFFFFFF)
        bar.write32(base + 4, page.phys >> 32)
        bar.write32(base + 8, 8)
    rxr.write(0, DESCRIPTOR.pack(rxb.phys, 2048, 0, 0, 0))
    bar.write32(R.RX_TAIL, 1)
    bar.write32(R.CTRL, 0b110)  # txen, rxen

    # MSI-X: enable in the capability, aim vector 0 (RX) at TEST_VECTOR, unmask
    msix_cap = 0x80
    ctrl = pf.config_read(msix_cap + 2, 2)
    pf.config_write(msix_cap + 2, 2, ctrl | 0x8000)
    table = pf.bar(R.MSIX_BAR)
    table.write32(0x0, 0xFEE00000)
    table.write32(0x4, 0)
    table.write32(0x8, TEST_VECTOR)
    table.write32(0xC, 0)  # unmask
    bar.write32(R.IMR, 0xFF)
    before = sum(UNHANDLED in line for line in kmsg_lines())

    frame = b"\x02\xaa\xbb\xcc\xdd\xee" + mac + b"\x88\xb5" + PATTERN
    txb.write(0, frame)
    txr.write(0, DESCRIPTOR.pack(txb.phys, len(frame), 0, 0, 0))
    bar.write32(R.TX_TAIL, 1)
    deadline = time.monotonic() + 30
    while not DESCRIPTOR.unpack(txr.read(0, DESC_SIZE))[3] & DD:
        if time.monotonic() > deadline:
            raise TimeoutError("TX descriptor never completed")
        time.sleep(0.01)
    out["dma_tx"] = {"status": DESCRIPTOR.unpack(txr.read(0, DESC_SIZE))[3]}
    save()

    deadline = time.monotonic() + 60
    while not (desc := DESCRIPTOR.unpack(rxr.read(0, DESC_SIZE)))[3] & DD:
        if time.monotonic() > deadline:
            raise TimeoutError("no RX frame")
        time.sleep(0.01)
    received = rxb.read(0, desc[1])
    out["dma_rx"] = {"status": desc[3], "length": desc[1], "payload": received[14:].hex()}
    time.sleep(0.5)
    after = sum(UNHANDLED in line for line in kmsg_lines())
    out["msix"] = {"unhandled_vector_messages": after - before,
                   "icr": bar.read32(R.ICR)}
    save()

    # freeze: the host freezes the adapter PE between sync files
    touch("sync-freeze-request")
    wait_file("sync-frozen")
    frozen_reads = [bar.read32(R.MTU), bar.read32(R.MAC_LO), bar.read32(R.STATUS)]
    bar.write32(R.MTU, 1234)  # must be dropped
    touch("sync-frozen-checked")
    wait_file("sync-thawed")
    out["freeze"] = {"reads": frozen_reads, "mtu_after_thaw": bar.read32(R.MTU)}
    save()

    # hot-plug: the host adds a VF over QMP, then removes it
    def vfs() -> list[str]:
        return [f.address for f in functions(VENDOR, VF_DEVICE)]

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
