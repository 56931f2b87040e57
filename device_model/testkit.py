"""A minimal in-process driver for the model: guest RAM, an interrupt recorder, and a
driver that programs one function only through `vfio_user.PciFunction` calls.

Tests and benchmarks use it; it is also a worked example of the register interface
documented in docs/registers.md. Every offset, size and bit it uses is looked up in the
model's own declarations (config-space layout, BAR0 layouts, descriptor record, PCI and
SR-IOV constants), never repeated here.
"""

from __future__ import annotations

import functools
import operator
import struct

from device_model import AdapterConfig, pf
from device_model.nic import registers as R
from device_model.nic.descriptor import DD, DESC_SIZE, DESCRIPTOR, STATUS_OFFSET
from device_model.pci import ids
from device_model.pci.layouts import pf_config_layout
from vfio_user import DmaMap, GuestMemory, PciFunction, RegionIndex

CONFIG = RegionIndex.CONFIG
BAR0 = RegionIndex.BAR0

_DEFAULTS = AdapterConfig()
# The PF's config space as the model declares it. A VF's header, PCI Express and AER
# registers sit at the same offsets (device_model.pci.layouts), so one layout serves both.
CONFIG_LAYOUT = pf_config_layout(
    vendor_id=_DEFAULTS.vendor_id, device_id=_DEFAULTS.device_id,
    vf_device_id=_DEFAULTS.vf_device_id, total_vfs=_DEFAULTS.total_vfs,
    first_vf_offset=_DEFAULTS.first_vf_offset, vf_stride=_DEFAULTS.vf_stride)
COMMAND = CONFIG_LAYOUT["command"]
DEVCTL = CONFIG_LAYOUT["pcie.devctl"]
AER_UNCOR_STATUS = CONFIG_LAYOUT["aer.uncor_status"]
SRIOV_CTRL = CONFIG_LAYOUT["sriov.ctrl"]
SRIOV_NUM_VFS = CONFIG_LAYOUT["sriov.num_vfs"]

PF_BAR0 = R.pf_layout()
CTRL = PF_BAR0["CTRL"]  # the same register on a VF (device_model.nic.registers._common)
MAC_HI = PF_BAR0["MAC_HI"]
ALL_CAUSES = int(functools.reduce(operator.or_, R.Cause))
_RINGS = {"TX": (R.TX_BASE_LO, R.TX_BASE_HI, R.TX_LEN),
          "RX": (R.RX_BASE_LO, R.RX_BASE_HI, R.RX_LEN)}
_STATUS_CLEAR = bytes(next(f.size for f in DESCRIPTOR.fields if f.name == "status"))


class RamGuest(GuestMemory):
    """Guest memory: one bytearray mapped at `base`, with a bump allocator.

    With `guard` > 0 the bytearray has that many canary bytes (0xA5) before and after the
    mapped part, which no DMA may ever touch (`guards_intact`).
    """

    def __init__(self, size: int = 1 << 20, base: int = 0x1000_0000, guard: int = 0) -> None:
        super().__init__()
        self.ram = bytearray(b"\xa5" * guard) + bytearray(size) + bytearray(b"\xa5" * guard)
        self.size = size
        self.guard = guard
        self.base = base
        self._next = base
        self.map(DmaMap(base, size, self.ram, offset=guard))

    def guards_intact(self) -> bool:
        g = self.guard
        return self.ram[:g] == b"\xa5" * g and self.ram[g + self.size :] == b"\xa5" * g

    def alloc(self, size: int, align: int = 64) -> int:
        addr = (self._next + align - 1) // align * align
        if addr + size > self.base + self.size:
            raise MemoryError("guest RAM exhausted")
        self._next = addr + size
        return addr

    def peek(self, addr: int, size: int) -> bytes:
        off = addr - self.base + self.guard
        return bytes(self.ram[off : off + size])

    def poke(self, addr: int, data: bytes) -> None:
        off = addr - self.base + self.guard
        self.ram[off : off + len(data)] = data


