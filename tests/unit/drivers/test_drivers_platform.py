"""The platform layer without a guest: query-functions entries, the VM backend's lookups
on fake sysfs trees, udev events mapped to functions, DMA allocation, polling, the
ledger, and what guest_drivers imports."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from guest_drivers.ledger import RxLedger, TxLedger
from guest_drivers.pf import AdapterSettings
from guest_drivers.platform.base import (
    PAGE,
    BadFunctionEntry,
    DmaAllocator,
    FunctionInfo,
)
from guest_drivers.platform.errors import DeviceNotFound
from guest_drivers.platform.guest import VmBackend, find_port, resolve_addresses
from guest_drivers.poll import AdaptivePoller, PollConfig
from guest_drivers.vf import parse_mac
from tests.support.dma import MmapPages

ROOT = Path(__file__).resolve().parents[3]


def entry(name: str, vf: int | None, slot: int | None = None, **kw: object) -> dict[str, object]:
    addr = 0x10000 if vf is None else 0x10000 + ((0x80 + vf) << 8)
    return {"name": name, "kind": "pf" if vf is None else "vf", "vf": vf, "addr": addr,
            "pe": addr, "slot": slot, "socket": None, **kw}


def test_function_entries_are_parsed_and_checked() -> None:
    info = FunctionInfo.from_entry(entry("vf1", 1, slot=3, handlers=False,
                                         config={"mtu": 9000}))
    assert (info.kind, info.vf, info.pe, info.slot, info.handlers) == ("vf", 1, 0x18100, 3,
                                                                       False)
    assert info.config["mtu"] == 9000
    pf = FunctionInfo.from_entry(entry("pf", None, socket="/tmp/pf.sock",
                                       adapter={"num_vfs": 2}))
    assert pf.socket == "/tmp/pf.sock" and pf.adapter == {"num_vfs": 2} and pf.vf is None
    for bad in ({**entry("x", 0), "kind": "nic"}, {**entry("x", 0), "vf": None},
                {**entry("x", 0), "pe": "0x18000"}, {**entry("x", 0), "addr": True}):
        with pytest.raises(BadFunctionEntry):
            FunctionInfo.from_entry(bad)


def test_adapter_settings_from_the_platform_entry() -> None:
    s = AdapterSettings.from_entry({
        "num_vfs": 3, "vf_pes": [0x18000, 0x18100, 0x18200],
        "vfs": [{"vf": 0, "mac": "02:ee:00:00:01:00", "vlan": None, "mtu": 1500,
                 "anti_spoof": False},
                {"vf": 1, "mac": "02ee00000101", "vlan": 100, "anti_spoof": True}]})
    assert s.num_vfs == 3 and s.vf_pes == (0x18000, 0x18100, 0x18200)
    assert s.vfs[0].mac == "02:ee:00:00:01:00" and s.vfs[0].vlan is None
    assert s.vfs[1].vlan == 100 and s.vfs[1].anti_spoof and s.vfs[1].mtu is None
    assert AdapterSettings.from_entry(None) == AdapterSettings()
    assert parse_mac(0x02EE00000001) == bytes.fromhex("02ee00000001")
    with pytest.raises(ValueError):
        parse_mac("02:ee:00")


def _pci(root: Path, address: str, device: int) -> None:
    d = root / address
    d.mkdir(parents=True)
    (d / "vendor").write_text("0x1b36\n")
    (d / "device").write_text(f"0x{device:04x}\n")


@pytest.fixture
def sysfs(tmp_path: Path) -> tuple[Path, Path]:
    pci, slots = tmp_path / "devices", tmp_path / "slots"
    _pci(pci, "0000:00:01.0", 0x10EE)  # the PF on rp0's bus... (bus order != vf order)
    _pci(pci, "0000:02:00.0", 0x10EF)
    _pci(pci, "0000:03:00.0", 0x10EF)
    _pci(pci, "0000:04:00.0", 0x10EF)
    return pci, slots


def test_functions_are_found_by_slot(sysfs: tuple[Path, Path]) -> None:
    pci, slots = sysfs
    for slot, bus in ((1, "00:01"), (2, "04:00"), (3, "02:00")):
        (slots / str(slot)).mkdir(parents=True)
        (slots / str(slot) / "address").write_text(f"0000:{bus}\n")
    infos = [FunctionInfo.from_entry(entry("pf", None, slot=1)),
             FunctionInfo.from_entry(entry("vf0", 0, slot=2)),
             FunctionInfo.from_entry(entry("vf1", 1, slot=3))]
    assert resolve_addresses(infos, slots=slots, pci=pci) == {
        "pf": "0000:00:01.0", "vf0": "0000:04:00.0", "vf1": "0000:02:00.0"}


def test_without_slots_functions_are_matched_by_ids_in_bus_order(
        sysfs: tuple[Path, Path]) -> None:
    pci, slots = sysfs  # no slots directory at all
    infos = [FunctionInfo.from_entry(entry("vf3", 3)), FunctionInfo.from_entry(entry("vf1", 1)),
             FunctionInfo.from_entry(entry("pf", None))]
    assert resolve_addresses(infos, slots=slots, pci=pci) == {
        "pf": "0000:00:01.0", "vf1": "0000:02:00.0", "vf3": "0000:03:00.0"}
    # a slot without an address file falls back too, skipping what slots already took
    (slots / "7").mkdir(parents=True)
    (slots / "8").mkdir(parents=True)
    (slots / "8" / "address").write_text("0000:02:00\n")
    infos = [FunctionInfo.from_entry(entry("vf0", 0, slot=7)),
             FunctionInfo.from_entry(entry("vf1", 1, slot=8))]
    assert resolve_addresses(infos, slots=slots, pci=pci) == {
        "vf1": "0000:02:00.0", "vf0": "0000:03:00.0"}


def test_the_hcall_port_is_found_by_name(tmp_path: Path) -> None:
    for port, name in (("vport0p0", "org.qemu.guest_agent.0"), ("vport1p1", "eeh.hcall")):
        (tmp_path / port).mkdir()
        (tmp_path / port / "name").write_text(name + "\n")
    assert find_port(root=tmp_path, dev=Path("/dev")) == Path("/dev/vport1p1")
    with pytest.raises(DeviceNotFound):
        find_port("nope", root=tmp_path)


def test_udev_events_map_to_this_partitions_functions(sysfs: tuple[Path, Path]) -> None:
    pci, slots = sysfs
    backend = VmBackend.__new__(VmBackend)  # no channel needed for the mapping
    backend.slots, backend.pci = slots, pci
    backend._known = [FunctionInfo.from_entry(entry("vf0", 0)),
                      FunctionInfo.from_entry(entry("vf1", 1))]
    backend._addresses = {"vf0": "0000:02:00.0", "vf1": "0000:03:00.0"}
    backend._callbacks = []
    backend._lock = threading.RLock()
    backend._closing = threading.Event()
    seen: list[tuple[str, str]] = []
    backend._callbacks.append(lambda kind, name: seen.append((kind, name)))
    backend.udev_event("remove", "0000:03:00.0")
    backend.udev_event("remove", "0000:09:00.0")  # not ours
    assert seen == [("removed", "vf1")]
    backend.udev_event("add", "0000:03:00.0")
    assert seen[-1] == ("added", "vf1")


def test_dma_buffers_never_cross_a_page() -> None:
    mm = mmap.mmap(-1, 64 * PAGE)
    dma = DmaAllocator(MmapPages(mm))
    bufs = [dma.alloc(1500, 64) for _ in range(8)]
    for b in bufs:
        assert b.bus % 64 == 0 and b.bus // PAGE == (b.bus + b.size - 1) // PAGE
        assert b.bus >= PAGE  # page 0 is never handed out
    assert len({b.bus // PAGE for b in bufs}) == 4  # two 1500-byte buffers to a page
    ring = dma.alloc(64 * 16, 16)
    assert ring.bus % 16 == 0
    big = dma.alloc(9216, 64)
    assert big.size == 9216
    bufs[0].write(0, b"hello")
    assert bufs[0].read(0, 5) == b"hello" and mm[bufs[0].bus:bufs[0].bus + 5] == b"hello"
    with pytest.raises(ValueError):
        bufs[0].write(1499, b"xx")


def test_poller_backs_off_and_a_wake_ends_the_sleep_at_once() -> None:
    wake = threading.Event()
    p = AdaptivePoller(PollConfig(busy_s=0.0, min_sleep_s=0.001, max_sleep_s=0.2), wake)
    for _ in range(12):
        p.idle(False)
    assert p.current_sleep == 0.2
    threading.Timer(0.02, wake.set).start()
    t0 = time.monotonic()
    p.idle(False)
    assert time.monotonic() - t0 < 0.15 and p.woken == 1
    p.idle(True)
    assert p.current_sleep == 0.0


def test_ledger_balance() -> None:
    tx = TxLedger(submitted=10, sent=5, errors=1)
    tx.drop("too-long", 2)
    assert tx.balanced(in_ring=1, queued=1)
    assert not tx.balanced(in_ring=0, queued=1)
    assert tx.to_json(1, 1, 0)["drop_reasons"] == {"too-long": 2}
    rx = RxLedger(received=4, delivered=3)
    assert rx.balanced(queued=1) and not rx.balanced(queued=0)


def test_guest_drivers_import_no_host_package_nor_scapy_or_pyudev() -> None:
    code = (
        "import sys\n"
        "import guest_drivers.agent, guest_drivers.platform.guest, guest_drivers.harness\n"
        "import guest_drivers.pf, guest_drivers.vf, guest_drivers.recovery\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('device_model', 'hypervisor_shim', 'vfio_user', 'scapy', 'pyudev'))\n"
        "print(bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_vm_function_maps_sysfs_resources(tmp_path: Path) -> None:
    from guest_drivers.platform.guest import VmFunction
    from guest_drivers.platform.sysfs import PciFunction

    d = tmp_path / "0000:05:00.0"
    d.mkdir()
    (d / "resource0").write_bytes(bytes(0x1000))
    (d / "resource3").write_bytes(bytes(0x1000))
    (d / "config").write_bytes(bytes(0x1000))
    (d / "enable").write_text("0")
    info = FunctionInfo.from_entry(entry("vf0", 0))
    fn = VmFunction(info, PciFunction("0000:05:00.0", tmp_path),
                    DmaAllocator(MmapPages(mmap.mmap(-1, 16 * PAGE))))
    try:
        fn.write32(0x10, 0x5DC)
        fn.write64(0x200, 1 << 40 | 7)
        assert fn.read32(0x10) == 0x5DC and fn.read64(0x200) == 1 << 40 | 7
        assert (d / "resource0").read_bytes()[0x10:0x14] == (0x5DC).to_bytes(4, "little")
        fn.msix_write32(0xC, 1)
        assert fn.msix_read32(0xC) == 1
        fn.config_write(0x04, 2, 0x6)
        assert fn.config_read(0x04, 2) == 0x6 and fn.config_read(0x1000, 4) == 0xFFFFFFFF
        fn.enable()
        assert (d / "enable").read_text() == "1"
    finally:
        fn.close()


@pytest.mark.skipif(not Path("/proc/self/pagemap").exists() or os.geteuid() != 0,
                    reason="physical addresses need root")
def test_guest_dma_pages_have_physical_addresses() -> None:
    from guest_drivers.platform.dma import PagePool

    dma = DmaAllocator(PagePool())
    a, b = dma.alloc(2048, 64), dma.alloc(2048, 64)
    assert a.bus % PAGE == 0 and b.bus == a.bus + 2048  # two halves of one locked page
    c = dma.alloc(1024)
    assert c.bus // PAGE != a.bus // PAGE  # a new page, anywhere in physical memory
    a.write(0, b"dma")
    assert a.read(0, 3) == b"dma"


def test_an_add_seen_before_sysfs_shows_the_function_and_the_platforms_event(
        sysfs: tuple[Path, Path]) -> None:
    """udev may report the add before the function's files are there, or lose it; the
    platform's function-added event is the second source. Each add is notified once."""
    import shutil

    from eeh_abi.hcall import Event

    pci, slots = sysfs
    for slot, bus in ((2, "02:00"), (3, "03:00")):
        (slots / str(slot)).mkdir(parents=True)
        (slots / str(slot) / "address").write_text(f"0000:{bus}\n")
    backend = VmBackend.__new__(VmBackend)
    backend.slots, backend.pci = slots, pci
    backend._known = [FunctionInfo.from_entry(entry("vf0", 0, slot=2)),
                      FunctionInfo.from_entry(entry("vf1", 1, slot=3))]
    backend._addresses = {"vf0": "0000:02:00.0"}
    backend._callbacks = []
    backend._lock = threading.RLock()
    backend._closing = threading.Event()
    seen: list[tuple[str, str]] = []

    def attach(kind: str, name: str) -> None:
        seen.append((kind, name))
        if kind == "added":  # the agent opens it
            backend._addresses[name] = "0000:03:00.0"
    backend._callbacks.append(attach)
    saved = pci / "saved"
    shutil.move(pci / "0000:03:00.0", saved)  # not in sysfs yet
    t = threading.Thread(target=backend.udev_event, args=("add", "0000:03:00.0"))
    t.start()
    backend._on_platform_event(Event("function-added", None, {"name": "vf1"}, 0.0))
    time.sleep(0.3)
    assert seen == []
    shutil.move(saved, pci / "0000:03:00.0")
    t.join(5)
    deadline = time.monotonic() + 5
    while not seen and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert seen == [("added", "vf1")]
    backend._on_platform_event(Event("function-removed", None, {"name": "vf1"}, 0.0))
    assert seen[-1] == ("removed", "vf1") and "vf1" not in backend._addresses
