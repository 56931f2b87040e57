"""The PF<->VF mailbox of one VF: a 64-byte buffer and a doorbell/ack handshake.

VF side (VF BAR0): MBX (REQ/ACK action bits, PFSTS/PFACK sticky-until-cleared, RSTI/RSTD
mirrors of the PF's reset state) and the buffer window MBX_MEM. PF side (PF BAR0):
PF_MBX[n] (STS/ACK actions, VFREQ/VFACK) plus the MBX_REQ/MBX_ACK summary bitmaps and the
buffer window. Like real SR-IOV NICs, every VF's MBX shows "PF reset in progress" (RSTI)
from power-on or any PF/adapter reset until the PF driver writes ADAPTER_CTRL.pf_reset_done,
which sets "PF reset done" (RSTD) and interrupts each VF.
Ownership of the buffer is by protocol (write it, then REQ/STS; read it, then ACK): there
are no lock bits.
"""

from __future__ import annotations

from collections.abc import Callable

from device_model.events import EventBus, EventKind
from device_model.nic.registers import MBX_MEM_SIZE, Cause, Mbx, PfMbx
from device_model.regs import RegisterFile

# plain ints: IntFlag arithmetic on every VF reset costs more than the reset's own work
_RSTI, _RSTD = int(Mbx.RSTI), int(Mbx.RSTD)

Notify = Callable[[int], None]  # raise these interrupt causes


class Mailbox:
    def __init__(self, index: int, bus: EventBus) -> None:
        self.index = index
        self.mem = bytearray(MBX_MEM_SIZE)
        self.pf_resetting = True  # power-on counts as a PF reset
        self._bus = bus
        self._vf_regs: RegisterFile | None = None
        self._pf_regs: RegisterFile | None = None
        self._notify_vf: Notify = lambda cause: None
        self._notify_pf: Notify = lambda cause: None
        self._vf_name = f"vf{index}"

    def bind(self, vf_regs: RegisterFile, notify_vf: Notify,
             pf_regs: RegisterFile, notify_pf: Notify) -> None:
        self._vf_regs, self._pf_regs = vf_regs, pf_regs
        self._notify_vf, self._notify_pf = notify_vf, notify_pf
        vf_regs.on_write("MBX", self._vf_write)
        vf_regs.bind_window("MBX_MEM", self.read_mem, self.write_mem)
        pf_regs.on_write(f"PF_MBX{self.index}", self._pf_write)
        self.restore_vf_bits()

    @property
    def _vf(self) -> RegisterFile:
        assert self._vf_regs is not None
        return self._vf_regs

    @property
    def _pf(self) -> RegisterFile:
        assert self._pf_regs is not None
        return self._pf_regs

    # ---- buffer
    def read_mem(self, offset: int, size: int) -> bytes:
        return bytes(self.mem[offset : offset + size])

    def write_mem(self, offset: int, data: bytes) -> None:
        self.mem[offset : offset + len(data)] = data

    # ---- VF side
    def _vf_write(self, old: int, new: int, written: int) -> None:
        bit = 1 << self.index
        if written & Mbx.REQ:
            self._pf.set_bits(f"PF_MBX{self.index}", PfMbx.VFREQ)
            self._pf.set_bits("MBX_REQ", bit)
            self._bus.emit(EventKind.MAILBOX_TO_PF, function=self._vf_name, vf=self.index)
            self._notify_pf(Cause.MAILBOX)
        if written & Mbx.ACK:
            self._vf.clear_bits("MBX", Mbx.PFSTS)
            self._pf.set_bits(f"PF_MBX{self.index}", PfMbx.VFACK)
            self._pf.set_bits("MBX_ACK", bit)
            self._bus.emit(EventKind.MAILBOX_ACK, function=self._vf_name, vf=self.index,
                           by="vf")
            self._notify_pf(Cause.MAILBOX)

    # ---- PF side
    def _pf_write(self, old: int, new: int, written: int) -> None:
        if written & PfMbx.STS:
            self._vf.set_bits("MBX", Mbx.PFSTS)
            self._bus.emit(EventKind.MAILBOX_TO_VF, function="pf", vf=self.index)
            self._notify_vf(Cause.MAILBOX)
        if written & PfMbx.ACK:
            self._pf.clear_bits(f"PF_MBX{self.index}", PfMbx.VFREQ)
            self._pf.clear_bits("MBX_REQ", 1 << self.index)
            self._vf.set_bits("MBX", Mbx.PFACK)
            self._bus.emit(EventKind.MAILBOX_ACK, function="pf", vf=self.index, by="pf")
            self._notify_vf(Cause.MAILBOX)

    # ---- PF reset handshake
    def pf_reset_started(self) -> None:
        self.pf_resetting = True
        self.restore_vf_bits()

    def pf_reset_done(self) -> None:
        self.pf_resetting = False
        self.restore_vf_bits()
        self._notify_vf(Cause.MAILBOX)

    def restore_vf_bits(self) -> None:
        """Show the PF's reset state in the VF's MBX (also after the VF's own reset)."""
        self._vf.clear_bits("MBX", _RSTI | _RSTD)
        self._vf.set_bits("MBX", _RSTI if self.pf_resetting else _RSTD)

    def clear(self) -> None:
        """The adapter was reset: buffer and PF-side state back to power-on."""
        self.mem[:] = bytes(MBX_MEM_SIZE)
