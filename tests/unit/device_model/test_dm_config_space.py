"""Config space: header, capability layout at the spec's offsets, BAR sizing, Command."""

from __future__ import annotations

import pytest
from dm_helpers import bring_up, check_access_rules

from device_model import Adapter
from device_model.nic import registers as R
from device_model.pci import ids
from device_model.pci.layouts import AER_CAP, MSIX_CAP, PCIE_CAP, SRIOV_CAP
from device_model.testkit import MiniDriver, PfDriver, RamGuest
from vfio_user.contract import RegionIndex

CONFIG = RegionIndex.CONFIG


def std_caps(d: MiniDriver) -> list[tuple[int, int]]:
    out, ptr = [], d.cfg_read(0x34, 1)
    while ptr:
        out.append((ptr, d.cfg_read(ptr, 1)))
        ptr = d.cfg_read(ptr + 1, 1)
    return out


def ext_caps(d: MiniDriver) -> list[tuple[int, int, int]]:
    out, ptr = [], 0x100
    while ptr:
        hdr = d.cfg_read(ptr)
        out.append((ptr, hdr & 0xFFFF, (hdr >> 16) & 0xF))
        ptr = hdr >> 20
    return out


@pytest.fixture
def pf(adapter: Adapter, guest: RamGuest) -> PfDriver:
    return PfDriver(adapter.pf, guest)


def test_header(adapter: Adapter, pf: PfDriver, guest: RamGuest) -> None:
    c = adapter.config
    assert pf.cfg_read(0x00, 2) == c.vendor_id and pf.cfg_read(0x02, 2) == c.device_id
    assert pf.cfg_read(0x08) >> 8 == ids.CLASS_ETHERNET
    assert pf.cfg_read(0x06, 2) & 0x10  # capabilities list
    assert pf.cfg_read(0x0E, 1) == 0 and pf.cfg_read(0x3D, 1) == 0  # type 0, no INTx pin
    pf.enable_vfs(1)
    vf = MiniDriver(adapter.vf(0), guest)
    assert vf.cfg_read(0x00, 2) == c.vendor_id and vf.cfg_read(0x02, 2) == c.vf_device_id


def test_capability_chains(adapter: Adapter, pf: PfDriver, guest: RamGuest) -> None:
    assert std_caps(pf) == [(0x40, ids.CAP_ID_PCIE), (0x80, ids.CAP_ID_MSIX)]
    assert ext_caps(pf) == [(0x100, ids.EXT_CAP_ID_AER, 2), (0x140, ids.EXT_CAP_ID_SRIOV, 1)]
    pf.enable_vfs(1)
    vf = MiniDriver(adapter.vf(0), guest)
    assert std_caps(vf) == [(0x40, 0x10), (0x80, 0x11)]
    assert ext_caps(vf) == [(0x100, 0x0001, 2)]


def test_pcie_capability_endpoint_with_flr(pf: PfDriver) -> None:
    caps = pf.cfg_read(PCIE_CAP + 0x02, 2)
    assert caps & 0xF == 2 and (caps >> 4) & 0xF == 0  # version 2, PCI Express endpoint
    assert pf.cfg_read(PCIE_CAP + 0x04) & (1 << 28)  # Device Capabilities: FLR
    assert pf.cfg_read(PCIE_CAP + 0x08, 2) & 0x8000 == 0  # Initiate FLR reads 0
    assert pf.cfg_read(PCIE_CAP + 0x0A, 2) == 0  # Device Status clean
    assert pf.cfg_read(PCIE_CAP + 0x12, 2) == 0x1011  # link 2.5 GT/s x1 (+ slot clock)


def test_msix_capability_points_into_bar3(adapter: Adapter, pf: PfDriver) -> None:
    assert pf.cfg_read(MSIX_CAP + 0x02, 2) & 0x7FF == R.MSIX_VECTORS - 1
    assert pf.cfg_read(MSIX_CAP + 0x04) == R.MSIX_BAR  # table: BIR 3, offset 0
    assert pf.cfg_read(MSIX_CAP + 0x08) == 0x800 | R.MSIX_BAR  # PBA: BIR 3, offset 0x800
    bar3 = next(r for r in adapter.pf.regions() if r.index == R.MSIX_BAR)
    assert bar3.size >= 0x800 + 8


