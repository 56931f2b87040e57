"""Capability declarations: PCI Express, MSI-X, AER and SR-IOV.

Each capability is a list of registers at offsets relative to its start, as the spec
numbers them; `device_model.pci.config` places them and chains the next pointers.
"""

from __future__ import annotations

from dataclasses import dataclass

from device_model.pci import ids
from device_model.pci.header import mem_bar32
from device_model.regs import Field, Register, const, hw, reg, ro, rw, rw1c, sc
from eeh_abi.nic import MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET


@dataclass(frozen=True)
class Capability:
    name: str
    cap_id: int
    size: int  # bytes, header included
    body: tuple[Register, ...]  # offsets relative to the capability, header excluded
    extended: bool = False
    version: int = 0  # extended capabilities only


def pcie_endpoint() -> Capability:
    """PCI Express capability (version 2), endpoint, FLR capable, 2.5 GT/s x1."""
    return Capability("pcie", ids.CAP_ID_PCIE, 0x3C, (
        reg("caps", 0x02, 2, ro("version", 0, 4, 2), ro("port_type", 4, 4, 0, "0: endpoint"),
            ro("slot", 8), ro("int_msg", 9, 5)),
        reg("devcap", 0x04, 4, ro("max_payload", 0, 3, 1, "256 bytes"), ro("phantom", 3, 2),
            ro("ext_tag", 5, 1, 1), ro("l0s_latency", 6, 3), ro("l1_latency", 9, 3),
            ro("role_based_err", 15, 1, 1), ro("flr", 28, 1, 1, "FLR capable")),
        reg("devctl", 0x08, 2, rw("cor_err_report", 0), rw("nonfatal_report", 1),
            rw("fatal_report", 2), rw("ur_report", 3), rw("relaxed_ordering", 4, 1, 1),
            rw("max_payload", 5, 3), rw("ext_tag", 8), rw("no_snoop", 11, 1, 1),
            rw("max_read_req", 12, 3, 2), sc("initiate_flr", 15, doc="Function Level Reset")),
        reg("devsta", 0x0A, 2, rw1c("cor_err", 0), rw1c("nonfatal_err", 1),
            rw1c("fatal_err", 2), rw1c("unsupported_req", 3), ro("aux_power", 4),
            hw("transactions_pending", 5)),
        reg("linkcap", 0x0C, 4, ro("max_speed", 0, 4, 1, "2.5 GT/s"),
            ro("max_width", 4, 6, 1, "x1"), ro("aspm", 10, 2), ro("port_number", 24, 8)),
        reg("linkctl", 0x10, 2, rw("aspm", 0, 2), ro("rcb", 3), rw("common_clock", 6),
            rw("extended_sync", 7)),
        reg("linksta", 0x12, 2, hw("speed", 0, 4, 1), hw("width", 4, 6, 1),
            ro("slot_clock", 12, 1, 1)),
        reg("devcap2", 0x24, 4, ro("cto_ranges", 0, 4), ro("cto_disable", 4, 1, 1)),
        reg("devctl2", 0x28, 2, rw("cto_value", 0, 4), rw("cto_disable", 4)),
        const("devsta2", 0x2A, 2, 0),
        reg("linkcap2", 0x2C, 4, ro("speeds", 1, 7, 1, "2.5 GT/s")),
        reg("linkctl2", 0x30, 2, rw("target_speed", 0, 4, 1)),
        const("linksta2", 0x32, 2, 0),
    ))


def msix(vectors: int, bir: int) -> Capability:
    """MSI-X capability: table at offset 0 and PBA at 0x800 of BAR `bir`."""
    return Capability("msix", ids.CAP_ID_MSIX, 12, (
        reg("msgctl", 0x02, 2, ro("table_size", 0, 11, vectors - 1, "N-1"),
            rw("function_mask", 14), rw("enable", 15)),
        reg("table", 0x04, 4, ro("bir", 0, 3, bir), ro("offset", 3, 29, MSIX_TABLE_OFFSET >> 3)),
        reg("pba", 0x08, 4, ro("bir", 0, 3, bir), ro("offset", 3, 29, MSIX_PBA_OFFSET >> 3)),
    ))


