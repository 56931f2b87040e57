"""The adapter as the hypervisor hosts it: the device model on its own loop thread,
every function served over vfio-user, and the rule for handing functions to guests.

    with AdapterHost(AdapterHostConfig(total_vfs=4, enabled_vfs=2)) as host:
        cfg = host.machine_config(MachineConfig(name="g1"), ["pf", "vf0", "vf1"])
        ...
        await vm.hotplug(host.device("vf2", "rp3"))   # refused unless attachable

A function can be attached only while it answers: it exists (VF Enable and NumVFs cover
it) and its PE is not frozen, in reset or unavailable. QEMU reads a function's config
space when it realizes the device; from a frozen or absent function that is all-ones,
and QEMU 11.1 then never finishes `device_add`.

A host is CREATED, SERVING inside its `with` block, then CLOSED (`HostState`); calls
into the device model need SERVING (`@require`, StateError otherwise).

Several adapters: `AdapterHost(cfg0, cfg1, ...)`, each config with its own `name`, `bus`
and uplink, serves every adapter's functions from the one loop thread (one vfio-user
server, sockets named by platform-wide names: "nic1.vf3", hypervisor_shim.pe.names).
One loop rather than one thread per adapter: the platform's threading rule (everything
that touches a model, the PE policy or the platform-call server runs on the one loop
thread) holds as it is, a guest holding functions of two adapters reaches both through
one channel served there, and under the GIL a second thread would add no parallelism
(docs/architecture.md gives the numbers). `host.adapter` is the first adapter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from device_model import Adapter, AdapterConfig, AsyncioClock, PeStateCode, QueueUplink
from device_model.adapter_config import DEFAULT_BASE_MAC, DEFAULT_TOTAL_VFS
from device_model.function import Function
from device_model.reset import ResetTiming
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe.names import qualify, split
from hypervisor_shim.uplink import HostPort, QueueHostPort, TapHostPort, TapUplink
from qemu_launcher.config import MachineConfig, VfioUserDevice
from qemu_launcher.sockdir import SocketDir
from qemu_launcher.state import require
from vfio_user import ServerThread, new_event_loop

T = TypeVar("T")


class AdapterHostError(ShimError):
    """Root of the exceptions of hypervisor_shim.adapter_host."""


class NotAttachable(AdapterHostError):
    """A function that cannot be handed to a guest now (absent, or its PE not normal)."""

    def __init__(self, function: str, reason: str) -> None:
        super().__init__(f"{function} cannot be attached: {reason}")
        self.function = function
        self.reason = reason


DEFAULT_TAP_NAME = "eehup0"  # the uplink's TAP interface unless configured


@dataclass(frozen=True)
class AdapterHostConfig:
    # Defaults are the adapter's (device_model.adapter_config), every VF enabled.
    total_vfs: int = DEFAULT_TOTAL_VFS
    enabled_vfs: int = DEFAULT_TOTAL_VFS  # the platform enables this many VFs at start
    timing: ResetTiming = ResetTiming.FAST
    # Host CPUs for the device model's thread and the guests it serves. None: one CPU,
    # shared (colocated_cpu); (): no pinning. Every MMIO read is a round trip between
    # QEMU's vCPU thread, its vfio-user thread and ours; on these machines a wake-up on
    # another CPU costs ~3x one on the same CPU (make bench: bench.guest_mmio).
    host_cpus: tuple[int, ...] | None = None
    # The adapter's uplink: "queue" (in-process) or "tap" (a TAP interface named
    # tap_name on the host: hypervisor_shim.uplink; needs root).
    uplink: str = "queue"
    tap_name: str = DEFAULT_TAP_NAME
    # Several adapters (hypervisor_shim.pe.names): the adapter's name ("" for the only,
    # unnamed one), its bus (PE addresses carry it: distinct per adapter) and base MAC.
    name: str = ""
    bus: int = 1
    base_mac: bytes = DEFAULT_BASE_MAC
    # Each vfio-user client served from a thread of its own (vfio_user.model_loop: a
    # QEMU guest's MMIO read, one round trip at a time, is answered without the loop's
    # turn), or False: every client on the model's loop (one thread: no GIL and model
    # lock handed over per message; a harness's drivers, whose restores come in runs of
    # accesses, cost the platform ~20 % less CPU so). With several adapters, `cfg`'s.
    client_threads: bool = True


class HostState(Enum):
    CREATED = "created"  # adapter built, server not started
    SERVING = "serving"  # every function served over vfio-user
    CLOSED = "closed"  # server stopped, sockets removed


def colocated_cpu() -> tuple[int, ...]:
    """The CPU shared by the device model and its guests: the highest one allowed."""
    return (max(os.sched_getaffinity(0)),)


class AdapterHost:
    """Owns the Adapters, their uplinks and the vfio-user server thread."""

    def __init__(self, cfg: AdapterHostConfig, *more: AdapterHostConfig) -> None:
        """`more`: further adapters (each named, on its own bus); host_cpus is `cfg`'s."""
        self.cfg = cfg
        self.configs = (cfg, *more)
        if len({c.name for c in self.configs}) != len(self.configs) or \
                len({c.bus for c in self.configs}) != len(self.configs) or \
                (more and not all(c.name for c in self.configs)):
            raise AdapterHostError("several adapters need distinct names and buses")
        # a ModelLoop serves each vfio-user client from a thread of its own; a plain
        # loop serves them all on itself
        loop = new_event_loop() if cfg.client_threads else asyncio.new_event_loop()
        self.adapters: dict[str, Adapter] = {}
        self.uplinks: dict[str, QueueUplink] = {}
        self.taps: dict[str, TapUplink] = {}
        try:
            for c in self.configs:
                self._build(c, loop)
        except BaseException:
            for tap in self.taps.values():
                tap.close()
            raise
        self.adapter = self.adapters[cfg.name]
        self.uplink = self.uplinks[cfg.name]
        self.tap: TapUplink | None = self.taps.get(cfg.name)
        # The sockets' directory: named now, created on entering (a host never entered
        # leaves nothing), removed on leaving.
        self._sock_dir = SocketDir("eeh-adapter-")
        self.sock_dir = self._sock_dir.path
        functions = {qualify(name, f.name): f for name, a in self.adapters.items()
                     for f in a.functions()}
        self.host_cpus = colocated_cpu() if cfg.host_cpus is None else cfg.host_cpus
        self.server = ServerThread(functions, self.sock_dir, loop=loop,
                                   cpus=frozenset(self.host_cpus))
        self.state = HostState.CREATED

    def _build(self, c: AdapterHostConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.uplinks[c.name] = QueueUplink()
        if c.uplink == "tap":
            self.taps[c.name] = TapUplink.first_free(c.tap_name, loop)
        adapter = Adapter(AdapterConfig(total_vfs=c.total_vfs, timing=c.timing, bus=c.bus,
                                        base_mac=c.base_mac),
                          clock=AsyncioClock(loop),
                          uplink=self.taps.get(c.name) or self.uplinks[c.name])
        if c.enabled_vfs:
            adapter.pf.enable_vfs(c.enabled_vfs)
        self.adapters[c.name] = adapter

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The model's loop; after a stall (`ServerThread.abandon`), the loop that took
        its place for the channels and the console."""
        return self.server.loop

    @require(HostState.CREATED)
    def __enter__(self) -> AdapterHost:
        try:
            self._sock_dir.create()
            self.server.start()
        except BaseException:
            self.state = HostState.CLOSED
            for tap in self.taps.values():
                tap.close()
            self._sock_dir.remove()
            raise
        self.state = HostState.SERVING
        return self

    def __exit__(self, *exc: object) -> None:
        self.state = HostState.CLOSED
        self.server.stop()
        for tap in self.taps.values():
            tap.close()
        self._sock_dir.remove()

    def host_port(self, adapter: str | None = None) -> HostPort:
        """The host's end of an adapter's uplink (for traffic and captures): `adapter`'s
        by name, the first adapter's by default."""
        name = self.cfg.name if adapter is None else adapter
        if name not in self.adapters:
            raise AdapterHostError(f"no adapter named {name!r} ({', '.join(self.adapters)})")
        tap = self.taps.get(name)
        if tap is not None:
            return TapHostPort(tap.name)
        return QueueHostPort(self.uplinks[name], self.call)

    def function(self, name: str) -> Function:
        """A function by its platform-wide name ("vf3", "nic1.vf3"); KeyError if none."""
        adapter, local = split(name)
        if adapter not in self.adapters:
            raise KeyError(name)
        return self.adapters[adapter].function(local)

    @require(HostState.SERVING)
    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the device model's loop thread (the only thread that may touch it)."""
        return self.server.call(fn)

    @require(HostState.SERVING)
    async def call_async(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Await `fn` run on the device model's loop thread, from another event loop: no
        worker thread, the caller's loop goes on meanwhile. On the model's own loop (a
        coroutine run there), `fn` runs at once."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            return fn()
        result: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not result.set_running_or_notify_cancel():
                return  # the caller gave up (cancelled, timed out): do nothing
            try:
                result.set_result(fn())
            except BaseException as e:
                result.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return await asyncio.wait_for(asyncio.wrap_future(result), timeout)

    def _check(self, name: str) -> Function:
        if self.server.died is not None:
            raise NotAttachable(name, f"the device model died ({self.server.died!r})")
        try:
            fn = self.function(name)
        except KeyError:
            raise NotAttachable(name, "the adapter has no such function") from None
        if not fn.exists:
            raise NotAttachable(name, "the function is not enabled (VF Enable / NumVFs)")
        code = fn.pe.status().code
        if code is not PeStateCode.NORMAL:
            raise NotAttachable(name, f"its PE is in state {int(code)} ({code.name})")
        return fn

    def device(self, name: str, root_port: str) -> VfioUserDevice:
        """The vfio-user device for function `name`, if it can be attached now
        (NotAttachable otherwise)."""
        self.call(lambda: self._check(name))
        return VfioUserDevice(id=name, socket=self.server.paths[name], root_port=root_port)

    def machine_config(self, base: MachineConfig, names: Sequence[str],
                       spare_ports: int = 1) -> MachineConfig:
        """`base` with `names` cold-plugged on root ports rp0.. and spare ports after; the
        guest runs on the device model's CPUs unless `base` names its own."""
        devs = tuple(self.device(n, f"rp{i}") for i, n in enumerate(names))
        return dataclasses.replace(base, root_ports=len(names) + spare_ports, vfio_user=devs,
                                   host_cpus=base.host_cpus or self.host_cpus)
