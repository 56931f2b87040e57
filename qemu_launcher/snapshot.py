"""Staged boots: a guest booted once to the initramfs and saved, then restored.

A staged guest's command line has no vfio-user functions (a vfio-user-pci device blocks
migration), a virtio-serial port named `eeh.launch` whose host end is the launcher
(`LaunchChannel`), and a `vmgenid` device. Its stage 1 (qemu/initramfs-init.sh) loads
its modules, prints EEH-GUEST-WAITING and waits on the port before it mounts anything
from the host (a mounted 9p share blocks migration). What happens next:

- cold (no saved state for this command line yet): QEMU boots the kernel; at the
  WAITING marker the launcher stops the guest, migrates it to a file (`save`) and lets
  it run on: the first boot of each configuration makes the saved state, at the cost of
  the save (`Machine.summary["boot"]` says how long);
- restored: QEMU starts with `-incoming file:SAVED` and the guest is at once where the
  saved one waited, its kernel boot skipped.

Either way the launcher then hot-plugs the guest's functions on their root ports and
writes `go <functions> <epoch>`: stage 1 sets its clock (a restored guest's is the
save's), waits for those PCI functions to appear and mounts the shares. Guests restored
from one file differ where it matters: their name and environment come after the go
(results/guest-env, as before); vmgenid gets a new GUID in every QEMU, which makes the
restored kernel reseed its RNG (Linux's vmgenid driver: python3's hash seed, os.urandom
differ per guest).

A saved state is valid for exactly one command line up to its per-run parts (`key`:
chardev and network backends, share paths, -name are host-side and may differ on restore; every
device, the kernel, initramfs, kernel arguments, memory and the QEMU binary may not).
One that QEMU cannot load is removed and the guest boots cold (and saves again).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from qemu_launcher.errors import VmError

LAUNCH_PORT = "eeh.launch"
WAITING_MARKER = "EEH-GUEST-WAITING"
SUFFIX = ".mig"
KEEP = 16  # saved states kept in the cache (`SavedState._prune`): ~1.1 GB of disk
POLL_S = 0.02
# Options whose values name host-side things a restore may change (`key`): character
# devices, 9p backends, network backends (the peer's per-run dgram sockets), the name.
HOST_SIDE = frozenset({"-chardev", "-fsdev", "-netdev", "-name"})

# mapped-ram: each page at its own offset in the file, zero pages not written (a sparse
# file), loaded by block rather than page by page
CAPABILITIES: dict[str, object] = {
    "capabilities": [{"capability": "mapped-ram", "state": True}]}

Execute = Callable[[str, dict[str, object] | None], Awaitable[object]]


class SnapshotError(VmError):
    """A guest's state could not be saved to, or restored from, its file."""


def launch_args(socket: Path) -> tuple[str, ...]:
    """QEMU arguments of a staged boot: the launch port (QEMU connects to `socket`) and a
    vmgenid device (a new GUID per QEMU: a restored kernel reseeds its RNG)."""
    return ("-device", "virtio-serial-pci,id=launchbus",
            "-chardev", f"socket,id=launch0,path={socket}",
            "-device", f"virtserialport,bus=launchbus.0,chardev=launch0,name={LAUNCH_PORT}",
            "-device", "vmgenid")


def _host_side(opt: str, value: str) -> str:
    """The guest-visible part of a host-side option's value (its id, if any)."""
    if opt == "-name":
        return ""
    return ",".join(p for p in value.split(",") if p.startswith("id="))


