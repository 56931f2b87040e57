"""A topology brought up in real guests: the platform, one QEMU per guest, the console.

    async with System(topo, run_dir, assets, accel="tcg") as sys_:
        sys_.console.platform_path       # qmp-shell this
        sys_.machines["g1"]              # qemu_launcher.machine.Machine
        sys_.platform.timeline           # events.jsonl

Each guest gets its functions cold-plugged on its own PCIe root ports (function i of the
guest on root port rp<i>, slot i + 1: `query-functions` tells the guest the slot), a
virtio-serial port named `eeh.hcall` connected to its platform channel, and runs
`guest_command(guest)` (by default the drivers' agent). Guests boot in parallel. The
console's sockets live in a short temporary directory; `consoles.json` in the run
directory says where. Leaving the block stops the guests, the console and the platform,
on success, failure, timeout or Ctrl-C.

A guest whose QEMU dies while the system runs (killed, crashed) is cleaned up after at
once, without disturbing the others: `guest-died` in the timeline (exit status, its
functions), its console socket removed (clients closed), QEMU reaped and its sockets
removed, and the platform takes its functions back (`Platform.guest_gone`: each VF it
held is reset and from then on recovered by the platform, as a function whose driver has
no error handlers; the PF is left as it is, since a reset of the adapter would hit every
other guest). Its vfio-user connections and platform channel closed with QEMU: the
server unmapped its memory and closed its eventfds.

If that guest ran the adapter driver, the platform's driver watch decides what follows
(`policy.on_adapter_driver_lost`, hypervisor_shim.pe.driver_watch). Under "restart-guest"
(the default) it asks this System to restart the guest (`_restart`): the same machine
configuration and command, booted again (a guest whose driver is stuck, its QEMU still
running, is killed first); its adapter driver finds the adapter PE frozen or left
recovering at probe and recovers it. `guest-restarting`, `guest-restarted` (or
`guest-restart-failed`, after which the platform recovers the adapter itself) in the
timeline; `restarted` counts restarts per guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.topology import GuestSpec, Topology
from hypervisor_shim.console import Console
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe.names import split
from hypervisor_shim.pe.removal import RemovalHooks
from hypervisor_shim.platform import Platform, PlatformConfig
from qemu_launcher.assets import REPO, AssetConfig, GuestAssets
from qemu_launcher.config import GUEST_CWD, MachineConfig, Share, VfioUserDevice, env_pairs
from qemu_launcher.machine import Machine
from qemu_launcher.sockdir import SocketDir

HCALL_PORT = "eeh.hcall"
# What guests import from the shared checkout (compiled for the guest's python3 first).
GUEST_PACKAGES = ("eeh_abi", "guest_drivers")
# What a staged guest's python3 imports before it is saved (qemu_launcher.preload): the
# agent's imports from the root fs (the checkout's own modules come after the go).
GUEST_PRELOAD = ("guest_drivers.agent", "pyudev")


def settle_heap() -> None:
    """Once the drivers are ready, in a process of ours (the CLI, a benchmark): what
    start-up made lives as long as the run, so it is moved out of the collector's reach
    (`gc.freeze`). Else a full collection, which walks all of it and frees nothing,
    lands in a recovery: 12-25 ms on the platform's loop, measured at 64 VFs
    (docs/reliability.md, "report lines after the release")."""
    gc.collect()
    gc.freeze()


def asset_config() -> AssetConfig:
    """The guest assets' configuration (environment read here: EEH_CACHE_DIR,
    EEH_QEMU_FIXES, EEH_ROOTFS) with this application's guest payload."""
    return AssetConfig.from_env(guest_packages=GUEST_PACKAGES, guest_preload=GUEST_PRELOAD)
AGENT_COMMAND = "python3 -m guest_drivers.agent"


def hcall_args(socket: Path) -> tuple[str, ...]:
    """QEMU arguments for the guest's platform-call port (QEMU connects to `socket`)."""
    return ("-device", "virtio-serial-pci,id=hcallbus",
            "-chardev", f"socket,id=hcall,path={socket}",
            "-device", f"virtserialport,bus=hcallbus.0,chardev=hcall,name={HCALL_PORT}")


class RemovalUnavailable(ShimError):
    """The topology has drivers without error handlers, whose recovery removes and adds
    back their functions (device_del), and this QEMU cannot remove a vfio-user device."""

    def __init__(self, source: str, guests: list[str], why: str) -> None:
        super().__init__(
            f"topology {source}: guest(s) {', '.join(guests)} have handlers = false: "
            "their VFs are recovered by removal and re-adding (device_del), which this "
            f"QEMU cannot do: {why}")
        self.guests = guests


