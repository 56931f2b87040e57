"""A small fake PCI function for the vfio-user tests (the real model is not used here).

Regions: BAR0 4 KiB RW registers, BAR2 16 KiB RW (advertised with MMAP, which the server
must never pass on), BAR4 256 B read-only, config 4 KiB RW; others absent. Interrupts:
INTx 1, MSI-X 8. A few BAR0 registers make the device act, so tests drive interrupts and
DMA through the protocol (on the server's loop thread, like the real model):

    0xF00  write v: trigger MSI-X vector v
    0xF04  write v: trigger INTx
    0xF10  16 bytes (addr u64, length u32, byte u8 + pad): DMA-write `length` x `byte`
    0xF20  16 bytes (addr u64, length u32, pad): DMA-read into BAR2 at offset 0
    0xF30  read: status of the last DMA (0 ok, 1 DmaError)
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from vfio_user import (
    Client,
    DmaError,
    EndpointState,
    GuestMemory,
    IrqFlag,
    IrqIndex,
    IrqInfo,
    IrqSink,
    RegionFlag,
    RegionInfo,
    ServerConfig,
    ServerThread,
)

RW = RegionFlag.READ | RegionFlag.WRITE
SIZES = {0: 0x1000, 2: 0x4000, 4: 0x100, 7: 0x1000}
FLAGS = {0: RW, 2: RW | RegionFlag.MMAP, 4: RegionFlag.READ, 7: RW}

REG_MSIX = 0xF00
REG_INTX = 0xF04
REG_DMA_WRITE = 0xF10
REG_DMA_READ = 0xF20
REG_DMA_STATUS = 0xF30


class FakeFunction:
    def __init__(self, name: str = "fake", msix: int = 8) -> None:
        self._name = name
        self.msix = msix
        self.storage = {i: bytearray(size) for i, size in SIZES.items()}
        self.history: list[tuple[object, ...]] = []
        self.memory: GuestMemory | None = None
        self.sink: IrqSink | None = None
        self.resets = 0
        self.dma_errors: list[DmaError] = []

    @property
    def name(self) -> str:
        return self._name

    def regions(self) -> Sequence[RegionInfo]:
        return [RegionInfo(i, SIZES.get(i, 0), FLAGS.get(i, RegionFlag(0))) for i in range(9)]

    def irqs(self) -> Sequence[IrqInfo]:
        counts = {IrqIndex.INTX: 1, IrqIndex.MSIX: self.msix}
        flags = {IrqIndex.INTX: IrqFlag.EVENTFD | IrqFlag.MASKABLE,
                 IrqIndex.MSIX: IrqFlag.EVENTFD | IrqFlag.NORESIZE}
        return [IrqInfo(i, counts.get(IrqIndex(i), 0), flags.get(IrqIndex(i), IrqFlag(0)))
                for i in range(5)]

    def region_read(self, index: int, offset: int, size: int) -> bytes:
        self.history.append(("read", index, offset, size))
        return bytes(self.storage[index][offset:offset + size])

    def region_write(self, index: int, offset: int, data: bytes) -> None:
        self.history.append(("write", index, offset, bytes(data)))
        self.storage[index][offset:offset + len(data)] = data
        if index == 0:
            self._doorbell(offset)

    def _doorbell(self, offset: int) -> None:
        regs = self.storage[0]
        if offset == REG_MSIX and self.sink is not None:
            self.sink.trigger(IrqIndex.MSIX, struct.unpack_from("<I", regs, REG_MSIX)[0])
        elif offset == REG_INTX and self.sink is not None:
            self.sink.trigger(IrqIndex.INTX, 0)
        elif offset in (REG_DMA_WRITE, REG_DMA_READ):
            addr, length, value = struct.unpack_from("<QIB", regs, offset)
            ok = True
            try:
                if self.memory is None:
                    raise DmaError(addr, length, "not attached")
                if offset == REG_DMA_WRITE:
                    self.memory.write(addr, bytes([value]) * length)
                else:
                    self.storage[2][:length] = self.memory.read(addr, length)
            except DmaError as e:
                self.dma_errors.append(e)
                ok = False
            struct.pack_into("<I", regs, REG_DMA_STATUS, 0 if ok else 1)

    def device_reset(self) -> None:
        self.history.append(("reset",))
        self.resets += 1
        self.storage[0][:] = bytes(len(self.storage[0]))

    def attach(self, memory: GuestMemory, irqs: IrqSink) -> None:
        self.history.append(("attach",))
        self.memory, self.sink = memory, irqs

    def detach(self) -> None:
        self.history.append(("detach",))
        self.memory, self.sink = None, None


T = TypeVar("T")


class Rig:
    """A started server with one fake function, and helpers to reach its loop."""

    def __init__(self, sock_dir: Path, config: ServerConfig | None = None) -> None:
        self.fake = FakeFunction("f0")
        self.thread = ServerThread({"f0": self.fake}, sock_dir, config or ServerConfig())
        self.thread.start()
        self.path = self.thread.paths["f0"]
        self.endpoint = self.thread.server.endpoints["f0"]

    def client(self, timeout: float = 5.0) -> Client:
        return Client.open(self.path, timeout=timeout)

    def call(self, fn: Callable[[], T]) -> T:
        return self.thread.call(fn)

    def wait_listening(self, timeout: float = 5.0) -> None:
        """Until the server has processed a disconnect."""
        deadline = time.monotonic() + timeout
        while self.call(lambda: self.endpoint.state) is not EndpointState.LISTENING:
            if time.monotonic() > deadline:
                raise AssertionError("server did not see the disconnect")
            time.sleep(0.005)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
