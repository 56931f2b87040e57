"""Behaviour of the PF's adapter registers (BAR0 0x1000-0x3FFF): VF enables and VF
configuration, switch configuration, adapter status and error registers, and the PF side of
every VF mailbox.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from device_model.nic import registers as R

if TYPE_CHECKING:
    from device_model.adapter import Adapter


def bind_pf_registers(adapter: Adapter) -> None:
    pf = adapter.pf
    regs = pf.bar0
    switch = adapter.switch

    def ctrl_written(old: int, new: int, written: int) -> None:
        if written & 1:
            adapter.pf_reset_done()

    def status() -> int:
        value = regs.stored("ADAPTER_STATUS") & 0xFF000000  # total_vfs
        if not adapter.pes.adapter.busy and not pf.in_reset:
            value |= 1
        if adapter.pf_resetting:
            value |= 2
        if adapter.failed:
            value |= 4
        return value | (adapter.enabled_vfs() << 16)

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
    regs.on_read("UPLINK_STATUS", lambda: int(adapter.link_up and switch.uplink is not None))
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