def check_removal(topo: Topology, assets: GuestAssets) -> None:
    """Refuse, before anything starts, a topology whose recovery needs VF removal on a
    QEMU that would abort on it (the VF would stay stranded after an adapter error)."""
    needs = [g.name for g in topo.guests if not g.handlers
             and any(split(fn)[1] != "pf" for fn in g.functions)]
    if needs and not assets.qemu.removal_works:
        raise RemovalUnavailable(topo.source, needs, assets.qemu.removal())


class System:
    def __init__(self, topo: Topology, run_dir: Path, assets: GuestAssets, *,
                 accel: str = "tcg",
                 guest_command: Callable[[GuestSpec], str] | None = None,
                 platform_config: PlatformConfig | None = None,
                 boot_timeout: float = 180.0, repo: Path = REPO,
                 shares: tuple[Share, ...] = (),
                 guest_env: Callable[[GuestSpec], Mapping[str, str]] | None = None,
                 guest_cwd: str = GUEST_CWD) -> None:
        check_removal(topo, assets)
        self.topo = topo
        self.run_dir = run_dir
        self.assets = assets
        self.accel = accel
        self.guest_command = guest_command or (lambda g: AGENT_COMMAND)
        self.boot_timeout = boot_timeout
        # what guests mount (the checkout at /mnt/repo, `shares` at /mnt/<tag>) and the
        # guest command's environment (EEH_GUEST always) and directory
        self.repo = repo
        self.shares = shares
        self.guest_env = guest_env or (lambda g: {})
        self.guest_cwd = guest_cwd
        run_dir.mkdir(parents=True, exist_ok=True)
        cfg = platform_config or topo.platform_config(host_cpus=())
        # function i of a guest is on root port rp<i>, slot i + 1 (qemu_launcher.config)
        slots = {fn: i + 1 for g in topo.guests for i, fn in enumerate(g.functions)}
        self.platform = Platform(cfg, run_dir, slots=slots,
                                 removal_hooks=RemovalHooks(self._on_remove, self._on_add),
                                 restart_guest=self._on_restart)
        # The console's sockets' directory: named now, created on entering (a System never
        # entered leaves nothing), removed on leaving.
        self._console_dir = SocketDir("eeh-console-")
        self.console_dir = self._console_dir.path
        self.console = Console(self.console_dir, self.platform)
        self.machines: dict[str, Machine] = {}
        self._stack = contextlib.AsyncExitStack()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._devices: dict[str, tuple[str, VfioUserDevice]] = {}  # function -> guest, dev
        self._hotplug: dict[str, asyncio.Future[None]] = {}
        self._watchers: list[asyncio.Future[None]] = []
        self._watch_of: dict[str, asyncio.Future[None]] = {}  # guest -> its QEMU's watch
        self._restarts: list[asyncio.Future[None]] = []
        self.restarted: dict[str, int] = {}  # guest -> times restarted
        self._stopping = False
        self.dead: dict[str, int] = {}  # guest -> QEMU's exit status, for guests that died

    async def __aenter__(self) -> System:
        try:
            await self._start()
        except BaseException:
            await self._stop()
            raise
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop()

    async def _configs(self) -> list[tuple[GuestSpec, MachineConfig]]:
        """Each guest's machine configuration (the platform started: its functions'
        devices are asked of the model's loop)."""
        plat = self.platform
        out = []
        for g in self.topo.guests:
            base = MachineConfig(name=g.name, memory_mib=g.memory_mib, cpus=g.cpus,
                                 accel=self.accel, boot_timeout=self.boot_timeout,
                                 extra_args=hcall_args(plat.hcall_path(g.name)),
                                 shares=self.shares, guest_env=env_pairs(self.guest_env(g)),
                                 guest_cwd=self.guest_cwd)
            # blocking (it asks the model's loop whether each function is attachable)
            out.append((g, await asyncio.to_thread(plat.host.machine_config, base,
                                                   list(g.functions))))
        return out

    async def save_states(self) -> dict[str, dict[str, object]]:
        """Instead of entering: make the saved state (qemu_launcher.snapshot) of every
        guest configuration of the topology that the cache lacks, one guest per
        configuration, in parallel, with no functions, drivers or command
        (Machine.save_state), so that the guests of a later System all restore. Per guest
        that made one: what it did (`how` "cold", wait_s, save_s, total_s). A guest
        whose configuration another guest saves, or whose state exists, is not booted.
        The platform runs meanwhile (the configurations name its functions) and is
        stopped after; the System is done."""
        await asyncio.to_thread(self.platform.start)
        try:
            firsts: dict[object, Machine] = {}
            for g, cfg in await self._configs():
                vm = Machine(cfg, self.assets, run_dir=self.run_dir / f"{g.name}-save",
                             repo=self.repo)
                if vm.saved is not None and not vm.saved.exists():
                    firsts.setdefault(vm.saved.path, vm)
            done = await asyncio.gather(*(vm.save_state() for vm in firsts.values()),
                                        return_exceptions=True)
            out: dict[str, dict[str, object]] = {}
            for vm, r in zip(firsts.values(), done, strict=True):
                if isinstance(r, BaseException) and not isinstance(r, Exception):
                    raise r
                # a failed save is reported, not raised: those guests then boot cold
                out[vm.cfg.name] = r if isinstance(r, dict) else {
                    "how": "failed", "error": f"{type(r).__name__}: {r}"}
            return out
        finally:
            await asyncio.to_thread(self.platform.stop)

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        plat = self.platform
        self._console_dir.create()
        await asyncio.to_thread(plat.start)
        await self.console.start()
        pending = []
        for g, cfg in await self._configs():
            for dev in cfg.vfio_user:
                self._devices[dev.id] = (g.name, dev)
            vm = Machine(cfg, self.assets, run_dir=self.run_dir / g.name, repo=self.repo,
                         command=self.guest_command(g))
            pending.append((g.name, vm))
        plat.timeline.record(Source.SHIM, Kind.GUESTS_STARTING,
                             data={"guests": [n for n, _ in pending]})
        results = await asyncio.gather(
            *(self._stack.enter_async_context(vm) for _, vm in pending),
            return_exceptions=True)
        for (name, vm), res in zip(pending, results, strict=True):
            if isinstance(res, BaseException):
                raise res
            self.machines[name] = vm
            plat.timeline.record(Source.SHIM, Kind.GUEST_READY, owner=name,
                                 data={"ready_s": vm.summary.get("ready_s")})
            await self.console.add_guest(name, vm)
            self._start_watch(name, vm)
        self._write_consoles()

    def _start_watch(self, name: str, vm: Machine) -> None:
        fut = asyncio.ensure_future(self._watch(name, vm))
        self._watchers.append(fut)
        self._watch_of[name] = fut

    # ---- a guest whose QEMU dies ------------------------------------------------------
    async def _watch(self, name: str, vm: Machine) -> None:
        status = await vm.wait_qemu_exit()
        if self._stopping:
            return
        await self._guest_died(name, vm, status)

    async def _guest_died(self, name: str, vm: Machine, status: int) -> None:
        self.dead[name] = status
        functions = [fn for fn, (g, _) in self._devices.items() if g == name]
        for fn in functions:  # never hot-plug into a guest that is gone
            del self._devices[fn]
        tl = self.platform.timeline
        tl.record(Source.SHIM, Kind.GUEST_DIED, owner=name,
                  data={"returncode": status, "functions": functions})
        with contextlib.suppress(Exception):
            await self.console.remove_guest(name)
        with contextlib.suppress(Exception):
            await vm.cleanup()
        try:
            await asyncio.to_thread(self.platform.guest_gone, name)
        except Exception as e:
            tl.record(Source.SHIM, Kind.GUEST_CLEANUP_FAILED, owner=name, data={"error": str(e)})
            return
        tl.record(Source.SHIM, Kind.GUEST_CLEANED_UP, owner=name, data={"functions": functions})
        self._write_consoles()

    # ---- the service guest restarted (the platform's restart_guest hook) -------------
    def _on_restart(self, name: str) -> None:  # on the model's thread: never block it
        loop = self._loop
        if loop is None or self._stopping:
            return

        def start() -> None:
            self._restarts.append(asyncio.ensure_future(self._restart(name)))
        loop.call_soon_threadsafe(start)

    async def _restart(self, name: str) -> None:
        """Restart guest `name` (its adapter driver was lost: pe.driver_watch) with the
        same machine configuration and command: QEMU killed if it still runs, the death
        cleaned up after as for any (`_guest_died`), then a new Machine booted (its run
        directory `<name>.restart<n>`); the platform is told the outcome."""
        tl = self.platform.timeline
        old = self.machines.get(name)
        n = self.restarted.get(name, 0) + 1
        tl.record(Source.SHIM, Kind.GUEST_RESTARTING, owner=name,
                  data={"restart": n, "running": old is not None and not old.exited})
        try:
            if old is None:
                raise ShimError(f"no guest {name!r}")
            if not old.exited and old.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(old.proc.pid, signal.SIGKILL)
            watch = self._watch_of.get(name)
            if watch is not None:
                await asyncio.shield(watch)  # its death handled (guest_gone) first
            vm = Machine(old.cfg, self.assets, run_dir=self.run_dir / f"{name}.restart{n}",
                         repo=REPO, command=old.command)
            await self._stack.enter_async_context(vm)
        except Exception as e:
            tl.record(Source.SHIM, Kind.GUEST_RESTART_FAILED, owner=name,
                      data={"restart": n, "error": str(e)[:500]})
            await asyncio.to_thread(self.platform.guest_restarted, name, False,
                                    error=str(e)[:500])
            return
        self.restarted[name] = n
        self.machines[name] = vm
        self.dead.pop(name, None)
        for dev in vm.cfg.vfio_user:
            self._devices[dev.id] = (name, dev)
        await self.console.add_guest(name, vm)
        self._start_watch(name, vm)
        self._write_consoles()
        tl.record(Source.SHIM, Kind.GUEST_RESTARTED, owner=name,
                  data={"restart": n, "ready_s": vm.summary.get("ready_s")})
        await asyncio.to_thread(self.platform.guest_restarted, name, True)

    # ---- functions of drivers without error handlers (the platform's RemovalHooks) ----
    def _on_remove(self, name: str) -> None:  # on the model's thread: never block it
        self._schedule(name, self._unplug(name))

    def _on_add(self, name: str) -> None:
        self._schedule(name, self._plug(name))

    def _schedule(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        if self._loop is None or name not in self._devices:
            coro.close()
            return
        loop = self._loop

        def start() -> None:
            before = self._hotplug.get(name)

            async def chained() -> None:
                if before is not None:
                    with contextlib.suppress(Exception):
                        await before
                await coro
            self._hotplug[name] = asyncio.ensure_future(chained())
        loop.call_soon_threadsafe(start)

    async def _unplug(self, name: str) -> None:
        guest, dev = self._devices[name]
        tl = self.platform.timeline
        try:
            await self.machines[guest].unplug(dev)
            tl.record(Source.SHIM, Kind.DEVICE_DELETED, owner=guest, data={"function": name})
        except Exception as e:
            tl.record(Source.SHIM, Kind.DEVICE_DEL_FAILED, owner=guest,
                      data={"function": name, "error": str(e)})

    async def _plug(self, name: str) -> None:
        guest, dev = self._devices[name]
        tl = self.platform.timeline
        try:
            fresh = await asyncio.to_thread(self.platform.host.device, name, dev.root_port)
            await self.machines[guest].hotplug(fresh)
            tl.record(Source.SHIM, Kind.DEVICE_ADDED, owner=guest, data={"function": name})
        except Exception as e:
            tl.record(Source.SHIM, Kind.DEVICE_ADD_FAILED, owner=guest,
                      data={"function": name, "error": str(e)})

    def how_booted(self) -> str:
        """How the guests started, for a line a user reads: all restored from their saved
        states, or which booted cold (their kernel: the first boot of a configuration,
        which makes its saved state; or saved states off)."""
        hows = {n: str((vm.summary.get("boot") or {}).get("how", "cold-plugged"))
                for n, vm in self.machines.items()}
        cold = sorted(n for n, h in hows.items() if h != "restored")
        if not cold:
            return f"all {len(hows)} guests restored from their saved states"
        made = sorted(n for n, vm in self.machines.items()
                      if (vm.summary.get("boot") or {}).get("save_s") is not None)
        saved = f"; saved state made by {', '.join(made)}" if made else ""
        return f"{len(cold)} of {len(hows)} guests booted cold ({', '.join(cold)}){saved}"

    def _write_consoles(self) -> None:
        info: dict[str, Any] = {"platform": str(self.console.platform_path),
                                "guests": {n: str(self.console.path(n)) for n in self.machines
                                           if n not in self.dead},
                                "events": str(self.run_dir / "events.jsonl")}
        (self.run_dir / "consoles.json").write_text(json.dumps(info, indent=2) + "\n")

    @property
    def stopping(self) -> bool:
        """Tearing down (guests, consoles, platform): do not interrupt it."""
        return self._stopping

    async def _stop(self) -> None:
        self._stopping = True
        self.platform.stopping()  # the guests going now lose no adapter driver
        for fut in [*self._hotplug.values(), *self._watchers, *self._restarts]:
            fut.cancel()
        with contextlib.suppress(Exception):
            await self.console.stop()
        try:
            await self._stack.aclose()
        finally:
            await asyncio.to_thread(self.platform.stop)
            self._console_dir.remove()
