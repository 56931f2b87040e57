"""A PCI function of the adapter as a transport sees it (`transport.PciFunction`).

This is the boundary where the platform's gates sit. Every region access, DMA and
interrupt asks, in this order: does the function exist (a VF needs VF Enable and an index
below NumVFs), is it out of reset, is its PE's gate open (the PE and its ancestors), does it
decode (Command.memory; for a VF also the PF's VF MSE) or may it master (Command.bus_master)?
A closed gate answers like a PHB: loads all-ones, stores dropped, DMA not done, interrupts
not sent. Nothing a guest sends ever raises out of here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from device_model.clock import Timer
from device_model.events import EventBus, EventKind
from device_model.inject import Injector, Op
from device_model.nic import registers as R
from device_model.nic.port import NicPort
from device_model.nic.switch import Switch
from device_model.pci import ids
from device_model.pci.config import ConfigSpace
from device_model.pe import Pe
from device_model.regs import Layout, RegisterFile
from device_model.reset import FunctionReset
from vfio_user.contract import (
    NUM_IRQS,
    IrqFlag,
    IrqIndex,
    IrqInfo,
    IrqSink,
    RegionFlag,
    RegionIndex,
    RegionInfo,
)
from vfio_user.errors import DmaError
from vfio_user.memory import GuestMemory

log = logging.getLogger(__name__)

# cause bits (0..255) -> the vectors they raise
_VECTOR_TABLE = tuple(
    tuple(int(v) for v, c in R.VECTOR_CAUSES.items() if bits & int(c)) for bits in range(256))
_RW = RegionFlag.READ | RegionFlag.WRITE
_RESET_DONE = int(R.Status.RESET_DONE)
_CONFIG = int(RegionIndex.CONFIG)  # plain ints on the access path: an enum compare costs
_BAR0 = int(RegionIndex.BAR0)  # more than the rest of a register read


class FunctionHost(Protocol):
    """What a function needs from the adapter it belongs to (the Adapter implements it)."""

    @property
    def events(self) -> EventBus: ...
    @property
    def injector(self) -> Injector[Function]: ...
    @property
    def switch(self) -> Switch: ...
    @property
    def failed(self) -> bool:
        """The adapter had a fatal error and was not reset since."""
        ...
    @property
    def link_up(self) -> bool: ...

    def after(self, delay: float, fn: Callable[[], None]) -> Timer | None:
        """Run `fn` in `delay` s (at once if 0), keeping its errors out of the loop."""
        ...

    def internal_error(self, what: str) -> None:
        """A bug in the model met a guest access: record it and carry on."""
        ...

    def dma_fault(self, fn: Function, err: DmaError, *, write: bool) -> None:
        """`fn`'s DMA hit memory no map allows: record the error, freeze the PE."""
        ...


