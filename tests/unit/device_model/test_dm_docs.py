"""docs/registers.md matches the register declarations."""

from __future__ import annotations

import re
from pathlib import Path

from device_model.nic import registers as R
from device_model.pci.layouts import pf_config_layout, vf_config_layout
from device_model.regdoc import register_tables

DOC = Path(__file__).resolve().parents[3] / "docs" / "registers.md"


def generated_part() -> str:
    text = DOC.read_text()
    m = re.search(r"<!-- BEGIN GENERATED[^>]*-->\n\n(.*)\n<!-- END GENERATED -->", text, re.S)
    assert m, "GENERATED markers missing"
    return m.group(1)


def test_generated_tables_are_current() -> None:
    assert generated_part() == register_tables(), "run: python -m device_model.regdoc"


def test_every_declared_register_is_documented() -> None:
    doc = generated_part()
    cfg = pf_config_layout(vendor_id=0x1B36, device_id=0x10EE, vf_device_id=0x10EF,
                           total_vfs=64, first_vf_offset=0x80, vf_stride=1)
    vf_cfg = vf_config_layout(vendor_id=0x1B36, vf_device_id=0x10EF)
    missing = []
    for layout in (cfg, vf_cfg, R.pf_layout(), R.vf_layout(), R.msix_layout()):
        for r in layout.registers:
            name = re.sub(r"^(VFCFG|PF_MBX|MSIX)\d+", r"\g<1>0", r.name)
            first = layout[name]
            if f"| 0x{first.offset:04x} | {first.size} | {name} |" not in doc:
                missing.append(f"{layout.name}:{r.name}")
    assert missing == []
    for name in ("VFCFG", "PF_MBX", "PF_MBX_MEM", "MBX_MEM", "descriptor"):
        assert name in DOC.read_text()
