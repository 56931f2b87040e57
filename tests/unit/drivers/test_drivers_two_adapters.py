"""A guest holding functions of two adapters (names "nic0.pf", "nic1.vf0"): without slots
in sysfs (a guest restored from a saved state, its functions hot-plugged) the fallback
matches them to functions in bus order adapter by adapter, whatever order the agent asks
in (guest_drivers.platform.guest.resolve_addresses, VmBackend.address_of). Before, two
PFs (or two VFs of one number) were matched by VF number alone, in the order asked: both
of svc's PF drivers opened nic1's PF (seen in tests/vm/test_two_adapters_vm.py)."""

from __future__ import annotations

from pathlib import Path

from eeh_abi import nic
from guest_drivers.platform.base import FunctionInfo
from guest_drivers.platform.guest import VmBackend, resolve_addresses


def _pci(root: Path, address: str, device: int) -> None:
    d = root / address
    d.mkdir(parents=True)
    (d / "vendor").write_text(f"0x{nic.VENDOR_ID:04x}\n")
    (d / "device").write_text(f"0x{device:04x}\n")


def info(name: str, vf: int | None) -> FunctionInfo:
    return FunctionInfo(name=name, kind="pf" if vf is None else "vf", vf=vf, addr=0, pe=0)


def test_two_pfs_and_two_vf0s_without_slots(tmp_path: Path) -> None:
    pci, slots = tmp_path / "devices", tmp_path / "slots"
    for bus, device in ((1, nic.PF_DEVICE_ID), (2, nic.PF_DEVICE_ID),
                        (3, nic.VF_DEVICE_ID), (4, nic.VF_DEVICE_ID)):
        _pci(pci, f"0000:{bus:02x}:00.0", device)
    want = {"nic0.pf": "0000:01:00.0", "nic1.pf": "0000:02:00.0",
            "nic0.vf0": "0000:03:00.0", "nic1.vf0": "0000:04:00.0"}
    infos = [info("nic1.vf0", 0), info("nic1.pf", None), info("nic0.vf0", 0),
             info("nic0.pf", None)]
    assert resolve_addresses(infos, slots=slots, pci=pci) == want
    # as the agent asks, one function at a time (the one asked for last in the list)
    backend = VmBackend.__new__(VmBackend)  # no channel needed for the mapping
    backend.slots, backend.pci, backend._known = slots, pci, infos
    assert {i.name: backend.address_of(i) for i in infos} == want