def key(argv: tuple[str, ...], env: tuple[tuple[str, str], ...]) -> str:
    """What a saved state is valid for: the argv with host-side values reduced to their
    ids, QEMU's environment, and the identity (size, mtime) of every file it names."""
    h = hashlib.sha256()
    prev = ""
    for arg in argv:
        part = _host_side(prev, arg) if prev in HOST_SIDE else arg
        h.update(part.encode() + b"\0")
        path = Path(arg)
        if arg.startswith("/") and prev not in HOST_SIDE and path.is_file():
            st = path.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}\0".encode())
        prev = arg
    for k, v in env:
        h.update(f"{k}={v}\0".encode())
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class SavedState:
    """The file a staged guest's state is saved to and restored from."""

    path: Path

    @classmethod
    def for_command(cls, directory: Path, argv: tuple[str, ...],
                    env: tuple[tuple[str, str], ...]) -> SavedState:
        return cls(directory / f"guest-{key(argv, env)}{SUFFIX}")

    def exists(self) -> bool:
        return self.path.is_file()

    def incoming_args(self) -> tuple[str, ...]:
        """QEMU waits for `restore` (the capabilities must be set before the load)."""
        return ("-incoming", "defer")

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def save(self, execute: Execute, timeout: float = 60.0) -> float | None:
        """Stop the guest, migrate it into the file (written aside, renamed when
        complete: a partial file is never restored), let it run on. Seconds taken, or
        None if another guest (of any process) is saving this state or has saved it
        meanwhile: guests booting together save once. SnapshotError if QEMU refused or
        failed (the guest runs on either way)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            if self.exists():
                return None
            return await self._save(execute, timeout)

    async def _save(self, execute: Execute, timeout: float) -> float:
        t0 = time.monotonic()
        for stale in self.path.parent.glob(f"{self.path.name}.tmp-*"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - stale.stat().st_mtime > 600:  # an interrupted save
                    stale.unlink()
        tmp = self.path.with_name(f"{self.path.name}.tmp-{os.getpid()}-{id(self)}")
        await execute("stop", None)
        try:
            await execute("migrate-set-capabilities", CAPABILITIES)
            await execute("migrate", {"uri": f"file:{tmp}"})
            status = await _migration_end(execute, timeout)
            if status.get("status") != "completed":
                raise SnapshotError(f"migration to {tmp} ended {status.get('status')}: "
                                    f"{status.get('error-desc', 'no reason given')}")
            os.replace(tmp, self.path)
            self._prune()
        except SnapshotError:
            raise
        except Exception as e:  # QMP's error reply (a migration blocker, a bad path)
            raise SnapshotError(f"QEMU would not save the guest: {e}") from e
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            await execute("cont", None)
        return time.monotonic() - t0

    async def restore(self, execute: Execute, exited: Callable[[], int | None],
                      deadline: float) -> None:
        """Load the file into a QEMU started with `incoming_args`, then let the guest run
        (it was saved stopped, and a restored guest keeps that state). SnapshotError if
        QEMU exits (it does when the file does not fit its devices) or the load fails;
        TimeoutError if not loaded by `deadline` (time.monotonic)."""
        try:
            await execute("migrate-set-capabilities", CAPABILITIES)
            await execute("migrate-incoming", {"uri": f"file:{self.path}"})
        except Exception as e:
            raise SnapshotError(f"QEMU would not load {self.path}: {e}") from e
        await _loaded(execute, exited, deadline)
        with contextlib.suppress(OSError):
            os.utime(self.path)  # recently used: kept by `_prune`

    def _prune(self) -> None:
        """Keep the KEEP most recently saved or restored states (each is ~70 MB on disk:
        a sparse file of the guest's RAM size); older command lines' go."""
        found = []
        for p in self.path.parent.glob(f"guest-*{SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):
                found.append((p.stat().st_mtime, p))
        for _, p in sorted(found, reverse=True)[KEEP:]:
            for gone in (p, p.with_name(p.name + ".lock")):
                with contextlib.suppress(FileNotFoundError):
                    gone.unlink()


async def _migration_end(execute: Execute, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        got = await execute("query-migrate", None)
        status = got if isinstance(got, dict) else {}
        if status.get("status") in ("completed", "failed", "cancelled"):
            return status
        if time.monotonic() > deadline:
            with contextlib.suppress(Exception):
                await execute("migrate_cancel", None)
            raise SnapshotError(f"migration not done in {timeout:.0f} s: {status}")
        await asyncio.sleep(POLL_S)


async def _loaded(execute: Execute, exited: Callable[[], int | None],
                  deadline: float) -> None:
    while True:
        rc = exited()
        if rc is not None:
            raise SnapshotError(f"QEMU exited with status {rc} while loading (see qemu.log)")
        try:
            got = await execute("query-migrate", None)
        except Exception as e:
            if exited() is not None:
                continue
            raise SnapshotError(f"query-migrate while loading: {e}") from e
        status = got.get("status") if isinstance(got, dict) else None
        if status == "completed":
            break
        if status in ("failed", "cancelled"):
            raise SnapshotError(f"loading {status}: {got}")
        if time.monotonic() > deadline:
            raise TimeoutError("not loaded in time")
        await asyncio.sleep(POLL_S)
    got = await execute("query-status", None)
    if not (isinstance(got, dict) and got.get("running")):
        await execute("cont", None)


class LaunchChannel:
    """The host end of a staged guest's launch port: QEMU connects (again after a
    restart); `go` writes the line stage 1 waits for on the latest connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._server: asyncio.AbstractServer | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.path))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = writer
        self._connected.set()

    def forget(self) -> None:
        """The QEMU connected has gone: wait for the next one."""
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._connected.clear()

    async def go(self, functions: int) -> None:
        """Stage 1 goes on: `functions` hot-plugged PCI functions to wait for; the clock."""
        await self.send(f"go {functions} {int(time.time())}")

    async def send(self, line: str, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            raise SnapshotError(f"QEMU never connected to {self.path}") from None
        assert self._writer is not None
        self._writer.write(line.encode() + b"\n")
        await self._writer.drain()

    async def close(self) -> None:
        self.forget()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
