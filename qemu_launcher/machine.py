"""Launch a QEMU guest, talk QMP to it, and always clean up.

    async with Machine(cfg, assets, run_dir=..., command="python3 -c 'import scapy'") as vm:
        result = await vm.wait_exit(timeout=60)

Entering creates the socket directory (named, not created, when the Machine is made, so
the command line is known before and a Machine never entered leaves nothing), starts QEMU
(own session; killed if this process dies), accepts its QMP connection, and waits for the
guest's readiness marker. Leaving stops QEMU (gracefully if all went well, SIGKILL
otherwise: also on Ctrl-C and on test failure) and removes the socket directory. A guest
that does not get ready or does not finish in time raises a GuestError carrying the last
console lines and the artifacts directory.

A Machine goes CREATED -> STARTING -> RUNNING -> STOPPED (`MachineState`), once; QMP
commands, hot-plug, removal and waiting for the guest need RUNNING (`@require`), and a
call in another state raises StateError rather than reaching a QEMU that is not there.
QMP events are awaited through qemu.qmp's event listeners; every event is also logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import functools
import json
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO

from qemu.qmp import EventListener, QMPClient
from qemu.qmp.message import Message

from qemu_launcher.assets import GuestAssets
from qemu_launcher.config import (
    EXIT_MARKER,
    INIT_FAILED_MARKER,
    READY_MARKER,
    CommandLine,
    MachineConfig,
    RunPaths,
    VfioUserDevice,
    build_command,
)
from qemu_launcher.errors import (
    BootTimeout,
    GuestError,
    GuestTimeout,
    QemuExited,
    StateError,
    UnplugRefused,
)
from qemu_launcher.qemu_fixes import VFIO_USER_MSIX_TEARDOWN
from qemu_launcher.snapshot import (
    WAITING_MARKER,
    LaunchChannel,
    SavedState,
    SnapshotError,
    launch_args,
)
from qemu_launcher.sockdir import SocketDir
from qemu_launcher.state import require

# The console is a regular file that QEMU's `file` chardev appends to: a regular file is
# always "readable" to select/epoll, so there is nothing to wait on but its growth. The
# marker wait polls it (every POLL_S: a read of what was appended, usually nothing) and in
# the same loop notices QEMU's exit and a guest that QEMU stopped. QMP events, which do
# have a channel, are awaited through listeners instead.
POLL_S = 0.02
TAIL_LINES = 25
PR_SET_PDEATHSIG = 1
# Every vfio-user-pci released so far (10.1 .. 11.1.3, and upstream master as stored in the
# reference index) aborts when a device with MSI-X is finalized after device_del
# ("memory_region_del_subregion: Assertion `subregion->container == mr'"):
# vfio_user_msix_teardown() removes the PBA subregion from a BAR region that
# object_finalize() has already released. The fix (qemu-devel, October 2025) drops that
# call. So removal of an MSI-X function is allowed only on a QEMU that has the fix:
# applied by qemu_fixes to the Debian binary we know, or declared for a QEMU built with it
# (EEH_QEMU_FIXES=vfio-user-msix-teardown, read by AssetConfig.from_env).
UNPLUG_FIX = VFIO_USER_MSIX_TEARDOWN.name
STOPPED_FOR_GOOD = frozenset({"internal-error", "guest-panicked", "io-error", "shutdown"})


def _child_setup(cpus: frozenset[int]) -> None:  # runs in the child between fork and exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # QEMU dies with its launcher
    if cpus:
        os.sched_setaffinity(0, cpus)  # inherited by every thread QEMU starts


class MachineState(Enum):
    CREATED = "created"  # constructed; QEMU not started
    STARTING = "starting"  # QEMU started, QMP or the guest's readiness pending
    RUNNING = "running"  # guest ready: QMP commands, hot-plug, waiting for its exit
    STOPPED = "stopped"  # QEMU gone (exited, or stopped by us); the machine is done


@dataclass(frozen=True)
class GuestResult:
    status: int
    output: str
    ready_s: float  # QEMU start to readiness marker
    total_s: float  # QEMU start to exit marker


class ConsoleWatcher:
    """Follows console.log as QEMU writes it and remembers where markers appeared."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._pos = 0
        self._partial = b""
        self.lines: list[str] = []
        self.marks: dict[str, tuple[float, str]] = {}

    def poll(self) -> None:
        try:
            with open(self._path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
        except FileNotFoundError:
            return
        if not data:
            return
        self._pos += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        now = time.monotonic()
        for raw in chunks:
            line = raw.decode(errors="replace").rstrip("\r")
            self.lines.append(line)
            for marker in (READY_MARKER, EXIT_MARKER, INIT_FAILED_MARKER, WAITING_MARKER):
                if line.startswith(marker) and marker not in self.marks:
                    self.marks[marker] = (now, line[len(marker):].strip())

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        self.poll()
        extra = [self._partial.decode(errors="replace")] if self._partial else []
        return (self.lines + extra)[-n:]


class Machine:
    """One QEMU guest. Use as an async context manager."""

    def __init__(self, cfg: MachineConfig, assets: GuestAssets, run_dir: Path,
                 repo: Path, command: str | None = None) -> None:
        self.cfg = cfg
        self.assets = assets
        self.command = command
        # The sockets' directory is named now (the command line names the sockets) and
        # created only when the machine starts: a machine never entered leaves nothing.
        self._sock_dir = SocketDir("eeh-vm-")
        self.paths = RunPaths(run_dir=run_dir, sock_dir=self._sock_dir.path, repo=repo)
        # A staged boot (qemu_launcher.snapshot) when the assets keep saved states: the
        # functions are hot-plugged before the go, not on the command line.
        self.saved: SavedState | None = None
        self._launch: LaunchChannel | None = None
        if assets.snapshots is None:
            self.cmdline = build_command(cfg, assets, self.paths)
        else:
            staged = build_command(dataclasses.replace(cfg, vfio_user=()), assets, self.paths)
            self.cmdline = CommandLine(staged.argv + launch_args(self.paths.launch_socket),
                                       staged.env)
            self.saved = SavedState.for_command(assets.snapshots, self.cmdline.argv,
                                                self.cmdline.env)
            self._launch = LaunchChannel(self.paths.launch_socket)
        self.console = ConsoleWatcher(self.paths.console_log)
        self.qmp_client = QMPClient(cfg.name)
        self.proc: asyncio.subprocess.Process | None = None
        self.state = MachineState.CREATED
        self._t0 = 0.0
        self._qmp_log: TextIO | None = None
        self._events_task: asyncio.Task[None] | None = None
        self._vm_stopped = asyncio.Event()
        self.summary: dict[str, Any] = {"name": cfg.name, "accel": cfg.accel,
                                        "qemu": assets.qemu.describe(),
                                        "qemu_removal": assets.qemu.removal(),
                                        "rootfs_lock": assets.rootfs_lock.as_json()}

    # ---- artifacts -------------------------------------------------------------------
    def _log_qmp(self, direction: str, msg: object) -> None:
        if self._qmp_log is not None:
            rec = {"t": round(time.monotonic() - self._t0, 6), "dir": direction, "msg": msg}
            self._qmp_log.write(json.dumps(rec, default=str) + "\n")
            self._qmp_log.flush()

    def show_command(self, argv: tuple[str, ...] | None = None) -> str:
        """`argv` as a shell line; by default the guest's command line as a user runs it
        by hand: not staged (no launch port to wait on), its functions cold-plugged."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.cmdline.env)
        pin = self.cfg.host_cpus  # applied by the launcher itself; taskset is the same
        taskset = f"taskset -c {','.join(map(str, sorted(pin)))} " if pin else ""
        shown = argv or build_command(self.cfg, self.assets, self.paths).argv
        return (env + " " if env else "") + taskset + shlex.join(shown)

    def _error(self, cls: type[GuestError], message: str) -> GuestError:
        return cls(message, self.paths.run_dir, self.console.tail())

    @property
    def _qemu(self) -> asyncio.subprocess.Process:
        if self.proc is None:
            raise StateError(type(self).__name__, "the QEMU process", self.state,
                             (MachineState.STARTING, MachineState.RUNNING))
        return self.proc

    # ---- lifecycle -------------------------------------------------------------------
    @require(MachineState.CREATED)
    async def __aenter__(self) -> Machine:
        self.state = MachineState.STARTING
        try:
            await self._start()
        except BaseException:
            await self._stop(graceful=False)
            raise
        self.state = MachineState.RUNNING
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self._stop(graceful=et is None)

    async def _start(self) -> None:
        p = self.paths
        self._sock_dir.create()
        p.results.mkdir(parents=True, exist_ok=True)
        if self.command is not None:
            (p.results / "guest-command").write_text(self.command + "\n")
            (p.results / "guest-env").write_text(self.cfg.guest_env_script())
        self._qmp_log = open(p.qmp_log, "w")
        self._t0 = time.monotonic()
        if self._launch is None:
            await self._spawn(self.cmdline.argv)
        else:
            await self._launch.start()
            await self._staged_boot()
        await self._wait_marker(READY_MARKER, self.cfg.boot_timeout, BootTimeout,
                                "guest did not become ready", since=self._t0)
        self.summary["ready_s"] = round(self.console.marks[READY_MARKER][0] - self._t0, 3)

    async def _spawn(self, argv: tuple[str, ...]) -> None:
        """Start QEMU with `argv` and accept its QMP connection."""
        p = self.paths
        (p.run_dir / "qemu-cmdline.txt").write_text(self.show_command(argv) + "\n")
        await self.qmp_client.start_server(str(p.qmp_socket))
        env = dict(os.environ) | dict(self.cmdline.env)
        with open(p.qemu_log, "ab") as qlog:
            self.proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=qlog,
                stderr=asyncio.subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=functools.partial(_child_setup, frozenset(self.cfg.host_cpus)))
        self.summary["pid"] = self.proc.pid
        self.summary["host_cpus"] = sorted(self.cfg.host_cpus)
        accept = asyncio.ensure_future(self.qmp_client.accept())
        exited = asyncio.ensure_future(self.proc.wait())
        done, _ = await asyncio.wait({accept, exited}, timeout=30,
                                     return_when=asyncio.FIRST_COMPLETED)
        if accept not in done:
            accept.cancel()
            exited.cancel()
            raise self._error(QemuExited if exited in done else BootTimeout,
                              "QEMU did not open its QMP connection: see qemu.log")
        exited.cancel()
        accept.result()
        self._log_qmp("in", {"greeting": getattr(self.qmp_client.greeting, "_raw", None)})
        self._events_task = asyncio.ensure_future(self._log_events())

    async def _staged_boot(self) -> None:
        """Restore the saved state, or boot to stage 1's wait and save it; then hot-plug
        the functions and say go (qemu_launcher.snapshot)."""
        saved, launch = self.saved, self._launch
        assert saved is not None and launch is not None
        boot: dict[str, object] = {"saved_state": str(saved.path)}
        self.summary["boot"] = boot
        if saved.exists():
            t0 = time.monotonic()
            try:
                await self._spawn(self.cmdline.argv + saved.incoming_args())
                await saved.restore(self._execute, lambda: self._qemu.returncode,
                                    self._t0 + self.cfg.boot_timeout)
                boot.update(how="restored", restore_s=round(time.monotonic() - t0, 3))
            except TimeoutError:  # a slow host, not a bad file: it is kept
                raise self._error(BootTimeout, f"guest did not become ready within "
                                  f"{self.cfg.boot_timeout:g} s (loading {saved.path})") from None
            except (SnapshotError, QemuExited) as e:
                why = str(e).splitlines()[0]
                print(f"qemu_launcher: {self.cfg.name}: the saved state {saved.path} could "
                      f"not be restored ({why}): removed; booting cold", file=sys.stderr)
                boot["restore_failed"] = why
                saved.discard()
                await self._kill_qemu()
                launch.forget()
        if boot.get("how") != "restored":
            await self._cold_to_wait(boot)
        for dev in self.cfg.vfio_user:
            await self._execute("device_add", dev.qdev())
        await launch.go(len(self.cfg.vfio_user))
        boot["go_s"] = round(time.monotonic() - self._t0, 3)

    async def _cold_to_wait(self, boot: dict[str, object]) -> None:
        """Boot the kernel to stage 1's wait and save the state there, unless another
        guest has saved it or is saving it (`boot`: how, save_s or save_failed)."""
        saved = self.saved
        assert saved is not None
        await self._spawn(self.cmdline.argv)
        await self._wait_marker(WAITING_MARKER, self.cfg.boot_timeout, BootTimeout,
                                "guest did not become ready", since=self._t0)
        boot["how"] = "cold"
        boot["wait_s"] = round(time.monotonic() - self._t0, 3)
        if not saved.exists():
            try:
                took = await saved.save(self._execute)
                boot["save_s"] = None if took is None else round(took, 3)
            except SnapshotError as e:
                print(f"qemu_launcher: {self.cfg.name}: guest state not saved ({e}); "
                      "guests of this configuration boot cold", file=sys.stderr)
                boot["save_failed"] = str(e)

    @require(MachineState.CREATED)
    async def save_state(self) -> dict[str, object]:
        """Make this staged guest's saved state if the cache lacks it, and nothing more:
        the kernel boots to stage 1's wait, the state is saved, QEMU is stopped (no
        functions, no go, no command). What it did: `how` "present" (nothing to do),
        "not staged" (the assets keep no saved states) or "cold" with `wait_s` (QEMU
        start -> the wait), `save_s` (None: another guest saved it meanwhile) or
        `save_failed`, and `total_s`. The machine is done afterwards (STOPPED)."""
        boot: dict[str, object] = {"how": "not staged" if self.saved is None else "present"}
        self.summary["boot"] = boot
        if self.saved is None or self._launch is None or self.saved.exists():
            self.state = MachineState.STOPPED
            return boot
        self.state = MachineState.STARTING
        self._sock_dir.create()
        self.paths.results.mkdir(parents=True, exist_ok=True)
        self._qmp_log = open(self.paths.qmp_log, "w")
        self._t0 = time.monotonic()
        try:
            await self._launch.start()
            await self._cold_to_wait(boot)
        finally:
            await self._stop(graceful=False)
        boot["total_s"] = round(time.monotonic() - self._t0, 3)
        return boot

    async def _kill_qemu(self) -> None:
        """A QEMU that failed to restore: gone, with its QMP connection (a fresh client
        for the next)."""
        if self._events_task is not None:
            self._events_task.cancel()
            self._events_task = None
        proc = self.proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(Exception):
            await self.qmp_client.disconnect()
        self.qmp_client = QMPClient(self.cfg.name)
        with contextlib.suppress(FileNotFoundError):
            self.paths.qmp_socket.unlink()
        self._vm_stopped.clear()

    async def _log_events(self) -> None:
        """Every event to qmp.jsonl (the client's all-events listener); waits for particular
        events register listeners of their own (`unplug`)."""
        with contextlib.suppress(asyncio.CancelledError):
            async for event in self.qmp_client.events:
                self._log_qmp("event", dict(event))
                if event["event"] in ("STOP", "GUEST_PANICKED"):
                    self._vm_stopped.set()

    async def _check_stopped(self, what: str) -> None:
        """A guest that QEMU stopped (KVM internal error, panic) will never get further."""
        if not self._vm_stopped.is_set():
            return
        self._vm_stopped.clear()
        try:
            status = await asyncio.wait_for(self._execute("query-status"), 5)
        except Exception:
            return
        state = status.get("status") if isinstance(status, dict) else None
        if state in STOPPED_FOR_GOOD:
            raise self._error(QemuExited, f"{what}: QEMU stopped the guest ({state})")

    async def _wait_marker(self, marker: str, timeout: float, cls: type[GuestError],
                           what: str, since: float | None = None) -> str:
        """Until `marker` is on the console, within `timeout` of `since` (default now)."""
        proc = self._qemu
        deadline = (time.monotonic() if since is None else since) + timeout
        while True:
            self.console.poll()
            if marker in self.console.marks:
                return self.console.marks[marker][1]
            if INIT_FAILED_MARKER in self.console.marks:
                raise self._error(QemuExited, f"{what}: guest init failed: "
                                  f"{self.console.marks[INIT_FAILED_MARKER][1]}")
            if proc.returncode is not None:
                self.console.poll()
                if marker in self.console.marks:
                    return self.console.marks[marker][1]
                raise QemuExited(f"{what}: QEMU exited with status {proc.returncode}",
                                 self.paths.run_dir, self.console.tail(), proc.returncode)
            await self._check_stopped(what)
            if time.monotonic() > deadline:
                raise self._error(cls, f"{what} within {timeout:g} s")
            await asyncio.sleep(POLL_S)

    @require(MachineState.RUNNING)
    async def execute(self, cmd: str, args: dict[str, object] | None = None) -> object:
        """A QMP command, logged to qmp.jsonl with its reply (or error).

        QEMU's error reply raises qemu.qmp's ExecuteError, unchanged (the console passes
        its class and description on); the CLI reports qemu.qmp's errors as one line."""
        return await self._execute(cmd, args)

    async def _execute(self, cmd: str, args: dict[str, object] | None = None) -> object:
        self._log_qmp("out", {"execute": cmd, "arguments": args or {}})
        try:
            reply = await self.qmp_client.execute(cmd, args)
        except Exception as e:
            self._log_qmp("in", {"error": str(e)})
            raise
        self._log_qmp("in", {"return": reply})
        return reply

    @require(MachineState.RUNNING)
    async def hotplug(self, dev: VfioUserDevice) -> None:
        """Attach a vfio-user function to a spare root port (QMP device_add)."""
        await self._execute("device_add", dev.qdev())

    @require(MachineState.RUNNING)
    async def unplug(self, dev: VfioUserDevice, timeout: float = 30.0) -> None:
        """Detach a function (QMP device_del) and wait for QEMU's DEVICE_DELETED event.

        Refused (UnplugRefused) where this QEMU would abort: see UNPLUG_FIX. QemuExited if
        QEMU dies meanwhile; GuestError if the event does not come within `timeout`.
        """
        qemu = self.assets.qemu
        if dev.msix and not qemu.removal_works:
            raise UnplugRefused(dev.id, qemu.version, qemu.removal())
        dev_id = dev.id

        def this_device(event: Message) -> bool:
            data = event.get("data")
            return isinstance(data, dict) and data.get("device") == dev_id

        # registered before device_del, so the event cannot slip by
        deleted = EventListener("DEVICE_DELETED", this_device)
        with self.qmp_client.listen(deleted):
            await self._execute("device_del", {"id": dev_id})
            got = asyncio.ensure_future(deleted.get())
            exited = asyncio.ensure_future(self._qemu.wait())
            try:
                done, _ = await asyncio.wait({got, exited}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                got.cancel()
                exited.cancel()
        if got in done:
            return
        if exited in done:
            raise QemuExited(f"QEMU exited (status {self._qemu.returncode}) while removing "
                             f"{dev_id}", self.paths.run_dir, self.console.tail(),
                             self._qemu.returncode)
        raise self._error(GuestError, f"device {dev_id} not removed in {timeout} s")

    @require(MachineState.RUNNING)
    async def wait_exit(self, timeout: float) -> GuestResult:
        """Wait for the guest command to finish; GuestTimeout if it hangs."""
        status_text = await self._wait_marker(EXIT_MARKER, timeout, GuestTimeout,
                                              "guest command did not finish")
        try:
            status = int(status_text)
        except ValueError:
            raise self._error(GuestError, f"bad exit marker {status_text!r}") from None
        out_file = self.paths.results / "guest-output.log"
        output = out_file.read_text(errors="replace") if out_file.exists() else ""
        proc = self._qemu
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 15)
        if proc.returncode is not None:  # the guest powered off: nothing more to ask of it
            self.state = MachineState.STOPPED
        t_exit = self.console.marks[EXIT_MARKER][0]
        result = GuestResult(status, output, self.summary["ready_s"], t_exit - self._t0)
        self.summary.update(status=status, total_s=round(result.total_s, 3))
        return result

    @property
    def exited(self) -> bool:
        """QEMU has exited (on its own or stopped)."""
        return self.proc is not None and self.proc.returncode is not None

    @property
    def artifacts(self) -> Path:
        """This guest's artifacts: console.log, qemu.log, qmp.jsonl, machine.json, results/."""
        return self.paths.run_dir

    def gone(self) -> str | None:
        """Why this guest will do nothing more, or None while it runs: its command
        finished (qemu/guest-stage2.sh's exit marker: the guest then powers off) or its
        QEMU exited. Reads what the console has appended (on the machine's event loop)."""
        self.console.poll()
        if EXIT_MARKER in self.console.marks:
            return f"its command exited with status {self.console.marks[EXIT_MARKER][1]}"
        if INIT_FAILED_MARKER in self.console.marks:
            return f"its init failed: {self.console.marks[INIT_FAILED_MARKER][1]}"
        if self.exited:
            return f"QEMU exited with status {self._qemu.returncode}"
        return None

    async def wait_qemu_exit(self) -> int:
        """Until QEMU exits, for whatever reason; its exit status."""
        return await self._qemu.wait()

    async def cleanup(self) -> None:
        """QEMU died on its own: reap it, drop the QMP connection, remove the sockets
        (what leaving the `async with` does; doing it again there is harmless)."""
        await self._stop(graceful=False)

    async def _stop(self, graceful: bool) -> None:
        """Stop QEMU and clean up; runs whatever the state (it is the way out of each)."""
        self.state = MachineState.STOPPED
        if self._events_task is not None:
            self._events_task.cancel()
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if graceful:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._execute("quit"), 3)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5)
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        with contextlib.suppress(Exception):
            await self.qmp_client.disconnect()
        if proc is not None:
            self.summary["returncode"] = proc.returncode
        self.console.poll()
        if self._qmp_log is not None:
            self._qmp_log.close()
            self._qmp_log = None
        if self._launch is not None:
            await self._launch.close()
        self._sock_dir.remove()
        with contextlib.suppress(OSError):
            (self.paths.run_dir / "machine.json").write_text(
                json.dumps(self.summary, indent=2) + "\n")
