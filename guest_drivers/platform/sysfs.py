"""PCI functions through Linux sysfs: identity, enable, config space, BARs by mmap.

BARs are mapped from `resourceN` (STRICT_DEVMEM kernels forbid /dev/mem). Loads and
stores go through a typed memoryview so each is one access of its width, as MMIO needs.
"""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from guest_drivers.platform.errors import AccessError, DeviceNotFound, translate

SYSFS_PCI = Path("/sys/bus/pci/devices")


class Bar:
    """One memory BAR, mapped. Offsets are bytes; accesses must be naturally aligned."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            fd = os.open(path, os.O_RDWR | os.O_SYNC)
        except OSError as e:
            raise translate("open", str(path), e) from e
        try:
            self.size = os.fstat(fd).st_size
            self._mm = mmap.mmap(fd, self.size, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            raise translate("mmap", str(path), e) from e
        finally:
            os.close(fd)
        view = memoryview(self._mm)
        self._u32 = view.cast("I")
        self._u64 = view.cast("Q")

    def read32(self, offset: int) -> int:
        return int(self._u32[offset >> 2])

    def write32(self, offset: int, value: int) -> None:
        self._u32[offset >> 2] = value & 0xFFFFFFFF

    def read64(self, offset: int) -> int:
        return int(self._u64[offset >> 3])

    def write64(self, offset: int, value: int) -> None:
        self._u64[offset >> 3] = value & 0xFFFFFFFFFFFFFFFF

    def close(self) -> None:
        self._u32.release()
        self._u64.release()
        self._mm.close()

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class PciFunction:
    """A PCI function as sysfs shows it, e.g. PciFunction('0000:01:00.0')."""

    address: str
    root: Path = SYSFS_PCI

    @property
    def path(self) -> Path:
        return self.root / self.address

    def _read_text(self, name: str) -> str:
        p = self.path / name
        try:
            return p.read_text().strip()
        except OSError as e:
            raise translate("read", str(p), e) from e

    def _write_text(self, name: str, value: str) -> None:
        p = self.path / name
        try:
            p.write_text(value)
        except OSError as e:
            raise translate("write", str(p), e) from e

    @property
    def vendor(self) -> int:
        return int(self._read_text("vendor"), 16)

    @property
    def device(self) -> int:
        return int(self._read_text("device"), 16)

    @property
    def class_code(self) -> int:
        return int(self._read_text("class"), 16)

    def exists(self) -> bool:
        return self.path.exists()

    def enable(self) -> None:
        """Turn on memory decode (and keep the function enabled) without a kernel driver."""
        self._write_text("enable", "1")

    def config_read(self, offset: int, size: int) -> int:
        p = self.path / "config"
        try:
            with open(p, "rb") as f:
                data = os.pread(f.fileno(), size, offset)
        except OSError as e:
            raise translate("read", str(p), e) from e
        return int.from_bytes(data, "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        p = self.path / "config"
        try:
            with open(p, "r+b") as f:
                os.pwrite(f.fileno(), value.to_bytes(size, "little"), offset)
        except OSError as e:
            raise translate("write", str(p), e) from e

    def bar(self, index: int) -> Bar:
        return Bar(self.path / f"resource{index}")


# errnos of a read from a function that was hot-removed after the directory listing
_GONE = frozenset({errno.ENOENT, errno.ENODEV})


def functions(vendor: int | None = None, device: int | None = None,
              root: Path = SYSFS_PCI) -> Iterator[PciFunction]:
    """Present PCI functions, optionally filtered by vendor and device ID, in bus order.

    A function removed while the scan runs (hot-removal between the listing and the read
    of its IDs) is skipped; any other failure to read its IDs is raised (AccessError)."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return
    for name in names:
        fn = PciFunction(name, root)
        try:
            if vendor is not None and fn.vendor != vendor:
                continue
            if device is not None and fn.device != device:
                continue
        except AccessError as e:
            if e.errno in _GONE or not fn.exists():
                continue  # removed while we looked
            raise
        yield fn


def find_one(vendor: int, device: int, root: Path = SYSFS_PCI) -> PciFunction:
    for fn in functions(vendor, device, root):
        return fn
    raise DeviceNotFound(f"{vendor:04x}:{device:04x}")