def test_aer_registers_at_spec_offsets(pf: PfDriver) -> None:
    assert pf.cfg_read(AER_CAP + 0x04) == 0  # uncorrectable status
    assert pf.cfg_read(AER_CAP + 0x08) == ids.AER_UNCOR_MASK_DEFAULT == 1 << 22
    assert pf.cfg_read(AER_CAP + 0x0C) == ids.AER_UNCOR_SEVERITY_DEFAULT == 0x00462010
    assert pf.cfg_read(AER_CAP + 0x10) == 0  # correctable status
    assert pf.cfg_read(AER_CAP + 0x14) == ids.AER_COR_MASK_DEFAULT == 0xE000
    assert pf.cfg_read(AER_CAP + 0x18) == 0  # capabilities and control
    assert all(pf.cfg_read(AER_CAP + 0x1C + 4 * n) == 0 for n in range(4))  # header log


def test_sriov_registers_at_spec_offsets(adapter: Adapter, pf: PfDriver) -> None:
    c = adapter.config
    assert pf.cfg_read(SRIOV_CAP + 0x04) == 0  # SR-IOV capabilities
    assert pf.cfg_read(SRIOV_CAP + 0x08, 2) == 0  # control
    assert pf.cfg_read(SRIOV_CAP + 0x0C, 2) == c.total_vfs  # InitialVFs
    assert pf.cfg_read(SRIOV_CAP + 0x0E, 2) == c.total_vfs  # TotalVFs
    assert pf.cfg_read(SRIOV_CAP + 0x10, 2) == 0  # NumVFs
    assert pf.cfg_read(SRIOV_CAP + 0x14, 2) == c.first_vf_offset
    assert pf.cfg_read(SRIOV_CAP + 0x16, 2) == c.vf_stride
    assert pf.cfg_read(SRIOV_CAP + 0x1A, 2) == c.vf_device_id
    assert pf.cfg_read(SRIOV_CAP + 0x1C) == 1  # supported page sizes: 4 KiB
    assert pf.cfg_read(SRIOV_CAP + 0x20) == 1  # system page size: 4 KiB
    for n, size in ((0, R.VF_BAR0_SIZE), (3, R.MSIX_BAR_SIZE), (1, 0), (5, 0)):
        off = SRIOV_CAP + 0x24 + 4 * n
        pf.cfg_write(off, 0xFFFFFFFF)
        assert pf.cfg_read(off) == (~(size - 1) & 0xFFFFFFFF if size else 0), n


@pytest.mark.parametrize("fn", ["pf", "vf"])
def test_bar_sizing(adapter: Adapter, pf: PfDriver, guest: RamGuest, fn: str) -> None:
    if fn == "vf":
        pf.enable_vfs(1)
    d = pf if fn == "pf" else MiniDriver(adapter.vf(0), guest)
    bar0 = R.PF_BAR0_SIZE if fn == "pf" else R.VF_BAR0_SIZE
    sizes = {0: bar0, 3: R.MSIX_BAR_SIZE}
    for n in range(6):
        off = 0x10 + 4 * n
        d.cfg_write(off, 0xFFFFFFFF)
        size = sizes.get(n, 0)
        expect = (~(size - 1) & 0xFFFFFFFF) if size else 0  # memory, 32-bit, non-prefetchable
        assert d.cfg_read(off) == expect, n
        assert d.fn.regions()[n].size == size
        d.cfg_write(off, 0xFE000000 + 0x123)
        assert d.cfg_read(off) == (0xFE000000 if size else 0)
    assert d.fn.regions()[RegionIndex.CONFIG].size == 4096
    assert d.cfg_read(0x30) == 0  # no expansion ROM


def test_memory_space_gates_mmio(adapter: Adapter, pf: PfDriver) -> None:
    assert pf.read(R.MTU) == 0xFFFFFFFF  # decode off after reset
    pf.write(R.MTU, 1000)
    pf.cfg_write(0x04, ids.CMD_MEMORY, 2)
    assert pf.read(R.MTU) == R.MTU_DEFAULT  # the store was not decoded
    pf.write(R.MTU, 1000)
    assert pf.read(R.MTU) == 1000
    assert int.from_bytes(adapter.pf.region_read(R.MSIX_BAR, 12, 4), "little") == 1  # masked


