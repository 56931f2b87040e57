"""Render the register tables of docs/registers.md from the declarations.

    .venv/bin/python -m device_model.regdoc > /tmp/tables.md

docs/registers.md carries this output between its GENERATED markers; a unit test fails
when the declarations and the document disagree.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from device_model.adapter import AdapterConfig
from device_model.nic import registers as R
from device_model.pci.layouts import pf_config_layout
from device_model.regs import Layout, Register, markdown_table

_ARRAY = re.compile(r"^(VFCFG|PF_MBX|MSIX)(\d+)")


def _first_of_arrays(r: Register) -> bool:
    m = _ARRAY.match(r.name)
    return m is None or m.group(2) == "0"


def _section(title: str, layout: Layout, keep: Callable[[Register], bool]) -> str:
    regs = [r for r in layout.registers if keep(r)]
    return f"### {title}\n\n{markdown_table(layout, regs)}\n"


def register_tables(config: AdapterConfig | None = None) -> str:
    c = config if config is not None else AdapterConfig()
    cfg = pf_config_layout(vendor_id=c.vendor_id, device_id=c.device_id,
                           vf_device_id=c.vf_device_id, total_vfs=c.total_vfs,
                           first_vf_offset=c.first_vf_offset, vf_stride=c.vf_stride)
    vf, pf, msix = R.vf_layout(), R.pf_layout(), R.msix_layout()
    parts = [
        _section("Type 0 header (0x000-0x03F)", cfg, lambda r: "." not in r.name),
        _section("PCI Express capability (0x040, ID 0x10)", cfg,
                 lambda r: r.name.startswith("pcie.")),
        _section("MSI-X capability (0x080, ID 0x11)", cfg, lambda r: r.name.startswith("msix.")),
        _section("AER extended capability (0x100, ID 0x0001, version 2)", cfg,
                 lambda r: r.name.startswith("aer.")),
        _section("SR-IOV extended capability (0x140, ID 0x0010, version 1; PF only)", cfg,
                 lambda r: r.name.startswith("sriov.")),
        _section("BAR0, every function (PF and VFs)", vf, lambda r: r.name != "MBX"),
        _section("BAR0, VF only: mailbox", vf, lambda r: r.name == "MBX"),
        _section("BAR0, PF only: adapter registers (arrays shown for n = 0)", pf,
                 lambda r: r.offset >= R.ADAPTER_CTRL and _first_of_arrays(r)),
        _section("BAR3: MSI-X table (vector n at 16 * n) and PBA", msix, _first_of_arrays),
    ]
    return "\n".join(parts)


def main() -> None:
    print(register_tables(), end="")


if __name__ == "__main__":
    main()
