"""What every platform backend gives the drivers: one interface, two implementations.

A driver never knows where it runs. It gets:

- a `FunctionAccess` per PCI function it drives: BAR0 (`read32`/`write32`/`read64`/
  `write64`, each one access of exactly that width; `write32_many`, a run of 32-bit
  writes in order, one message in harness mode), the MSI-X BAR (`msix_read32`/
  `msix_write32`), config space (`config_read`/`config_write`), `enable()`, and `dma`,
  a `DmaAllocator` of memory the function can DMA to, each `DmaBuffer` with the bus
  address the device uses;
- a `PlatformBackend`: the platform channel (`channel`, an `eeh_abi.hcall.Channel`),
  the functions this partition owns (`query_functions`, from the platform call
  `query-functions`), `open_function(info)`, and hot-plug notifications
  (`watch_hotplug`).

Backends: `guest_drivers.platform.guest.VmBackend` (inside a QEMU guest: sysfs BARs,
/proc/self/pagemap, the virtio-serial port `eeh.hcall`, pyudev) and
`guest_drivers.platform.harness.HarnessBackend` (on the host: the vfio-user client, a
memfd as the driver's RAM, a unix socket to the platform). Standard library only.
"""

from __future__ import annotations

import abc
import struct
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from guest_drivers.platform.errors import PlatformError

PAGE = 4096
_U16 = struct.Struct("<H")

HotplugCallback = Callable[[str, str], None]  # ("added" | "removed", function name)