def test_bus_master_gates_dma_and_interrupts(adapter: Adapter, guest: RamGuest) -> None:
    pf = PfDriver(adapter.pf, guest)
    pf.enable()
    pf.setup_rings()
    pf.cfg_write(0x04, ids.CMD_MEMORY, 2)  # bus master off
    uplink_frames = len(adapter.switch.uplink.sent)  # type: ignore[union-attr]
    pf.post_tx([b"\x02" * 6 + b"\x02\xee" + bytes(56)])
    assert adapter.pf.nic.tx_pending == 1 and pf.tx_status(0) == 0  # no DMA happened
    pf.write(R.ICR, 0xFF)
    adapter.pf.raise_cause(R.Cause.MAILBOX)
    assert pf.irqs.fired == [] and adapter.pf.pending_vectors == 1 << R.Vector.OTHER
    pf.cfg_write(0x04, ids.CMD_MEMORY | ids.CMD_BUS_MASTER, 2)
    assert adapter.pf.nic.tx_pending == 0 and pf.tx_status(0) == 1  # sent, DD
    assert len(adapter.switch.uplink.sent) == uplink_frames + 1  # type: ignore[union-attr]
    assert (2, R.Vector.OTHER) in pf.irqs.fired and adapter.pf.pending_vectors == 0


def test_frozen_function_config_reads_all_ones(adapter: Adapter, pf: PfDriver) -> None:
    adapter.pes.adapter.freeze("test")
    assert adapter.pf.region_read(CONFIG, 0, 4) == b"\xff" * 4
    assert adapter.pf.region_read(CONFIG, 0x100, 2) == b"\xff" * 2
    pf.cfg_write(0x04, 0x6, 2)  # dropped
    adapter.pes.adapter.thaw_mmio()
    assert pf.cfg_read(0x04, 2) == 0


def test_absent_vf_reads_all_ones(adapter: Adapter, pf: PfDriver, guest: RamGuest) -> None:
    vf1 = MiniDriver(adapter.vf(1), guest)
    assert vf1.cfg_read(0x00) == 0xFFFFFFFF and not adapter.vf(1).exists
    pf.enable_vfs(1)  # NumVFs 1: VF 1 is beyond it
    assert vf1.cfg_read(0x00) == 0xFFFFFFFF
    pf.cfg_write(SRIOV_CAP + 0x08, 0, 2)  # VF Enable off
    pf.cfg_write(SRIOV_CAP + 0x10, 2, 2)
    pf.cfg_write(SRIOV_CAP + 0x08, 0b1001, 2)
    assert vf1.cfg_read(0x00) != 0xFFFFFFFF
    vf1.enable()
    assert vf1.read(R.MTU) == R.MTU_DEFAULT
    pf.cfg_write(SRIOV_CAP + 0x08, 0b0001, 2)  # VF MSE off: VF BARs stop decoding
    assert vf1.read(R.MTU) == 0xFFFFFFFF and vf1.cfg_read(0x00) != 0xFFFFFFFF
    pf.cfg_write(SRIOV_CAP + 0x08, 0, 2)
    assert vf1.cfg_read(0x00) == 0xFFFFFFFF and vf1.read(R.MTU) == 0xFFFFFFFF


def test_num_vfs_rules(adapter: Adapter, pf: PfDriver) -> None:
    pf.cfg_write(SRIOV_CAP + 0x10, adapter.config.total_vfs + 1, 2)
    assert pf.cfg_read(SRIOV_CAP + 0x10, 2) == 0  # above TotalVFs: refused
    pf.cfg_write(SRIOV_CAP + 0x10, 3, 2)
    pf.cfg_write(SRIOV_CAP + 0x08, 1, 2)
    pf.cfg_write(SRIOV_CAP + 0x10, 1, 2)
    assert pf.cfg_read(SRIOV_CAP + 0x10, 2) == 3  # fixed while VF Enable is set
    assert adapter.enabled_vfs() == 3 and [v.exists for v in adapter.vfs] == [1, 1, 1, 0]


def test_every_config_register_follows_its_access_rules(adapter: Adapter, guest: RamGuest) -> None:
    bring_up(adapter, guest, num_vfs=1)
    fns = [adapter.vf(0), adapter.pf]  # the PF's checks toggle VF Enable: VF first
    exempt = {"sriov.num_vfs"}  # rules depend on VF Enable: test_num_vfs_rules
    checked = 0
    for fn in fns:
        for r in fn.config.layout.registers:
            if r.name not in exempt:
                check_access_rules(fn, CONFIG, fn.config, r)
                checked += 1
    assert checked > 100
