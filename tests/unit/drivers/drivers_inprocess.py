"""Driver-side function access straight onto the device model, with no transport: the
driver tests' `InProcessFunction` (a FunctionAccess under the model lock, an mmap as its
DMA memory) and `InProcessBackend` (a PlatformBackend onto an in-process
`drivers_fakes.ModelPlatform`).

Import as `tests.unit.drivers.drivers_inprocess`.
"""

from __future__ import annotations

import mmap
import threading

from device_model import Adapter
from eeh_abi.hcall import Event as HEvent
from guest_drivers.platform.base import (
    PAGE,
    Backing,
    DmaAllocator,
    FunctionAccess,
    FunctionInfo,
    HotplugCallback,
    PlatformBackend,
)
from tests.unit.drivers.drivers_fakes import HOST, ModelPlatform
from vfio_user import DmaMap, GuestMemory


class MmapPages:
    """A DmaAllocator page source over one anonymous mmap; bus address = offset."""

    def __init__(self, mm: mmap.mmap) -> None:
        self.mm = mm
        self._next = PAGE

    def _take(self, size: int) -> tuple[Backing, int, int]:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        off, self._next = self._next, self._next + size
        if self._next > len(self.mm):
            raise MemoryError("fake RAM used up")
        return self.mm, off, off

    def page(self) -> tuple[Backing, int, int]:
        return self._take(PAGE)

    def contiguous(self, size: int) -> tuple[Backing, int, int]:
        return self._take(size)


class NullSink:
    def trigger(self, index: int, vector: int) -> None:
        pass


class InProcessFunction(FunctionAccess):
    """A driver's view of a model function with no transport (accesses under `lock`)."""

    def __init__(self, info: FunctionInfo, adapter: Adapter, lock: threading.RLock,
                 ram: int = 4 << 20) -> None:
        self.mm = mmap.mmap(-1, ram)
        super().__init__(info, DmaAllocator(MmapPages(self.mm)))
        self.lock = lock
        self.model = adapter.function(info.name)
        self.memory = GuestMemory()
        self.memory.map(DmaMap(0, ram, self.mm))
        with lock:
            self.model.attach(self.memory, NullSink())
        self.accesses = 0

    def _read(self, region: int, offset: int, size: int) -> int:
        with self.lock:
            self.accesses += 1
            return int.from_bytes(self.model.region_read(region, offset, size), "little")

    def _write(self, region: int, offset: int, size: int, value: int) -> None:
        with self.lock:
            self.accesses += 1
            self.model.region_write(region, offset, (value & ((1 << 8 * size) - 1)).to_bytes(
                size, "little"))

    def read32(self, offset: int) -> int:
        return self._read(0, offset, 4)

    def write32(self, offset: int, value: int) -> None:
        self._write(0, offset, 4, value)

    def read64(self, offset: int) -> int:
        return self._read(0, offset, 8)

    def write64(self, offset: int, value: int) -> None:
        self._write(0, offset, 8, value)

    def msix_read32(self, offset: int) -> int:
        return self._read(3, offset, 4)

    def msix_write32(self, offset: int, value: int) -> None:
        self._write(3, offset, 4, value)

    def config_read(self, offset: int, size: int) -> int:
        return self._read(7, offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self._write(7, offset, size, value)

    def close(self) -> None:
        with self.lock:
            if self.model.memory is self.memory:
                self.model.detach()


class InProcessBackend(PlatformBackend):
    """A PlatformBackend onto an in-process ModelPlatform (no sockets)."""

    mode = "in-process"

    def __init__(self, platform: ModelPlatform, adapter: Adapter, lock: threading.RLock,
                 owner: str = HOST) -> None:
        self.model_channel = platform.channel(owner)
        super().__init__(self.model_channel)  # type: ignore[arg-type]
        self.adapter = adapter
        self.lock = lock
        self._callbacks: list[HotplugCallback] = []
        self.model_channel.subscribe(self._event)
        self.opened: list[InProcessFunction] = []

    def open_function(self, info: FunctionInfo) -> FunctionAccess:
        fn = InProcessFunction(info, self.adapter, self.lock)
        self.opened.append(fn)
        return fn

    def watch_hotplug(self, callback: HotplugCallback) -> None:
        self._callbacks.append(callback)

    def _event(self, ev: HEvent) -> None:
        kind = {"function-removed": "removed", "function-added": "added"}.get(ev.name)
        if kind is not None:
            for cb in list(self._callbacks):
                cb(kind, str(ev.data["name"]))

    def close(self) -> None:
        self.model_channel.close()