class FunctionGone(PlatformError):
    """The function cannot be reached any more (its socket closed, it was removed)."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name}: {why}")
        self.name = name
        self.why = why


class BadFunctionEntry(PlatformError):
    """A `query-functions` entry this driver cannot use."""


class DmaUnavailable(PlatformError):
    """No DMA memory of the asked size/contiguity can be had on this platform."""


@dataclass(frozen=True)
class FunctionInfo:
    """One entry of `query-functions` (docs/platform-calls.md)."""

    name: str
    kind: str  # "pf" or "vf"
    vf: int | None
    addr: int  # config address on the adapter's bus
    pe: int  # PE address
    slot: int | None = None  # VM mode: the guest's PCIe slot of its root port
    socket: str | None = None  # harness mode: the vfio-user socket
    handlers: bool = True  # the platform's view: this owner's drivers have error handlers
    config: Mapping[str, Any] = field(default_factory=dict)  # VF: mac/vlan/mtu/anti_spoof
    adapter: Mapping[str, Any] | None = None  # PF: num_vfs, vf_pes, per-VF settings

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> FunctionInfo:
        def need(key: str, types: tuple[type, ...]) -> Any:
            value = entry.get(key)
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise BadFunctionEntry(f"query-functions entry {entry!r}: bad {key!r}")
            return value

        kind = need("kind", (str,))
        if kind not in ("pf", "vf"):
            raise BadFunctionEntry(f"query-functions entry: unknown kind {kind!r}")
        vf = entry.get("vf")
        if kind == "vf" and (not isinstance(vf, int) or isinstance(vf, bool) or vf < 0):
            raise BadFunctionEntry(f"query-functions entry: a VF needs its number: {entry!r}")
        slot, sock = entry.get("slot"), entry.get("socket")
        config = entry.get("config") or {}
        adapter = entry.get("adapter")
        return cls(
            name=need("name", (str,)), kind=kind, vf=vf if kind == "vf" else None,
            addr=need("addr", (int,)), pe=need("pe", (int,)),
            slot=slot if isinstance(slot, int) and not isinstance(slot, bool) else None,
            socket=sock if isinstance(sock, str) and sock else None,
            handlers=bool(entry.get("handlers", True)),
            config=dict(config) if isinstance(config, Mapping) else {},
            adapter=dict(adapter) if isinstance(adapter, Mapping) else None)


# ------------------------------------------------------------------------ DMA memory
class Backing(Protocol):
    """What DMA memory is made of: an mmap (or anything sliceable and writable)."""

    def __len__(self) -> int: ...
    def __getitem__(self, s: slice, /) -> bytes: ...
    def __setitem__(self, s: slice, v: bytes, /) -> None: ...


class DmaBuffer:
    """A piece of DMA memory: this process's view of it and the device's bus address."""

    __slots__ = ("_mem", "_off", "bus", "size")

    def __init__(self, mem: Backing, offset: int, size: int, bus: int) -> None:
        self._mem = mem
        self._off = offset
        self.size = size
        self.bus = bus

    def __repr__(self) -> str:
        return f"<DmaBuffer bus={self.bus:#x} size={self.size}>"

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError(f"{offset}+{length} outside a {self.size}-byte buffer")
        start = self._off + offset
        return bytes(self._mem[start:start + length])

    def write(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError(f"{offset}+{len(data)} outside a {self.size}-byte buffer")
        start = self._off + offset
        self._mem[start:start + len(data)] = data

    def u16(self, offset: int) -> int:
        start = self._off + offset
        value: int = _U16.unpack(self._mem[start:start + 2])[0]
        return value

    def zero(self) -> None:
        self._mem[self._off:self._off + self.size] = bytes(self.size)


class PageSource(Protocol):
    """Where a DmaAllocator gets memory from."""

    def page(self) -> tuple[Backing, int, int]:
        """A fresh 4 KiB page: (backing, offset of the page in it, bus address)."""
        ...

    def contiguous(self, size: int) -> tuple[Backing, int, int]:
        """`size` bytes contiguous for the device (more than a page)."""
        ...


class DmaAllocator:
    """Hands out DMA buffers; a buffer of up to a page never crosses a page boundary, so
    no physical contiguity across pages is ever assumed (VM mode gets its pages one by
    one). Larger buffers come from `PageSource.contiguous` (harness: the memfd; VM:
    a hugepage, or DmaUnavailable). Thread-safe; nothing is ever freed (drivers allocate
    their rings and buffers once and keep them across resets)."""

    def __init__(self, source: PageSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._page: tuple[Backing, int, int] | None = None
        self._fill = PAGE
        self.allocated = 0

    def alloc(self, size: int, align: int = 16) -> DmaBuffer:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise ValueError("size must be positive and align a power of two")
        with self._lock:
            self.allocated += size
            if size > PAGE:
                mem, off, bus = self._source.contiguous(size)
                return DmaBuffer(mem, off, size, bus)
            start = (self._fill + align - 1) & ~(align - 1)
            if self._page is None or start + size > PAGE:
                self._page = self._source.page()
                start = 0
            mem, off, bus = self._page
            self._fill = start + size
            buf = DmaBuffer(mem, off + start, size, bus + start)
        buf.zero()
        return buf


# ------------------------------------------------------------------------ functions
class ConfigAccess(Protocol):
    def config_read(self, offset: int, size: int) -> int: ...
    def config_write(self, offset: int, size: int, value: int) -> None: ...


class FunctionAccess(abc.ABC):
    """One PCI function as a driver reaches it. Accesses are little-endian and of exactly
    the width named; a frozen or absent function reads all-ones (as the hardware does)."""

    def __init__(self, info: FunctionInfo, dma: DmaAllocator) -> None:
        self.info = info
        self.dma = dma

    @property
    def name(self) -> str:
        return self.info.name

    @abc.abstractmethod
    def read32(self, offset: int) -> int: ...

    @abc.abstractmethod
    def write32(self, offset: int, value: int) -> None: ...

    def write32_many(self, writes: Sequence[tuple[int, int]]) -> None:
        """BAR0 32-bit writes `(offset, value)`, done in the order given, each as
        `write32` does it (a guest's MMIO is one access a register anyway); a backend may
        carry the run in fewer messages (harness: one vfio-user REGION_WRITE_MULTI)."""
        for offset, value in writes:
            self.write32(offset, value)

    @abc.abstractmethod
    def read64(self, offset: int) -> int: ...

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[int]:
        """BAR0 reads `(offset, size)`, size 4 or 8, each as `read32` / `read64` does it
        (a guest: one MMIO load each); a backend may carry them in fewer messages
        (harness: one vfio-user REGION_READ covering them, `HarnessFunction.read_many`).
        The values in the order given; a frozen function reads all-ones in each."""
        return [self.read64(off) if size == 8 else self.read32(off) for off, size in spans]

    @abc.abstractmethod
    def write64(self, offset: int, value: int) -> None: ...

    @abc.abstractmethod
    def msix_read32(self, offset: int) -> int: ...

    @abc.abstractmethod
    def msix_write32(self, offset: int, value: int) -> None: ...

    @abc.abstractmethod
    def config_read(self, offset: int, size: int) -> int: ...

    @abc.abstractmethod
    def config_write(self, offset: int, size: int, value: int) -> None: ...

    def config_write_many(self, writes: Sequence[tuple[int, int, int]]) -> None:
        """Config-space writes `(offset, size, value)`, done in the order given, each as
        `config_write` does it; a backend may carry them in one message (harness: one
        REGION_WRITE_MULTI, waited for as a config write is). Done when it returns."""
        for offset, size, value in writes:
            self.config_write(offset, size, value)

    def enable(self) -> None:  # noqa: B027 - optional: most backends need nothing
        """Whatever the OS needs before the function decodes (sysfs `enable`)."""

    @abc.abstractmethod
    def close(self) -> None: ...


class PlatformBackend(abc.ABC):
    """The platform as one partition's drivers see it."""

    mode = "abstract"

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def query_functions(self) -> list[FunctionInfo]:
        """The functions this partition owns (platform call `query-functions`)."""
        reply = self.channel.call(Call.QUERY_FUNCTIONS)
        if not reply.ok:
            raise PlatformError(f"query-functions failed: {reply.status} {reply.error or ''}")
        entries = reply.get("functions", [])
        if not isinstance(entries, list):
            raise BadFunctionEntry("query-functions: `functions` is not a list")
        return [FunctionInfo.from_entry(e) for e in entries if isinstance(e, Mapping)]

    @abc.abstractmethod
    def open_function(self, info: FunctionInfo) -> FunctionAccess:
        """Reach `info`'s function (FunctionGone/PlatformError if it cannot be reached)."""

    @abc.abstractmethod
    def watch_hotplug(self, callback: HotplugCallback) -> None:
        """Call `callback("removed"|"added", name)` when the platform removes or adds one
        of this partition's functions (from any thread)."""

    def close(self) -> None:
        self.channel.close()