class Function:
    """Common behaviour of the PF and the VFs."""

    def __init__(self, host: FunctionHost, name: str, pe: Pe, config_layout: Layout,
                 bar0_layout: Layout, *, flr_time: float) -> None:
        self._host = host
        self._flr_time = flr_time
        self.name = name
        self.pe = pe
        self.config = ConfigSpace(config_layout)
        self.bar0 = RegisterFile(bar0_layout)
        self.msix = RegisterFile(R.msix_layout())
        self.nic = NicPort(self, self.bar0, host.switch)
        self.memory: GuestMemory | None = None
        self.sink: IrqSink | None = None
        self.in_reset = False
        self.resets = 0  # RESET_COUNT: not cleared by the resets it counts
        self.bar0.on_read("RESET_COUNT", lambda: self.resets & 0xFFFFFFFF)
        self.pending_vectors = 0
        self.irq_delivered = 0
        self.irq_suppressed = 0
        self.bad_accesses = 0
        self._present = True
        self._decode = False
        self._bme = False
        sizes = {RegionIndex.BAR0: bar0_layout.size, R.MSIX_BAR: R.MSIX_BAR_SIZE,
                 RegionIndex.CONFIG: ids.CONFIG_SIZE}
        self._regions = tuple(
            RegionInfo(int(i), sizes.get(i, 0), _RW if i in sizes else RegionFlag(0))
            for i in RegionIndex)
        self._irqs = tuple(
            IrqInfo(i, R.MSIX_VECTORS, IrqFlag.EVENTFD | IrqFlag.NORESIZE) if i == IrqIndex.MSIX
            else IrqInfo(i, 0, IrqFlag(0)) for i in range(NUM_IRQS))
        self.config.on_write("command", self._command_written)
        self.config.on_write("pcie.devctl", self._devctl_written)
        self.msix.on_read("PBA", lambda: self.pending_vectors)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    # ---- PciFunction
    def regions(self) -> Sequence[RegionInfo]:
        return self._regions

    def irqs(self) -> Sequence[IrqInfo]:
        return self._irqs

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        try:
            if self._in_bounds(index, offset, size):
                data = self._read(index, offset, size)
                if data is not None:
                    return data
        except Exception:  # never let a guest's access kill the server
            self._host.internal_error(f"{self.name} read {index}:{offset:#x}/{size}")
        return b"\xff" * max(size, 0)

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        try:
            if self._in_bounds(index, offset, len(data)):
                self._write(index, offset, bytes(data))
        except Exception:
            self._host.internal_error(f"{self.name} write {index}:{offset:#x}/{len(data)}")

    def device_reset(self) -> None:
        """VFIO_DEVICE_RESET: reset the function now (no FLR delay)."""
        try:
            self.in_reset = False
            self.reset_state(FunctionReset.DEVICE)
            self._reset_finished(FunctionReset.DEVICE)
        except Exception:
            self._host.internal_error(f"{self.name} device reset")

    def attach(self, memory: GuestMemory, irqs: IrqSink) -> None:
        self.memory = memory
        self.sink = irqs
        self._replay_vectors()
        self.nic.tx_process()

    def detach(self) -> None:
        self.memory = None
        self.sink = None

    # ---- access paths
    def _in_bounds(self, index: int, offset: int, size: int) -> bool:
        if 0 <= index < len(self._regions):
            region = self._regions[index].size
            if size > 0 and offset >= 0 and offset + size <= region:
                return True
        self.bad_accesses += 1
        return False

    def mmio_ok(self) -> bool:
        return self._decode and not self.in_reset and self.pe.mmio_open()

    def config_ok(self) -> bool:
        return self._present and not self.in_reset and self.pe.mmio_open()

    def dma_ready(self) -> bool:
        return (self._bme and self.memory is not None and self._present and not self.in_reset
                and self.pe.dma_open())

    def _read(self, index: int, offset: int, size: int) -> bytes | None:
        inj = self._host.injector
        if index == _CONFIG:
            if not self.config_ok() or (inj.armed and inj.check(self, Op.CONFIG_LOAD, offset)):
                return None
            return self.config.read_bytes(offset, size)
        regs = self.bar0 if index == _BAR0 else self.msix
        if not self.mmio_ok() or (inj.armed and inj.check(
                self, Op.MMIO_LOAD, self.config.bar_base(index) + offset)):
            return None
        return regs.read_bytes(offset, size)

    def _write(self, index: int, offset: int, data: bytes) -> None:
        inj = self._host.injector
        if index == _CONFIG:
            if self.config_ok() and not (inj.armed and inj.check(self, Op.CONFIG_STORE, offset)):
                self.config.write_bytes(offset, data)
            return
        regs = self.bar0 if index == _BAR0 else self.msix
        if self.mmio_ok() and not (inj.armed and inj.check(
                self, Op.MMIO_STORE, self.config.bar_base(index) + offset)):
            if len(data) in (1, 2, 4, 8):
                regs.write(offset, len(data), int.from_bytes(data, "little"))
            else:
                regs.write_bytes(offset, data)

    # ---- DMA (the NIC's only way to guest memory)
    def dma_read(self, addr: int, length: int) -> bytes | None:
        memory = self.memory
        if memory is None or not self.dma_ready():
            return None
        inj = self._host.injector
        if inj.armed and inj.check(self, Op.DMA_READ, addr):
            return None
        try:
            return memory.read(addr, length)
        except DmaError as e:
            self._host.dma_fault(self, e, write=False)
            return None

    def dma_write(self, addr: int, data: bytes) -> bool:
        memory = self.memory
        if memory is None or not self.dma_ready():
            return False
        inj = self._host.injector
        if inj.armed and inj.check(self, Op.DMA_WRITE, addr):
            return False
        try:
            memory.write(addr, data)
        except DmaError as e:
            self._host.dma_fault(self, e, write=True)
            return False
        return True

    # ---- interrupts
    def raise_cause(self, causes: int) -> None:
        """Latch causes in ICR; signal the vectors of those that IMR enables."""
        causes = int(causes)
        self.bar0.set_bits("ICR", causes)
        enabled = causes & self.bar0.stored("IMR")
        if enabled:
            self.signal(enabled)

    def signal(self, causes: int) -> None:
        for vec in _VECTOR_TABLE[int(causes) & 0xFF]:
            self._trigger(vec)

    def _trigger(self, vec: int) -> None:
        if not (self._present and not self.in_reset and self.pe.dma_open()):
            self.irq_suppressed += 1  # an MSI-X write a frozen PE never makes
            return
        sink = self.sink
        if sink is None or not self._bme:
            self.pending_vectors |= 1 << vec  # latched until a sink/bus master is back
            return
        self.irq_delivered += 1
        try:
            sink.trigger(IrqIndex.MSIX, vec)
        except Exception:
            self._host.internal_error(f"{self.name} interrupt sink failed on vector {vec}")

    def _replay_vectors(self) -> None:
        pending, self.pending_vectors = self.pending_vectors, 0
        for vec in range(R.MSIX_VECTORS):
            if pending & (1 << vec):
                self._trigger(vec)

    # ---- config behaviour
    def _command_written(self, old: int, new: int, written: int) -> None:
        self.refresh()
        if new & ids.CMD_BUS_MASTER and not old & ids.CMD_BUS_MASTER:
            self._replay_vectors()
            self.nic.tx_process()

    def _devctl_written(self, old: int, new: int, written: int) -> None:
        if written & ids.DEVCTL_BCR_FLR:
            self.flr()

    @property
    def exists(self) -> bool:
        """The function answers at all (always for the PF; VF Enable and NumVFs for a VF)."""
        return self._present

    def refresh(self) -> None:
        """Recompute the cached gate inputs (presence, decode, bus master)."""
        self._present = self.present()
        self._decode = self._present and self.config.memory_enabled and self._decode_extra()
        self._bme = self.config.bus_master

    # ---- resets
    def flr(self) -> None:
        """Function Level Reset: state reset now, function back after the FLR time."""
        if self.in_reset:
            return
        self._host.events.emit(EventKind.FLR_STARTED, pe=self.pe.address, function=self.name)
        self.enter_reset(FunctionReset.FLR)
        self._host.after(self._flr_time, self._flr_done)

    def _flr_done(self) -> None:
        self.leave_reset(FunctionReset.FLR)
        self._host.events.emit(EventKind.FLR_DONE, pe=self.pe.address, function=self.name)

    def enter_reset(self, kind: FunctionReset, *, announce: bool = True) -> None:
        self.in_reset = True
        self.reset_state(kind, announce=announce)

    def leave_reset(self, kind: FunctionReset) -> None:
        self.in_reset = False
        self.refresh()
        self._reset_finished(kind)

    def soft_reset(self) -> None:
        """CTRL.RST: the NIC state of this function (not its config space)."""
        self.reset_state(FunctionReset.SOFT)
        self._reset_finished(FunctionReset.SOFT)

    def reset_state(self, kind: FunctionReset, *, announce: bool = True) -> None:
        """Put registers back to reset values; pending TX descriptors are counted dropped.
        A `function-reset` event says so unless `announce` is False (the reset of a PE,
        whose `pe-reset-asserted` names the function and how it was reset)."""
        if kind is not FunctionReset.SOFT:
            self.resets += 1
            keep = kind not in (FunctionReset.FUNDAMENTAL, FunctionReset.VF_DISABLE)
            self.config.reset(keep_sticky=keep)
            self.msix.reset(keep_sticky=False)
            self.pending_vectors = 0
        self.nic.reset()
        self._after_reset(kind)
        self.refresh()
        if announce:
            self._host.events.emit(EventKind.FUNCTION_RESET, pe=self.pe.address,
                                   function=self.name, reset=kind.value)

    def _reset_finished(self, kind: FunctionReset) -> None:
        self.bar0.set_bits("STATUS", _RESET_DONE)
        self.raise_cause(R.Cause.RESET_DONE)

    # ---- what subclasses decide
    def present(self) -> bool:
        return True

    def _decode_extra(self) -> bool:
        return True

    def _after_reset(self, kind: FunctionReset) -> None:
        pass

    def port_enabled(self, tx: bool) -> bool:
        return True

    def admin_mac(self) -> bytes | None:
        return None

    def admin_vlan(self) -> int | None:
        return None

    def anti_spoof(self) -> bool:
        return False

    def adapter_failed(self) -> bool:
        return self._host.failed

    def link_up(self) -> bool:
        return self._host.link_up