class IrqRecorder:
    """An IrqSink that records (index, vector) pairs."""

    def __init__(self) -> None:
        self.fired: list[tuple[int, int]] = []

    def trigger(self, index: int, vector: int) -> None:
        self.fired.append((index, vector))


class MiniDriver:
    """Drives one function through region reads and writes, like a guest driver."""

    def __init__(self, fn: PciFunction, guest: RamGuest, irqs: IrqRecorder | None = None,
                 attach: bool = True) -> None:
        self.fn = fn
        self.guest = guest
        self.irqs = irqs if irqs is not None else IrqRecorder()
        self.tx_ring = self.rx_ring = 0
        self.tx_count = self.rx_count = 0
        self.tx_tail = self.rx_tail = 0
        self.rx_next = 0
        self.buf_size = 0
        self._tx_bufs: list[int] = []
        self._rx_bufs: list[int] = []
        if attach:
            fn.attach(guest, self.irqs)

    # ---- raw access
    def cfg_read(self, offset: int, size: int = 4) -> int:
        return int.from_bytes(self.fn.region_read(CONFIG, offset, size), "little")

    def cfg_write(self, offset: int, value: int, size: int = 4) -> None:
        self.fn.region_write(CONFIG, offset, value.to_bytes(size, "little"))

    def read(self, offset: int, size: int = 4) -> int:
        return int.from_bytes(self.fn.region_read(BAR0, offset, size), "little")

    def write(self, offset: int, value: int, size: int = 4) -> None:
        self.fn.region_write(BAR0, offset, value.to_bytes(size, "little"))

    # ---- bring-up
    def enable(self) -> None:
        """Command: memory decode and bus master on; all interrupt causes enabled."""
        self.cfg_write(COMMAND.offset, ids.CMD_MEMORY | ids.CMD_BUS_MASTER, COMMAND.size)
        self.write(R.IMR, ALL_CAUSES)

    def flr(self) -> None:
        devctl = self.cfg_read(DEVCTL.offset, DEVCTL.size)
        self.cfg_write(DEVCTL.offset, devctl | ids.DEVCTL_BCR_FLR, DEVCTL.size)

    def setup_rings(self, tx_count: int = 64, rx_count: int = 64, buf_size: int = 2048) -> None:
        if (tx_count, rx_count, buf_size) != (self.tx_count, self.rx_count, self.buf_size):
            self.tx_ring = self.guest.alloc(tx_count * DESC_SIZE)
            self.rx_ring = self.guest.alloc(rx_count * DESC_SIZE)
            self._tx_bufs = [self.guest.alloc(buf_size) for _ in range(tx_count)]
            self._rx_bufs = [self.guest.alloc(buf_size) for _ in range(rx_count)]
        self.tx_count, self.rx_count, self.buf_size = tx_count, rx_count, buf_size
        for i in range(rx_count):  # forget completions from an earlier life of the ring
            self.guest.poke(self.rx_ring + i * DESC_SIZE + STATUS_OFFSET, _STATUS_CLEAR)
        for prefix, base, count in (("TX", self.tx_ring, tx_count), ("RX", self.rx_ring, rx_count)):
            base_lo, base_hi, length = _RINGS[prefix]
            self.write(base_lo, base & 0xFFFFFFFF)
            self.write(base_hi, base >> 32)
            self.write(length, count)
        self.tx_tail = self.rx_tail = self.rx_next = 0
        self.fill_rx()
        self.write(R.CTRL, CTRL.field("txen").mask | CTRL.field("rxen").mask)

    def fill_rx(self) -> None:
        """Give hardware every free RX descriptor (all but one, so head != tail)."""
        count = self.rx_count
        while (self.rx_tail + 1) % count != self.rx_next:
            i = self.rx_tail
            self.guest.poke(self.rx_ring + i * DESC_SIZE,
                            DESCRIPTOR.pack(self._rx_bufs[i], self.buf_size, 0, 0, 0))
            self.rx_tail = (i + 1) % count
        self.write(R.RX_TAIL, self.rx_tail)

    # ---- data path
    def post_tx(self, frames: list[bytes], *, addr: int | None = None) -> list[int]:
        """Write descriptors for `frames` and ring the doorbell once; returns their slots."""
        slots = []
        for frame in frames:
            i = self.tx_tail
            buf = self._tx_bufs[i] if addr is None else addr
            if addr is None:
                self.guest.poke(buf, frame)
            self.guest.poke(self.tx_ring + i * DESC_SIZE,
                            DESCRIPTOR.pack(buf, len(frame), 0, 0, 0))
            slots.append(i)
            self.tx_tail = (i + 1) % self.tx_count
        self.write(R.TX_TAIL, self.tx_tail)
        return slots

    def prebuild_tx(self, frame: bytes) -> None:
        """Write `frame` and a descriptor for it into every TX slot, without the doorbell
        (a benchmark then only moves the tail: hardware reuses descriptors as written)."""
        for i in range(self.tx_count):
            self.guest.poke(self._tx_bufs[i], frame)
            self.guest.poke(self.tx_ring + i * DESC_SIZE,
                            DESCRIPTOR.pack(self._tx_bufs[i], len(frame), 0, 0, 0))

    def prebuild_rx(self) -> None:
        """Write a descriptor for every RX slot (see prebuild_tx); the tail stays put."""
        for i in range(self.rx_count):
            self.guest.poke(self.rx_ring + i * DESC_SIZE,
                            DESCRIPTOR.pack(self._rx_bufs[i], self.buf_size, 0, 0, 0))

    def tx_status(self, slot: int) -> int:
        raw = self.guest.peek(self.tx_ring + slot * DESC_SIZE, DESC_SIZE)
        return DESCRIPTOR.unpack(raw)[3]

    def received(self) -> list[tuple[bytes, int]]:
        """Frames hardware completed since the last call (and their VLAN); re-arms buffers."""
        out = []
        while True:
            raw = self.guest.peek(self.rx_ring + self.rx_next * DESC_SIZE, DESC_SIZE)
            buf, length, _flags, status, vlan = DESCRIPTOR.unpack(raw)
            if not status & DD:
                break
            out.append((self.guest.peek(buf, length) if status == DD else b"", vlan))
            self.guest.poke(self.rx_ring + self.rx_next * DESC_SIZE + STATUS_OFFSET,
                            _STATUS_CLEAR)
            self.rx_next = (self.rx_next + 1) % self.rx_count
        if out:
            self.fill_rx()
        return out

    def mac(self) -> bytes:
        return (struct.pack("<I", self.read(R.MAC_LO)) + struct.pack("<I", self.read(R.MAC_HI)))[:6]

    def set_mac(self, mac: bytes) -> None:
        self.write(R.MAC_LO, int.from_bytes(mac[0:4], "little"))
        self.write(R.MAC_HI, int.from_bytes(mac[4:6], "little") | MAC_HI.field("valid").mask)

    def aer_uncor_status(self) -> int:
        return self.cfg_read(AER_UNCOR_STATUS.offset, AER_UNCOR_STATUS.size)


class PfDriver(MiniDriver):
    """The adapter driver's share: SR-IOV enable, VF ports, mailbox reset handshake."""

    def enable_vfs(self, n: int) -> None:
        self.cfg_write(SRIOV_NUM_VFS.offset, n, SRIOV_NUM_VFS.size)
        self.cfg_write(SRIOV_CTRL.offset, pf.VF_ENABLE | pf.VF_MSE, SRIOV_CTRL.size)
        bits = (1 << n) - 1
        self.write(R.VF_TXEN, bits, PF_BAR0["VF_TXEN"].size)
        self.write(R.VF_RXEN, bits, PF_BAR0["VF_RXEN"].size)

    def reset_done(self) -> None:
        self.write(R.ADAPTER_CTRL, PF_BAR0["ADAPTER_CTRL"].field("pf_reset_done").mask)


def frame(dst: bytes, src: bytes, payload: bytes = b"", size: int = 64) -> bytes:
    """An Ethernet frame of at least `size` bytes (ethertype 0x88b5, local experimental)."""
    body = dst + src + b"\x88\xb5" + payload
    return body + bytes(max(0, size - len(body)))
