"""A topology whose recovery needs VF removal is refused up front on a QEMU that cannot
remove a vfio-user device (the VFs of its handler-less drivers would be stranded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eeh_sriov.system import RemovalUnavailable, check_removal
from eeh_sriov.topology import parse_topology
from qemu_launcher.assets import GuestAssets, QemuBinary
from qemu_launcher.qemu_fixes import VFIO_USER_MSIX_TEARDOWN
from tests.support.topologies import svc_and_g1

NO_MATCH = (f"{VFIO_USER_MSIX_TEARDOWN.name}: no match (the calls of "
            "memory_region_del_subregion at 0x1 are not between the instructions the fix "
            "knows)")


def _assets(tmp: Path, fixes: tuple[str, ...], findings: tuple[str, ...]) -> GuestAssets:
    q = QemuBinary(("qemu-system-x86_64",), (), "11.1.3", "host", fixes, findings)
    return GuestAssets(rootfs=tmp, kernel=tmp / "k", initramfs=tmp / "i", qemu=q)


def test_handlerless_vfs_need_a_qemu_that_can_remove(tmp_path: Path) -> None:
    topo = parse_topology(svc_and_g1(handlers=False), "t.toml")
    broken = _assets(tmp_path, (), (NO_MATCH,))
    with pytest.raises(RemovalUnavailable) as e:
        check_removal(topo, broken)
    msg = str(e.value)
    assert msg.startswith("topology t.toml: guest(s) g1 have handlers = false")
    assert "VF removal refused" in msg and "are not between the instructions" in msg
    assert e.value.guests == ["g1"]
    # the fix found (or declared): the same topology starts
    fixed = dataclasses.replace(broken, qemu=dataclasses.replace(
        broken.qemu, fixes=(VFIO_USER_MSIX_TEARDOWN.name,)))
    check_removal(topo, fixed)
    assert fixed.qemu.removal().startswith("VF removal works")


def test_drivers_with_handlers_need_no_removal(tmp_path: Path) -> None:
    topo = parse_topology(svc_and_g1(), "t.toml")
    check_removal(topo, _assets(tmp_path, (), (NO_MATCH,)))