_UNCOR = (
    ("data_link_protocol", 4), ("poisoned_tlp", 12), ("flow_control_protocol", 13),
    ("completion_timeout", 14), ("completer_abort", 15), ("unexpected_completion", 16),
    ("receiver_overflow", 17), ("malformed_tlp", 18), ("ecrc", 19),
    ("unsupported_request", 20), ("acs_violation", 21), ("internal", 22),
)
_COR = (
    ("receiver", 0), ("bad_tlp", 6), ("bad_dllp", 7), ("replay_rollover", 8),
    ("replay_timeout", 12), ("advisory_non_fatal", 13), ("corrected_internal", 14),
    ("header_log_overflow", 15),
)


def _bits(table: tuple[tuple[str, int], ...], kind: str, defaults: int = 0) -> tuple[Field, ...]:
    if kind == "status":
        return tuple(rw1c(n, b, sticky=True) for n, b in table)
    return tuple(rw(n, b, 1, (defaults >> b) & 1, sticky=True) for n, b in table)


def aer() -> Capability:
    """Advanced Error Reporting (version 2), endpoint registers (0x00-0x2B)."""
    return Capability("aer", ids.EXT_CAP_ID_AER, 0x2C, (
        Register("uncor_status", 0x04, 4, _bits(_UNCOR, "status")),
        Register("uncor_mask", 0x08, 4, _bits(_UNCOR, "mask", ids.AER_UNCOR_MASK_DEFAULT)),
        Register("uncor_severity", 0x0C, 4,
                 _bits(_UNCOR, "severity", ids.AER_UNCOR_SEVERITY_DEFAULT), doc="1: fatal"),
        Register("cor_status", 0x10, 4, _bits(_COR, "status")),
        Register("cor_mask", 0x14, 4, _bits(_COR, "mask", ids.AER_COR_MASK_DEFAULT)),
        reg("capctl", 0x18, 4, hw("first_error", 0, 5, sticky=True), ro("ecrc_gen_cap", 5),
            ro("ecrc_gen_en", 6), ro("ecrc_chk_cap", 7), ro("ecrc_chk_en", 8),
            ro("multi_header_cap", 9), ro("multi_header_en", 10)),
        *(reg(f"header_log{n}", 0x1C + 4 * n, 4, hw("dw", 0, 32, sticky=True)) for n in range(4)),
    ), extended=True, version=2)


def sriov(*, total_vfs: int, first_vf_offset: int, vf_stride: int, vf_device_id: int,
          vf_bars: dict[int, int]) -> Capability:
    """SR-IOV capability (version 1) with the spec's register offsets."""
    return Capability("sriov", ids.EXT_CAP_ID_SRIOV, 0x40, (
        reg("caps", 0x04, 4, ro("vf_migration", 0), ro("ari_preserved", 1),
            ro("migration_irq", 21, 11)),
        reg("ctrl", 0x08, 2, rw("vf_enable", 0), ro("vf_migration_enable", 1),
            ro("vf_migration_irq_enable", 2), rw("vf_mse", 3, doc="VF memory space enable"),
            rw("ari_hierarchy", 4)),
        reg("status", 0x0A, 2, ro("vf_migration_status", 0)),
        const("initial_vfs", 0x0C, 2, total_vfs),
        const("total_vfs", 0x0E, 2, total_vfs),
        reg("num_vfs", 0x10, 2, rw("num_vfs", 0, 16), doc="writable only while VF Enable is 0"),
        const("func_dep_link", 0x12, 1, 0),
        const("first_vf_offset", 0x14, 2, first_vf_offset),
        const("vf_stride", 0x16, 2, vf_stride),
        const("vf_device_id", 0x1A, 2, vf_device_id),
        const("supported_page_sizes", 0x1C, 4, 0x1, doc="4 KiB only"),
        reg("system_page_size", 0x20, 4, rw("size_4k", 0, 1, 1)),
        *(mem_bar32(f"vf_bar{n}", 0x24 + 4 * n, vf_bars.get(n, 0)) for n in range(6)),
        const("migration_state", 0x3C, 4, 0),
    ), extended=True, version=1)
