"""One function's NIC: the behaviour of its BAR0 registers, its TX and RX rings, and the
accounting that makes every descriptor and frame end somewhere.

TX runs synchronously when the tail doorbell is written (and again whenever a gate that
held it opens: bus master, TXEN, DMA thaw, VF_TXEN, a client attaching). Each descriptor
handed to hardware ends as exactly one of: sent (given to the switch), completed with an
error status, or dropped (its DMA faulted, or a reset emptied the ring while it was still
pending). Each frame the switch delivers ends as received, missed (function frozen, in
reset, stopped, detached, RX disabled, or no free descriptor) or an RX error (too long for
the MTU, buffer too small, DMA fault). Of the missed, those dropped for want of a free
descriptor (a usable ring whose every slot the driver has not given back: an overrun,
the receiver not harvesting) are counted apart too, `rx_no_desc`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Protocol

from device_model.nic import registers as R
from device_model.nic.descriptor import (
    DD,
    DESC_SIZE,
    DESCRIPTOR,
    ETH_HEADER,
    LENGTH_OFFSET,
    STATUS_OFFSET,
    VLAN_TAG,
    DescError,
    error_status,
)
from device_model.nic.switch import Switch
from device_model.regs import RegisterFile

_STATUS_DD = DD.to_bytes(2, "little")
# plain ints for the per-frame paths (IntFlag arithmetic is slow)
_RX, _TX, _ERROR = int(R.Cause.RX), int(R.Cause.TX), int(R.Cause.ERROR)
_RST, _TXEN, _RXEN, _PROMISC = (int(b) for b in (R.Ctrl.RST, R.Ctrl.TXEN, R.Ctrl.RXEN,
                                                  R.Ctrl.PROMISC))
_LINK_UP, _ADAPTER_FAILED = int(R.Status.LINK_UP), int(R.Status.ADAPTER_FAILED)
_MAC_VALID, _VLAN_EN = int(R.MacHi.VALID), int(R.Vlan.EN)
_RX_WB = struct.Struct("<HHHH")  # length, flags, status, vlan
_ADDR_LIMIT = 1 << 64


@dataclass(slots=True)
class Ledger:
    """Cumulative accounting of one function (never reset; the model's own books)."""

    tx_posted: int = 0
    tx_sent: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    tx_dropped: int = 0
    rx_arrived: int = 0
    rx_delivered: int = 0
    rx_bytes: int = 0
    rx_missed: int = 0
    rx_errors: int = 0
    rx_no_desc: int = 0  # part of rx_missed: a usable ring with no free descriptor

    def copy(self) -> Ledger:
        return Ledger(*_ledger_values(self))


_ledger_values = attrgetter(*(f.name for f in fields(Ledger)))  # every field, in order


class NicHost(Protocol):
    """What a NIC port needs from its PCI function."""

    name: str

    def dma_ready(self) -> bool: ...
    def dma_read(self, addr: int, length: int) -> bytes | None: ...
    def dma_write(self, addr: int, data: bytes) -> bool: ...
    def raise_cause(self, causes: int) -> None: ...
    def signal(self, causes: int) -> None: ...
    def soft_reset(self) -> None: ...
    def port_enabled(self, tx: bool) -> bool: ...
    def present(self) -> bool: ...
    def admin_mac(self) -> bytes | None: ...
    def admin_vlan(self) -> int | None: ...
    def anti_spoof(self) -> bool: ...
    def adapter_failed(self) -> bool: ...
    def link_up(self) -> bool: ...


class NicPort:
    def __init__(self, host: NicHost, regs: RegisterFile, switch: Switch) -> None:
        self.host = host
        self.name = host.name
        self.regs = regs
        self.switch = switch
        self.ledger = Ledger()
        self._base = Ledger()
        self.tx_head = 0
        self.tx_pending = 0
        self.rx_head = 0
        self._tx_ring = self._rx_ring = (0, 0)  # (base, count), count 0: not usable
        self.default_mac: bytes | None = None  # loaded at every reset, like an EEPROM MAC
        regs.on_write("CTRL", self._ctrl_written)
        for name in ("MAC_LO", "MAC_HI", "VLAN"):
            regs.on_write(name, self._addr_written)
        regs.on_read("MAC_LO", lambda: self._mac_reg(0))
        regs.on_read("MAC_HI", lambda: self._mac_reg(1))
        regs.on_read("VLAN", self._vlan_reg)
        regs.on_read("STATUS", self._status_reg)
        regs.on_write("IMR", self._imr_written)
        for name in ("TX_BASE_LO", "TX_BASE_HI", "TX_LEN"):
            regs.on_write(name, self._tx_ring_written)
        for name in ("RX_BASE_LO", "RX_BASE_HI", "RX_LEN"):
            regs.on_write(name, self._rx_ring_written)
        regs.on_write("TX_TAIL", self._tx_doorbell)
        regs.on_write("RX_TAIL", self._rx_tail_written)
        regs.on_read("TX_HEAD", lambda: self.tx_head)
        regs.on_read("RX_HEAD", lambda: self.rx_head)
        for i, stat in enumerate(self._stat_getters()):
            regs.on_read(R.STAT_NAMES[i], stat)

    # ---- accounting
    @property
    def balanced(self) -> bool:
        g = self.ledger
        return (g.tx_posted == g.tx_sent + g.tx_errors + g.tx_dropped + self.tx_pending
                and g.rx_arrived == g.rx_delivered + g.rx_missed + g.rx_errors)

    def _stat_getters(self) -> list[Callable[[], int]]:
        g, b = self.ledger, self
        return [
            lambda: g.tx_sent - b._base.tx_sent, lambda: g.tx_bytes - b._base.tx_bytes,
            lambda: g.tx_errors - b._base.tx_errors, lambda: g.tx_dropped - b._base.tx_dropped,
            lambda: g.rx_delivered - b._base.rx_delivered, lambda: g.rx_bytes - b._base.rx_bytes,
            lambda: g.rx_missed - b._base.rx_missed, lambda: g.rx_errors - b._base.rx_errors,
        ]

    # ---- reset
    def reset(self) -> None:
        """Registers to reset values; pending TX counted dropped; counters restart at 0."""
        self.ledger.tx_dropped += self.tx_pending
        self.tx_pending = self.tx_head = self.rx_head = 0
        self.regs.reset(keep_sticky=False)
        if self.default_mac is not None:
            self.regs.set("MAC_LO", int.from_bytes(self.default_mac[0:4], "little"))
            self.regs.set("MAC_HI", int.from_bytes(self.default_mac[4:6], "little") | _MAC_VALID)
        self._base = self.ledger.copy()
        self._tx_ring, self._rx_ring = self._ring("TX"), self._ring("RX")
        self.switch.invalidate()

    # ---- register behaviour
    def _ctrl_written(self, old: int, new: int, written: int) -> None:
        if written & _RST:
            self.host.soft_reset()
            return
        if (old ^ new) & _PROMISC:
            self.switch.invalidate()
        if new & _TXEN and not old & _TXEN:
            self.tx_process()

    def _addr_written(self, old: int, new: int, written: int) -> None:
        self.switch.invalidate()

    def _mac_reg(self, half: int) -> int:
        admin = self.host.admin_mac()
        name = ("MAC_LO", "MAC_HI")[half]
        if admin is None:
            return self.regs.stored(name)
        if half == 0:
            return int.from_bytes(admin[0:4], "little")
        return int.from_bytes(admin[4:6], "little") | _MAC_VALID

    def _vlan_reg(self) -> int:
        admin = self.host.admin_vlan()
        return self.regs.stored("VLAN") if admin is None else admin | _VLAN_EN

    def _status_reg(self) -> int:
        v = self.regs.stored("STATUS") & ~(_LINK_UP | _ADAPTER_FAILED)
        if self.host.link_up():
            v |= _LINK_UP
        if self.host.adapter_failed():
            v |= _ADAPTER_FAILED
        return v

    def _imr_written(self, old: int, new: int, written: int) -> None:
        newly = new & ~old & self.regs.stored("ICR")
        if newly:
            self.host.signal(newly)  # causes pending before they were enabled

    def _ring(self, prefix: str) -> tuple[int, int]:
        """(base, count) of a ring; count 0 if the ring is not usable: LEN out of range, or
        a ring that would run past the end of the 64-bit address space (no descriptor
        address may wrap, and every fault address is a 64-bit value)."""
        count = self.regs.stored(f"{prefix}_LEN")
        if not 2 <= count <= R.RING_MAX:
            return 0, 0
        base = self.regs.stored(f"{prefix}_BASE_LO") | (self.regs.stored(f"{prefix}_BASE_HI") << 32)
        if base + count * DESC_SIZE > _ADDR_LIMIT:
            return 0, 0
        return base, count

    def _tx_ring_written(self, old: int, new: int, written: int) -> None:
        self.ledger.tx_dropped += self.tx_pending
        self.tx_pending = self.tx_head = 0
        self.regs.set("TX_TAIL", 0)
        self._tx_ring = self._ring("TX")

    def _rx_ring_written(self, old: int, new: int, written: int) -> None:
        self.rx_head = 0
        self.regs.set("RX_TAIL", 0)
        self._rx_ring = self._ring("RX")

    def _reject(self, name: str, old: int) -> None:
        self.regs.set(name, old)
        self.host.raise_cause(R.Cause.ERROR)

    def _tx_doorbell(self, old: int, new: int, written: int) -> None:
        count = self._tx_ring[1]
        if not count or new >= count:
            self._reject("TX_TAIL", old)
            return
        posted = (new - old) % count
        if self.tx_pending + posted > count - 1:
            self._reject("TX_TAIL", old)  # would overrun descriptors hardware still owns
            return
        self.ledger.tx_posted += posted
        self.tx_pending += posted
        self.tx_process()

    def _rx_tail_written(self, old: int, new: int, written: int) -> None:
        count = self._rx_ring[1]
        if not count or new >= count:
            self._reject("RX_TAIL", old)

    # ---- data path
    def max_frame(self) -> int:
        mtu = min(max(self.regs.stored("MTU"), R.MTU_MIN), R.MTU_MAX)
        return mtu + ETH_HEADER + VLAN_TAG

    def tx_ready(self) -> bool:
        return (bool(self.regs.stored("CTRL") & _TXEN) and self.host.port_enabled(True)
                and self.host.dma_ready())

    def tx_process(self) -> None:
        """Process pending TX descriptors as far as the gates allow."""
        if not self.tx_pending or not self.tx_ready():
            return
        base, count = self._tx_ring
        if not count:
            return
        host, ledger = self.host, self.ledger
        max_frame = self.max_frame()
        done = errors = 0
        while self.tx_pending and host.dma_ready():
            addr = base + self.tx_head * DESC_SIZE
            self.tx_head = (self.tx_head + 1) % count
            self.tx_pending -= 1
            raw = host.dma_read(addr, DESC_SIZE)
            if raw is None:
                ledger.tx_dropped += 1
                break
            buf, length = DESCRIPTOR.unpack(raw)[:2]
            code = None
            frame = b""
            if length < ETH_HEADER or length > max_frame:
                code = DescError.BAD_LENGTH
            else:
                got = host.dma_read(buf, length)
                if got is None:
                    ledger.tx_dropped += 1
                    break
                frame = got
                if host.adapter_failed():
                    code = DescError.ADAPTER_FAILED
                elif host.anti_spoof() and frame[6:12] != self.switch_mac():
                    code = DescError.SPOOFED
            if code is not None:
                if host.dma_write(addr + STATUS_OFFSET, error_status(code).to_bytes(2, "little")):
                    ledger.tx_errors += 1
                    errors += 1
                else:
                    ledger.tx_dropped += 1
                continue
            self.switch.from_port(self, frame)
            ledger.tx_sent += 1
            ledger.tx_bytes += length
            done += 1
            host.dma_write(addr + STATUS_OFFSET, _STATUS_DD)
        if done or errors:
            host.raise_cause(_TX | (_ERROR if errors else 0))

    def receive(self, frame: bytes, vlan: int) -> None:
        """The switch delivers one frame (untagged; `vlan` is its domain)."""
        ledger = self.ledger
        ledger.rx_arrived += 1
        host = self.host
        if not (self.regs.stored("CTRL") & _RXEN and host.port_enabled(False)
                and host.dma_ready()):
            ledger.rx_missed += 1
            return
        base, count = self._rx_ring
        if not count:
            ledger.rx_missed += 1
            return
        if self.rx_head == self.regs.stored("RX_TAIL"):  # the ring is full: an overrun
            ledger.rx_missed += 1
            ledger.rx_no_desc += 1
            return
        n = len(frame)
        if n > self.max_frame():
            ledger.rx_errors += 1
            host.raise_cause(_ERROR)
            return
        addr = base + self.rx_head * DESC_SIZE
        raw = host.dma_read(addr, DESC_SIZE)
        if raw is None:
            ledger.rx_errors += 1
            return
        buf, size = DESCRIPTOR.unpack(raw)[:2]
        if size < n:
            self.rx_head = (self.rx_head + 1) % count
            ledger.rx_errors += 1
            host.dma_write(addr + STATUS_OFFSET,
                           error_status(DescError.BUFFER_TOO_SMALL).to_bytes(2, "little"))
            host.raise_cause(_RX | _ERROR)
            return
        if not host.dma_write(buf, frame) or not host.dma_write(
                addr + LENGTH_OFFSET, _RX_WB.pack(n, 0, DD, vlan)):
            ledger.rx_errors += 1
            return
        self.rx_head = (self.rx_head + 1) % count
        ledger.rx_delivered += 1
        ledger.rx_bytes += n
        host.raise_cause(_RX)

    # ---- switch port
    def switch_present(self) -> bool:
        return self.host.present()

    def switch_mac(self) -> bytes | None:
        admin = self.host.admin_mac()
        if admin is not None:
            return admin
        hi = self.regs.stored("MAC_HI")
        if not hi & _MAC_VALID:
            return None
        lo = self.regs.stored("MAC_LO")
        return lo.to_bytes(4, "little") + (hi & R.MAC_HI_ADDR).to_bytes(2, "little")

    def switch_domain(self) -> int:
        admin = self.host.admin_vlan()
        if admin is not None:
            return admin
        v = self.regs.stored("VLAN")
        return v & R.VLAN_VID if v & _VLAN_EN else 0

    def switch_promisc(self) -> bool:
        return bool(self.regs.stored("CTRL") & _PROMISC)
