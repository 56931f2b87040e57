"""Harness backend: drivers on the host, reaching their functions over vfio-user.

Each function is a `vfio_user.Client` on the socket `query-functions` names (QEMU's
protocol, the real server), and has its own RAM: a `GuestRam` memfd mapped into the
function's DMA space at bus address 0 (`Client.map_ram`), so a buffer's bus address is
its offset in the memfd. A simple page allocator hands it out (page 0 is never used).
The platform channel is a unix socket (`Channel.unix`). The platform removes and adds
functions of drivers without error handlers with the events `function-removed` /
`function-added` (data `name`).

vfio_user is a host-only package: it is imported here, lazily, and nowhere else in
guest_drivers.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from eeh_abi import nic
from eeh_abi.hcall import Channel, Event
from eeh_abi.vocabulary import Kind
from guest_drivers.platform.base import (
    PAGE,
    Backing,
    DmaAllocator,
    DmaUnavailable,
    FunctionAccess,
    FunctionGone,
    FunctionInfo,
    HotplugCallback,
    PlatformBackend,
)
from guest_drivers.platform.errors import PlatformError

if TYPE_CHECKING:
    from vfio_user import Client, GuestRam

REGION_BAR0 = 0
REGION_CONFIG = 7  # vfio's PCI config region index
DEFAULT_RAM = 8 << 20  # per function; a memfd is sparse: only touched pages cost memory
# `read_many`: reads within this many bytes go as one REGION_READ (the registers between
# are read too: no register of this NIC has a read side effect, docs/registers.md)
READ_SPAN_MAX = 64


class RamPages:
    """Pages of one GuestRam; bus address = offset in the memfd."""

    def __init__(self, ram: GuestRam) -> None:
        self._ram = ram
        self._next = PAGE  # page 0 stays unused: a zero address is always a bug

    def _take(self, size: int) -> tuple[Backing, int, int]:
        size = (size + PAGE - 1) & ~(PAGE - 1)
        if self._next + size > self._ram.size:
            raise DmaUnavailable(f"guest RAM of {self._ram.size} bytes is used up")
        off, self._next = self._next, self._next + size
        return self._ram.view, off, off

    def page(self) -> tuple[Backing, int, int]:
        return self._take(PAGE)

    def contiguous(self, size: int) -> tuple[Backing, int, int]:
        return self._take(size)


class HarnessFunction(FunctionAccess):
    """`posted_writes`: None (the default) posts BAR writes (MMIO, MSI-X table) and waits
    for config-space writes, as QEMU's vfio-user-pci does (its x-no-posted-writes is off
    by default); False waits for every write's reply, so a write is done, for every
    function, when it returns; True posts every write. A posted write is
    answered by nobody; it is handled before anything sent after it on the same socket
    (a read after a write still sees it), but not necessarily before what another
    function's socket carries (a frame another VF sends right after it, say)."""

    def __init__(self, info: FunctionInfo, *, ram_size: int = DEFAULT_RAM,
                 posted_writes: bool | None = None, timeout: float = 10.0,
                 connect_s: float = 5.0) -> None:
        from vfio_user import Client, GuestRam, VfioUserError
        from vfio_user.codec import WRITE_MULTI_MAX

        if info.socket is None:
            raise PlatformError(f"{info.name}: query-functions gave no vfio-user socket")
        self._errors: tuple[type[BaseException], ...] = (VfioUserError, OSError)
        self._posted = posted_writes
        deadline = time.monotonic() + connect_s
        while True:  # the server takes one client at a time: a previous one may be leaving
            try:
                client = Client.open(info.socket, timeout=timeout)
                break
            except self._errors as e:
                if time.monotonic() >= deadline:
                    raise FunctionGone(info.name, f"cannot open {info.socket}: {e}") from e
                time.sleep(0.02)
        self._client: Client = client
        # writes a REGION_WRITE_MULTI carries; 0: the server did not offer it
        self._multi = WRITE_MULTI_MAX if client.server_caps.write_multiple else 0
        try:
            self._ram: GuestRam = GuestRam(ram_size, name=f"eeh-{info.name}")
            try:
                client.map_ram(self._ram)
            except BaseException:
                self._ram.close()
                raise
        except BaseException:
            client.close()
            raise
        super().__init__(info, DmaAllocator(RamPages(self._ram)))
        self.closed = False

    def _gone(self, e: BaseException) -> FunctionGone:
        return FunctionGone(self.name, f"vfio-user: {e}")

    def _read(self, region: int, offset: int, size: int) -> int:
        try:
            return int.from_bytes(self._client.region_read(region, offset, size), "little")
        except self._errors as e:
            raise self._gone(e) from e

    def _write(self, region: int, offset: int, size: int, value: int) -> None:
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        posted = region != REGION_CONFIG if self._posted is None else self._posted
        try:
            self._client.region_write(region, offset, data, posted=posted)
        except self._errors as e:
            raise self._gone(e) from e

    def read32(self, offset: int) -> int:
        return self._read(REGION_BAR0, offset, 4)

    def write32(self, offset: int, value: int) -> None:
        self._write(REGION_BAR0, offset, 4, value)

    def write32_many(self, writes: Sequence[tuple[int, int]]) -> None:
        """The run as one REGION_WRITE_MULTI (QEMU's vfio-user-pci sends its posted
        writes so too), posted or waited for as a BAR write is; the server does them in
        order, each as a REGION_WRITE (vfio_user/README.md). A run longer than the
        message holds goes in several, in order; a server that did not offer
        write_multiple gets the writes one by one."""
        if len(writes) < 2 or not self._multi:
            super().write32_many(writes)
            return
        posted = True if self._posted is None else self._posted
        run = [(REGION_BAR0, off, (v & 0xFFFFFFFF).to_bytes(4, "little")) for off, v in writes]
        try:
            for i in range(0, len(run), self._multi):
                self._client.region_write_multi(run[i:i + self._multi], posted=posted)
        except self._errors as e:
            raise self._gone(e) from e

    def read64(self, offset: int) -> int:
        return self._read(REGION_BAR0, offset, 8)

    def read_many(self, spans: Sequence[tuple[int, int]]) -> list[int]:
        """The reads as one REGION_READ from the lowest offset to the end of the highest
        span when that is at most READ_SPAN_MAX bytes (one round trip), each value cut
        from it; else one by one."""
        if len(spans) < 2:
            return super().read_many(spans)
        lo = min(off for off, _ in spans)
        hi = max(off + size for off, size in spans)
        if hi - lo > READ_SPAN_MAX:
            return super().read_many(spans)
        try:
            data = self._client.region_read(REGION_BAR0, lo, hi - lo)
        except self._errors as e:
            raise self._gone(e) from e
        return [int.from_bytes(data[off - lo:off - lo + size], "little") for off, size in spans]

    def write64(self, offset: int, value: int) -> None:
        self._write(REGION_BAR0, offset, 8, value)

    def msix_read32(self, offset: int) -> int:
        return self._read(nic.MSIX_BAR, offset, 4)

    def msix_write32(self, offset: int, value: int) -> None:
        self._write(nic.MSIX_BAR, offset, 4, value)

    def config_read(self, offset: int, size: int) -> int:
        return self._read(REGION_CONFIG, offset, size)

    def config_write(self, offset: int, size: int, value: int) -> None:
        self._write(REGION_CONFIG, offset, size, value)

    def config_write_many(self, writes: Sequence[tuple[int, int, int]]) -> None:
        """The writes as one REGION_WRITE_MULTI on the config region, waited for as a
        config write is (posted only with posted_writes=True): one round trip, done in
        order when it returns; one by one if the server did not offer write_multiple."""
        if len(writes) < 2 or len(writes) > self._multi:
            super().config_write_many(writes)
            return
        posted = False if self._posted is None else self._posted
        run = [(REGION_CONFIG, off, (v & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
               for off, size, v in writes]
        try:
            self._client.region_write_multi(run, posted=posted)
        except self._errors as e:
            raise self._gone(e) from e

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._client.close()
        self._ram.close()


class HarnessBackend(PlatformBackend):
    mode = "harness"

    def __init__(self, hcall: str, *, ram_size: int = DEFAULT_RAM,
                 posted_writes: bool | None = None, timeout: float = 30.0) -> None:
        super().__init__(Channel.unix(hcall, timeout=timeout))
        self.hcall = hcall
        self.ram_size = ram_size
        self.posted_writes = posted_writes
        self._callbacks: list[HotplugCallback] = []
        self.channel.subscribe(self._on_event)

    def open_function(self, info: FunctionInfo) -> FunctionAccess:
        return HarnessFunction(info, ram_size=self.ram_size, posted_writes=self.posted_writes)

    def watch_hotplug(self, callback: HotplugCallback) -> None:
        self._callbacks.append(callback)

    def _on_event(self, ev: Event) -> None:
        kinds: dict[str, str] = {Kind.FUNCTION_REMOVED: "removed", Kind.FUNCTION_ADDED: "added"}
        kind = kinds.get(ev.name)
        name: Any = ev.data.get("name")
        if kind is None or not isinstance(name, str):
            return
        for cb in list(self._callbacks):
            cb(kind, name)
