"""Behaviour of the PF's adapter registers (BAR0 0x1000-0x3FFF): VF enables and VF
configuration, switch configuration, adapter status and error registers, and the PF side of
every VF mailbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from device_model.nic import registers as R
from device_model.nic.switch import Switch
from device_model.pe import PeTree
from device_model.pf import PfFunction
from device_model.vf import VfFunction

_READY = int(R.AdapterStatus.READY)
_RESETTING = int(R.AdapterStatus.RESET_IN_PROGRESS)
_FATAL = int(R.AdapterStatus.FATAL)
_LINK_UP = int(R.UplinkStatus.LINK_UP)
_NUM_VFS_SHIFT = (R.ADAPTER_STATUS_NUM_VFS & -R.ADAPTER_STATUS_NUM_VFS).bit_length() - 1


class AdapterRegsHost(Protocol):
    """The adapter state these registers show and control (the Adapter implements it)."""

    @property
    def pf(self) -> PfFunction: ...
    @property
    def vfs(self) -> Sequence[VfFunction]: ...
    @property
    def pes(self) -> PeTree: ...
    @property
    def switch(self) -> Switch: ...
    @property
    def pf_resetting(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    @property
    def link_up(self) -> bool: ...

    def enabled_vfs(self) -> int: ...
    def pf_reset_done(self) -> None: ...
    def apply_switch_ctrl(self) -> None: ...


def bind_pf_registers(adapter: AdapterRegsHost) -> None:
    pf = adapter.pf
    regs = pf.bar0
    switch = adapter.switch

    def ctrl_written(old: int, new: int, written: int) -> None:
        if written & R.AdapterCtrl.PF_RESET_DONE:
            adapter.pf_reset_done()

    def status() -> int:
        value = regs.stored("ADAPTER_STATUS") & R.ADAPTER_STATUS_TOTAL_VFS
        if not adapter.pes.adapter.busy and not pf.in_reset:
            value |= _READY
        if adapter.pf_resetting:
            value |= _RESETTING
        if adapter.failed:
            value |= _FATAL
        return value | (adapter.enabled_vfs() << _NUM_VFS_SHIFT)

    def txen_written(old: int, new: int, written: int) -> None:
        for vf in adapter.vfs:
            if (new & ~old) & (1 << vf.index):
                vf.nic.tx_process()

    def switch_written(old: int, new: int, written: int) -> None:
        adapter.apply_switch_ctrl()

    def invalidate(old: int, new: int, written: int) -> None:
        switch.invalidate()

    regs.on_write("ADAPTER_CTRL", ctrl_written)
    regs.on_read("ADAPTER_STATUS", status)
    regs.on_write("VF_TXEN", txen_written)
    regs.on_write("VF_RXEN", invalidate)
    regs.on_write("SWITCH_CTRL", switch_written)
    regs.on_read("UPLINK_STATUS",
                 lambda: _LINK_UP if adapter.link_up and switch.uplink is not None else 0)
    regs.on_read("SW_UPLINK_TX", lambda: switch.uplink_tx)
    regs.on_read("SW_UPLINK_RX", lambda: switch.uplink_rx)
    regs.on_read("SW_DROPPED", lambda: switch.dropped)
    for n in range(R.MAX_VFS):
        for name in R.vfcfg_names(n):
            regs.on_write(name, invalidate)

    def mem_read(offset: int, size: int) -> bytes:
        out = bytearray()
        for pos in range(offset, offset + size):
            n, off = divmod(pos, R.MBX_MEM_SIZE)
            out += adapter.vfs[n].mailbox.mem[off : off + 1] if n < len(adapter.vfs) else b"\0"
        return bytes(out)

    def mem_write(offset: int, data: bytes) -> None:
        for k, b in enumerate(data):
            n, off = divmod(offset + k, R.MBX_MEM_SIZE)
            if n < len(adapter.vfs):
                adapter.vfs[n].mailbox.mem[off] = b

    regs.bind_window("PF_MBX_MEM", mem_read, mem_write)
