"""The type 0 configuration header, declared field by field."""

from __future__ import annotations

from collections.abc import Mapping

from device_model.errors import LayoutError
from device_model.regs import Register, const, hw, reg, ro, rw, rw1c


def mem_bar32(name: str, offset: int, size: int) -> Register:
    """A 32-bit non-prefetchable memory BAR of `size` bytes (0: not implemented).

    Address bits below log2(size) are hard-wired to 0, so writing all-ones and reading
    back yields ~(size - 1) | flags: standard BAR sizing.
    """
    if size == 0:
        return const(name, offset, 4, 0, doc="not implemented")
    if size & (size - 1) or size < 16:
        raise LayoutError(name, f"BAR size {size} is not a power of two >= 16")
    shift = size.bit_length() - 1
    return reg(
        name, offset, 4,
        ro("space", 0, 1, 0, "0: memory"),
        ro("type", 1, 2, 0, "0: 32-bit"),
        ro("prefetch", 3, 1, 0),
        rw("address", shift, 32 - shift),
        doc=f"{size} bytes",
    )


def type0_header(*, vendor_id: int, device_id: int, revision: int, class_code: int,
                 subsys_vendor: int, subsys_id: int, bars: Mapping[int, int],
                 cap_ptr: int) -> list[Register]:
    """Registers of a type 0 header; `bars` maps BAR number -> size in bytes."""
    regs = [
        const("vendor_id", 0x00, 2, vendor_id),
        const("device_id", 0x02, 2, device_id),
        reg("command", 0x04, 2,
            ro("io", 0), rw("memory", 1, doc="memory space decode"),
            rw("bus_master", 2, doc="DMA and MSI-X allowed"),
            rw("parity_response", 6), rw("serr", 8), rw("intx_disable", 10)),
        reg("status", 0x06, 2,
            hw("intx_status", 3), ro("cap_list", 4, 1, 1),
            rw1c("master_data_parity", 8), ro("devsel", 9, 2),
            rw1c("sig_target_abort", 11), rw1c("rcv_target_abort", 12),
            rw1c("rcv_master_abort", 13), rw1c("sig_system_error", 14),
            rw1c("detected_parity", 15)),
        const("revision", 0x08, 1, revision),
        const("prog_if", 0x09, 1, class_code & 0xFF),
        const("subclass", 0x0A, 1, (class_code >> 8) & 0xFF),
        const("base_class", 0x0B, 1, (class_code >> 16) & 0xFF),
        reg("cache_line", 0x0C, 1, rw("size", 0, 8)),
        const("latency_timer", 0x0D, 1, 0),
        const("header_type", 0x0E, 1, 0),
        const("bist", 0x0F, 1, 0),
    ]
    for n in range(6):
        regs.append(mem_bar32(f"bar{n}", 0x10 + 4 * n, bars.get(n, 0)))
    regs += [
        const("cardbus_cis", 0x28, 4, 0),
        const("subsys_vendor", 0x2C, 2, subsys_vendor),
        const("subsys_id", 0x2E, 2, subsys_id),
        const("rom", 0x30, 4, 0, doc="no expansion ROM"),
        const("cap_ptr", 0x34, 1, cap_ptr),
        reg("int_line", 0x3C, 1, rw("line", 0, 8)),
        const("int_pin", 0x3D, 1, 0, doc="no INTx: MSI-X only"),
        const("min_gnt", 0x3E, 1, 0),
        const("max_lat", 0x3F, 1, 0),
    ]
    return regs
