"""A topology in real guests driven synchronously from a test, and what the run leaves.

    running = RunningSystem(topo, run_dir, assets, accel, commands, checkout=..., test_dir=...)
    running.wait_drivers_ready()         # GuestGone at once if a guest is gone
    ConsoleClient(running.platform_console, running.timeline).inject("adapter", ...)
    running.stop(title="tests/test_x.py::test_y", outcome="passed")

The `System` runs on its own event loop thread. While it runs, the uplink is captured
passively (`eeh_sriov.traffic.UplinkTraffic` with no targets: it sends nothing, keeps
every frame the adapter sends out). `stop` writes what `make demo` writes
(`eeh_sriov.report`): `timeline.md` (the claim's steps after the first adapter injection
through the console, if there was one, and every PE's states), `summary.json` (those
steps, the test's outcome, topology, accelerator, guests, versions) and `uplink.pcap`,
then stops the guests, the console and the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.plugin.settings import GUEST_PYTHONPATH, TEST_DIR_IN_GUEST, TEST_SHARE, PluginError
from eeh_sriov.report import versions, write_summary, write_timeline_md
from eeh_sriov.system import System
from eeh_sriov.topology import Topology
from eeh_sriov.traffic import UplinkTraffic
from hypervisor_shim.claim import Step, check_claim
from hypervisor_shim.readiness import DriversNotReady, guests_gone, wait_drivers_ready_async
from hypervisor_shim.timeline import Entry, Timeline
from qemu_launcher.assets import GuestAssets
from qemu_launcher.config import Share

CAPTURE_HZ = 20.0  # how often the passive uplink capture takes what arrived


class PluginTimeout(PluginError):
    """Something a test waited for did not happen in time."""


class GuestGone(PluginError):
    """A guest is gone (its command exited, or its QEMU) while the test waited on it."""


class RunningSystem:
    """A `System` run on its own event loop thread, driven synchronously from tests."""

    def __init__(self, topo: Topology, run_dir: Path, assets: GuestAssets, accel: str,
                 guest_command: Callable[[str], str], *, checkout: Path | None = None,
                 test_dir: Path | None = None) -> None:
        self.topo = topo
        self.run_dir = run_dir
        self.accel = accel
        self.assets = assets
        self.capture: UplinkTraffic | None = None
        self._entered = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="eeh-system",
                                        daemon=True)
        self._thread.start()
        where: dict[str, Any] = {} if checkout is None else {"repo": checkout}
        if test_dir is not None:  # the test's files in every guest, importable, its cwd
            where.update(shares=(Share(TEST_SHARE, test_dir),), guest_cwd=TEST_DIR_IN_GUEST,
                         guest_env=lambda g: {"PYTHONPATH": GUEST_PYTHONPATH})
        try:
            self.system = System(topo, run_dir, assets, accel=accel,
                                 guest_command=lambda g: guest_command(g.name), **where)
            self.run(self.system.__aenter__())  # which stops what it started if it fails
            self._entered = True
            self.capture = UplinkTraffic(self.system.platform, {}, rate_hz=CAPTURE_HZ)
            self.capture.__enter__()
        except BaseException:
            self._shutdown()
            raise

    def run(self, coro: Any, timeout: float | None = None) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    @property
    def timeline(self) -> Timeline:
        return self.system.platform.timeline

    @property
    def platform_console(self) -> Path:
        return self.system.console.platform_path

    def console(self, guest: str) -> Path:
        return self.system.console.path(guest)

    def wait_drivers_ready(self, timeout: float = 180.0) -> None:
        """Every function held by a guest reported `probe` (hypervisor_shim.readiness).
        A guest that is gone meanwhile (its command exited, or its QEMU) ends the wait at
        once: GuestGone names it, why, its artifacts and its last console lines."""
        __tracebackhide__ = True  # the failure is the test's, not the plugin's
        wait = wait_drivers_ready_async(self.timeline, self.topo.guest_pes, timeout,
                                        interval=0.2, check=guests_gone(self.system.machines))
        try:  # on the system's loop: the check reads the guests' consoles there
            self.run(wait)
        except DriversNotReady as e:
            cls = PluginTimeout if e.timed_out else GuestGone
            raise cls(f"{e}\nartifacts: {self.run_dir}") from None

    def stop(self, title: str = "", outcome: str = "") -> None:
        """Write the run's artifacts (timeline.md, summary.json, uplink.pcap), then stop
        everything; the artifacts' failure never keeps the guests running."""
        try:
            self.write_artifacts(title or self.run_dir.name, outcome)
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            if self.capture is not None:
                self.capture.stop()
            if self._entered:
                self._entered = False
                self.run(self.system.__aexit__(None, None, None), timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def write_artifacts(self, title: str, outcome: str) -> None:
        frames = 0
        if self.capture is not None:
            self.capture.stop()
            with _quiet_scapy():  # an empty capture: scapy warns it cannot tell the link type
                frames = self.capture.write_pcap(self.run_dir / "uplink.pcap")
        entries = self.timeline.snapshot()
        t0, steps = self._claim_steps(entries)
        write_timeline_md(self.run_dir / "timeline.md", title, steps, entries, t0)
        extra = {"test": title, "test_outcome": outcome, "topology": self.topo.source,
                 "accel": self.accel, "timing": self.topo.adapter.timing,
                 "uplink_pcap_frames": frames,
                 "guests": {n: vm.summary for n, vm in self.system.machines.items()},
                 "guests_gone": self.run(self._gone(), timeout=10),
                 "versions": versions({"qemu": self.assets.qemu.describe(),
                                       "rootfs_lock": self.assets.rootfs_lock.summary()})}
        write_summary(self.run_dir / "summary.json", steps=steps, t0=t0, counters={},
                      extra=extra)

    async def _gone(self) -> dict[str, str]:
        """Why each guest that is gone is (on the loop: it reads their consoles)."""
        return {n: why for n, vm in self.system.machines.items() if (why := vm.gone())}

    def _claim_steps(self, entries: list[Entry]) -> tuple[float, list[Step]]:
        """The claim's steps since the first adapter injection through the console (none
        without one), and the time they are counted from."""
        adapters = self.topo.adapter_pes
        inject = next((e for e in entries if e.source == Source.CONSOLE
                       and e.kind == Kind.INJECT and e.pe in adapters), None)
        if inject is None or inject.pe is None:
            return (entries[0].t if entries else time.monotonic()), []
        return inject.t, claim_steps(self.topo, entries, inject.t - 0.001, inject.pe)


@contextlib.contextmanager
def _quiet_scapy() -> Iterator[None]:
    log = logging.getLogger("scapy.runtime")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def claim_steps(topo: Topology, entries: list[Entry], since: float,
                adapter_pe: str | None = None) -> list[Step]:
    """hypervisor_shim.claim's steps of an error of adapter `adapter_pe` (its PE's name;
    default the first adapter's) for `topo`'s guests: the claim is per adapter."""
    pe = adapter_pe or topo.adapter_pes[0]
    pf_owner, vfs = topo.claim_args(pe)
    return check_claim(entries, pf_owner=pf_owner, vfs=vfs, since=since, adapter_pe=pe)


class ConsoleClient:
    """The platform's QMP console, synchronously (qemu.qmp's legacy client)."""

    def __init__(self, path: Path, timeline: Timeline) -> None:
        self._qmp = QEMUMonitorProtocol(str(path))
        self._qmp.connect()
        self._timeline = timeline

    def command(self, name: str, **args: Any) -> Any:
        return self._qmp.cmd(name, **args)

    def inject(self, pe: str, kind: str, **args: Any) -> float:
        """`eeh-inject`; returns the host time just before, for `after=` waits."""
        t = time.monotonic()
        self.command("eeh-inject", pe=pe, kind=kind, **args)
        return t

    def pes(self) -> dict[str, dict[str, Any]]:
        return {p["pe"]: p for p in self.command("query-pes")}

    def close(self) -> None:
        self._qmp.close()


class TimelineView:
    def __init__(self, running: RunningSystem) -> None:
        self._running = running

    @property
    def entries(self) -> list[Entry]:
        return self._running.timeline.snapshot()

    def wait_for(self, kind: str, *, pe: str | None = None, source: str = "driver",
                 after: float = 0.0, timeout: float = 60.0) -> Entry:
        deadline = time.monotonic() + timeout
        while True:
            for e in self.entries:
                if e.kind == kind and e.source == source and e.t > after and \
                        (pe is None or e.pe == pe):
                    return e
            if time.monotonic() > deadline:
                raise PluginTimeout(f"no {source} {kind} for {pe or 'any PE'} within "
                                    f"{timeout:.0f} s; artifacts: {self._running.run_dir}")
            time.sleep(0.05)

    def claim(self, since: float) -> list[Step]:
        return claim_steps(self._running.topo, self.entries, since)

