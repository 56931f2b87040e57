"""VFIO_DEVICE_RESET of the PF keeps the platform's SR-IOV set-up; an FLR does not."""

from __future__ import annotations

from device_model import Adapter, AdapterConfig
from device_model.nic import registers as R
from device_model.pci.layouts import PCIE_CAP
from vfio_user.contract import RegionIndex


def _vendor(fn: object) -> bytes:
    return fn.region_read(RegionIndex.CONFIG, 0, 2)  # type: ignore[attr-defined, no-any-return]


def test_device_reset_keeps_vfs_and_signals_pf_reset_in_their_mailboxes() -> None:
    ad = Adapter(AdapterConfig(total_vfs=4))
    ad.pf.enable_vfs(3)
    assert ad.enabled_vfs() == 3
    for fn in (ad.pf, ad.vf(0)):
        fn.region_write(RegionIndex.CONFIG, 0x04, (0x0006).to_bytes(2, "little"))
    ad.pf.region_write(RegionIndex.BAR0, R.ADAPTER_CTRL, (1).to_bytes(4, "little"))
    mbx = int.from_bytes(ad.vf(0).region_read(RegionIndex.BAR0, R.VF_MBX, 4), "little")
    assert not mbx & R.Mbx.RSTI
    ad.pf.device_reset()
    assert ad.enabled_vfs() == 3
    assert _vendor(ad.vf(2)) == b"\x36\x1b"
    mbx = int.from_bytes(ad.vf(0).region_read(RegionIndex.BAR0, R.VF_MBX, 4), "little")
    assert mbx & R.Mbx.RSTI  # "PF reset in progress" until the PF driver says done


def test_pf_flr_disables_vfs() -> None:
    ad = Adapter(AdapterConfig(total_vfs=4))
    ad.pf.enable_vfs(2)
    devctl = int.from_bytes(ad.pf.region_read(RegionIndex.CONFIG, PCIE_CAP + 8, 2), "little")
    ad.pf.region_write(RegionIndex.CONFIG, PCIE_CAP + 8, (devctl | 0x8000).to_bytes(2, "little"))
    assert ad.enabled_vfs() == 0
    assert _vendor(ad.vf(0)) == b"\xff\xff"
