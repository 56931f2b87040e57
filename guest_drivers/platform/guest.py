"""VM backend: drivers inside a QEMU guest (python3, standard library; pyudev for
hot-plug, imported lazily).

- The platform channel is the virtio-serial port named `eeh.hcall`: its device is
  /dev/<vportNpM>, found through /sys/class/virtio-ports/<vportNpM>/name (no udev
  coldplug runs, so /dev/virtio-ports/ links do not exist).
- A function of `query-functions` is found in sysfs by its `slot`: QEMU puts each
  function on a PCIe root port whose slot number the platform knows;
  /sys/bus/pci/slots/<slot>/address reads "0000:BB:00" and the function is 0000:BB:00.0.
  Fallback, when the guest kernel shows no slot (no /sys/bus/pci/slots, or no entry or
  address for that slot): functions with the adapter's vendor ID and the PF / VF device
  ID, in bus order, are matched to this partition's PF and to its VFs in VF-number
  order (of several adapters: adapter by adapter, by name: "nic0.vf1" before
  "nic1.vf0"). That holds when the functions were cold-plugged on root ports in that order (as
  `AdapterHost.machine_config` does) and breaks with hot-plug in another order: the slot
  is the reliable key. Either way a function must show the adapter's vendor ID and the
  PF or VF device ID, and a VF driver refuses a function whose MAC (forced by the PF
  driver) is not the one the platform configured for that VF.
- BARs are mapped from sysfs `resourceN` (guest_drivers.platform.sysfs), config space is
  the sysfs `config` file, DMA memory is locked pages with their guest-physical addresses
  (guest_drivers.platform.dma; hugepages for buffers above 4 KiB).
- Hot-plug: a pyudev monitor on the `pci` subsystem reports `remove` and `add`; an
  address is mapped back to this partition's function by the same rules.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from eeh_abi import nic
from eeh_abi.hcall import Channel, Event
from eeh_abi.vocabulary import Kind
from guest_drivers.platform.base import (
    DmaAllocator,
    FunctionAccess,
    FunctionGone,
    FunctionInfo,
    HotplugCallback,
    PlatformBackend,
)
from guest_drivers.platform.dma import PagePool
from guest_drivers.platform.errors import DeviceNotFound, PlatformError
from guest_drivers.platform.sysfs import SYSFS_PCI, Bar, PciFunction, functions

log = logging.getLogger("guest_drivers")

HCALL_PORT = "eeh.hcall"
VIRTIO_PORTS = Path("/sys/class/virtio-ports")
PCI_SLOTS = Path("/sys/bus/pci/slots")


def find_port(name: str = HCALL_PORT, root: Path = VIRTIO_PORTS,
              dev: Path = Path("/dev")) -> Path:
    """The /dev node of the virtio-serial port called `name`."""
    try:
        ports = sorted(os.listdir(root))
    except OSError:
        ports = []
    for port in ports:
        try:
            if (root / port / "name").read_text().strip() == name:
                return dev / port
        except OSError:
            continue
    raise DeviceNotFound(f"virtio-serial port {name!r} (under {root})")


def resolve_addresses(infos: Sequence[FunctionInfo], *, slots: Path = PCI_SLOTS,
                      pci: Path = SYSFS_PCI) -> dict[str, str]:
    """Function name -> sysfs address, by slot, then by the documented fallback."""
    out: dict[str, str] = {}
    slotted: set[str] = set()  # a slot that sysfs knows decides alone, even when empty
    for info in infos:
        if info.slot is None:
            continue
        try:
            text = (slots / str(info.slot) / "address").read_text().strip()
        except OSError:
            continue
        slotted.add(info.name)
        address = text if text.count(".") else f"{text}.0"
        want = nic.PF_DEVICE_ID if info.kind == "pf" else nic.VF_DEVICE_ID
        try:
            fn = PciFunction(address, pci)
            if (fn.vendor, fn.device) == (nic.VENDOR_ID, want):
                out[info.name] = address
        except PlatformError:
            continue  # absent, or not ours: the fallback below decides
    missing = [i for i in infos if i.name not in out and i.name not in slotted]
    if not missing:
        return out
    taken = set(out.values())
    for kind, device in (("pf", nic.PF_DEVICE_ID), ("vf", nic.VF_DEVICE_ID)):
        # adapter by adapter ("nic1.vf0" after "nic0.vf1"), then VF number: the order
        # machine_config plugs a guest's functions in when it lists them that way
        wanted = sorted((i for i in missing if i.kind == kind),
                        key=lambda i: (i.name.rpartition(".")[0], i.vf or 0))
        if not wanted:
            continue
        free = [f.address for f in functions(nic.VENDOR_ID, device, pci)
                if f.address not in taken]
        for info, address in zip(wanted, free, strict=False):
            out[info.name] = address
    return out


class VmFunction(FunctionAccess):
    def __init__(self, info: FunctionInfo, pci: PciFunction, dma: DmaAllocator, *,
                 appear_s: float = 5.0) -> None:
        super().__init__(info, dma)
        self.pci = pci
        deadline = time.monotonic() + appear_s
        while not (pci.path / "resource0").exists():  # a hot-added function's files
            if time.monotonic() >= deadline:
                raise FunctionGone(info.name, f"{pci.path}/resource0 did not appear")
            time.sleep(0.02)
        self._bar0 = pci.bar(nic.BAR0)
        self._msix: Bar | None = None
        path = pci.path / "config"
        try:
            self._cfg = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            self._bar0.close()
            raise FunctionGone(info.name, f"open {path}: {e}") from e

    @property
    def address(self) -> str:
        return self.pci.address

    def read32(self, offset: int) -> int:
        return self._bar0.read32(offset)

    def write32(self, offset: int, value: int) -> None:
        self._bar0.write32(offset, value)

    def read64(self, offset: int) -> int:
        return self._bar0.read64(offset)

    def write64(self, offset: int, value: int) -> None:
        self._bar0.write64(offset, value)

    def _msix_bar(self) -> Bar:
        if self._msix is None:
            self._msix = self.pci.bar(nic.MSIX_BAR)
        return self._msix

    def msix_read32(self, offset: int) -> int:
        return self._msix_bar().read32(offset)

    def msix_write32(self, offset: int, value: int) -> None:
        self._msix_bar().write32(offset, value)

    def config_read(self, offset: int, size: int) -> int:
        try:
            data = os.pread(self._cfg, size, offset)
        except OSError:
            return (1 << (8 * size)) - 1  # as a removed function would answer
        if len(data) != size:
            return (1 << (8 * size)) - 1
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        try:
            os.pwrite(self._cfg, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"),
                      offset)
        except OSError as e:
            raise FunctionGone(self.name, f"config write: {e}") from e

    def enable(self) -> None:
        self.pci.enable()

    def close(self) -> None:
        for bar in (self._bar0, self._msix):
            if bar is not None:
                try:
                    bar.close()
                except (BufferError, ValueError):
                    pass
        self._msix = None
        try:
            os.close(self._cfg)
        except OSError:
            pass


class VmBackend(PlatformBackend):
    mode = "vm"

    def __init__(self, port: str | Path | None = None, *, slots: Path = PCI_SLOTS,
                 pci: Path = SYSFS_PCI, udev_source: str = "udev",
                 timeout: float = 30.0) -> None:
        path = Path(port) if port is not None else find_port()
        super().__init__(Channel.open_device(str(path), timeout=timeout))
        self.port = path
        self.slots = slots
        self.pci = pci
        self.udev_source = udev_source
        self.dma = DmaAllocator(PagePool())  # one pool for the whole guest process
        self._known: list[FunctionInfo] = []
        self._addresses: dict[str, str] = {}
        self._callbacks: list[HotplugCallback] = []
        self._monitor: threading.Thread | None = None
        self._closing = threading.Event()
        self._lock = threading.RLock()
        # the platform says when it removes or adds back a function (its driver has no
        # error handlers): a second source besides udev, for an event udev lost or
        # reported before sysfs showed the function
        self.channel.subscribe(self._on_platform_event)

    def query_functions(self) -> list[FunctionInfo]:
        infos = super().query_functions()
        self._known = infos
        return infos

    # The last resolution and what it was made from (the functions known, the PCI
    # functions present): the agent opens its functions one by one, and each asked for
    # all of them again, a sysfs scan each when the guest has no slots (hot-plugged):
    # 9 scans for 8 VFs, ~1 s of a TCG guest's CPU (cProfile of the agent's start).
    _resolved: tuple[tuple[object, ...], dict[str, str]] | None = None  # (from, result)

    def address_of(self, info: FunctionInfo) -> str:
        infos = [i for i in self._known if i.name != info.name] + [info]
        infos.sort(key=lambda i: (i.kind != "pf", i.vf or 0))
        try:
            present = tuple(sorted(os.listdir(self.pci)))
        except OSError:
            present = ()
        source = (tuple((i.name, i.kind, i.vf, i.slot) for i in infos), present)
        last = self._resolved  # one attribute, replaced whole: no lock needed
        if last is not None and last[0] == source:
            found = last[1]
        else:
            found = resolve_addresses(infos, slots=self.slots, pci=self.pci)
            self._resolved = (source, found)
        address = found.get(info.name)
        if address is None:
            raise DeviceNotFound(f"{info.name} (slot {info.slot})")
        return address

    def open_function(self, info: FunctionInfo) -> FunctionAccess:
        address = self.address_of(info)
        fn = VmFunction(info, PciFunction(address, self.pci), self.dma)
        with self._lock:
            self._addresses[info.name] = address
        return fn

    def watch_hotplug(self, callback: HotplugCallback) -> None:
        self._callbacks.append(callback)
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="udev-monitor",
                                             daemon=True)
            self._monitor.start()

    def _monitor_loop(self) -> None:
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context, source=self.udev_source)
            monitor.filter_by("pci")
            monitor.start()
        except Exception as e:  # no netlink/udev here: hot-plug goes unnoticed
            log.warning("no udev monitor (%s): hot-plug will not be seen", e)
            return
        while not self._closing.is_set():
            try:
                device = monitor.poll(timeout=0.5)
            except Exception:
                log.exception("udev monitor failed")
                return
            if device is None:
                continue
            self.udev_event(str(device.action), str(device.sys_name))

    def udev_event(self, action: str, address: str, settle_s: float = 3.0) -> None:
        """One udev event on the pci subsystem (the monitor's, or a test's). An "add"
        whose function sysfs does not show yet (slot address, IDs) is looked at again
        for up to `settle_s`."""
        if action == "remove":
            with self._lock:
                names = [n for n, a in self._addresses.items() if a == address]
                for name in names:
                    del self._addresses[name]
            for name in names:
                self._notify("removed", name)
        elif action == "add":
            deadline = time.monotonic() + settle_s
            while not self._added(lambda name, addr: addr == address) and \
                    time.monotonic() < deadline and not self._closing.is_set():
                time.sleep(0.1)

    def _added(self, match: Callable[[str, str], bool]) -> bool:
        """Notify "added" for every known, unattached function `match` accepts that
        sysfs shows now; True if there was one."""
        infos = sorted(self._known, key=lambda i: (i.kind != "pf", i.vf or 0))
        found = resolve_addresses(infos, slots=self.slots, pci=self.pci)
        new = []
        with self._lock:
            for name, addr in found.items():
                if match(name, addr) and name not in self._addresses:
                    new.append(name)
        for name in new:
            self._notify("added", name)
        return bool(new)

    def _on_platform_event(self, ev: Event) -> None:  # the channel's reader thread
        name = ev.data.get("name")
        if not isinstance(name, str) or not self._callbacks:
            return
        if ev.name == Kind.FUNCTION_REMOVED:
            with self._lock:
                gone = self._addresses.pop(name, None) is not None
            if gone:
                self._notify("removed", name)
        elif ev.name == Kind.FUNCTION_ADDED:
            info = next((i for i in self._known if i.name == name), None)
            if info is None or info.slot is None or not (self.slots / str(info.slot)).is_dir():
                return  # without its slot the function cannot be told from another VF
            threading.Thread(target=self._await_added, args=(name,), daemon=True,
                             name=f"await-{name}").start()

    def _await_added(self, name: str, timeout: float = 20.0) -> None:
        """The platform added `name` back: wait (bounded) until sysfs shows it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._closing.is_set():
            with self._lock:
                if name in self._addresses:
                    return  # udev was first
            if self._added(lambda n, addr: n == name):
                return
            time.sleep(0.1)

    def _notify(self, kind: str, name: str) -> None:
        for cb in list(self._callbacks):
            try:
                cb(kind, name)
            except Exception:
                log.exception("hot-plug callback failed")

    def close(self) -> None:
        self._closing.set()
        super().close()


def open_backend(port: str | None = None) -> PlatformBackend:
    """The VM backend on this guest's `eeh.hcall` port (PlatformError if there is none)."""
    try:
        return VmBackend(port)
    except OSError as e:
        raise PlatformError(f"cannot open the platform channel: {e}") from e
