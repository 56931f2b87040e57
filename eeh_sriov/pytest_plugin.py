"""pytest plugin: a topology in real guests as fixtures (entry point `pytest11: eeh_sriov`).

    import pytest

    @pytest.mark.eeh_topology("my-topology.toml")           # default: the shipped one
    @pytest.mark.eeh_guest_command("python3 -m my_driver")    # default: the drivers' agent
    def test_my_driver_recovers(eeh_system, eeh_console, eeh_timeline):
        eeh_system.wait_drivers_ready()
        t = eeh_console.inject("adapter", "adapter-fatal")
        eeh_timeline.wait_for("recovered", pe="vf0", after=t)
        assert eeh_console.pes()["vf0"]["state"] == 0

Fixtures:
- `eeh_topology`: the parsed topology (marker `eeh_topology(path)`, or override it);
- `eeh_system`: the running `System` (platform, guests, consoles) on a background loop,
  stopped after the test, artifacts under `runs/tests/`;
- `eeh_console`: a client of the platform's QMP console (`command`, `inject`, `pes`);
- `eeh_timeline`: the run's timeline, with `wait_for`, `entries` and `claim()`.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from eeh_sriov.system import AGENT_COMMAND, System, asset_config
from eeh_sriov.topology import DEFAULT_TOPOLOGY, Topology, load_topology
from hypervisor_shim.claim import Step, check_claim
from hypervisor_shim.errors import ShimError
from hypervisor_shim.readiness import DriversNotReady, wait_drivers_ready
from hypervisor_shim.timeline import Entry, Timeline
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.run import new_run_dir, resolve_accel

T = TypeVar("T")


class PluginTimeout(ShimError):
    """Something a test waited for did not happen in time."""


class RunningSystem:
    """A `System` run on its own event loop thread, driven synchronously from tests."""

    def __init__(self, topo: Topology, run_dir: Path, assets: GuestAssets, accel: str,
                 guest_command: Callable[[str], str]) -> None:
        self.topo = topo
        self.run_dir = run_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="eeh-system",
                                        daemon=True)
        self._thread.start()
        self.system = System(topo, run_dir, assets, accel=accel,
                             guest_command=lambda g: guest_command(g.name))
        try:
            self.run(self.system.__aenter__())
        except BaseException:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
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
        """Every function held by a guest reported `probe` (hypervisor_shim.readiness)."""
        try:
            wait_drivers_ready(self.timeline, self.topo.guest_pes, timeout, interval=0.2)
        except DriversNotReady as e:
            raise PluginTimeout(f"drivers not ready: {e.missing}; see {self.run_dir}") from None

    def stop(self) -> None:
        try:
            self.run(self.system.__aexit__(None, None, None), timeout=120)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)


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
                                    f"{timeout:.0f} s; see {self._running.run_dir}")
            time.sleep(0.05)

    def claim(self, since: float) -> list[Step]:
        topo = self._running.topo
        vfs = {f: o for f in topo.all_functions
               if f != "pf" and (o := topo.owner_of(f)) is not None}
        return check_claim(self.entries, pf_owner=topo.owner_of("pf") or "", vfs=vfs,
                           since=since)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "eeh_topology(path): the topology eeh_system runs")
    config.addinivalue_line("markers",
                            "eeh_guest_command(cmd): what each guest runs (default: agent)")


@pytest.fixture(scope="session")
def eeh_assets() -> GuestAssets:
    return ensure_assets(asset_config())


@pytest.fixture(scope="session")
def eeh_accel(eeh_assets: GuestAssets) -> str:
    accel, _ = asyncio.run(resolve_accel("auto", eeh_assets, asset_config(),
                                         REPO / "runs" / "tests"))
    return accel


@pytest.fixture
def eeh_topology(request: pytest.FixtureRequest) -> Topology:
    marker = request.node.get_closest_marker("eeh_topology")
    return load_topology(Path(marker.args[0]) if marker else DEFAULT_TOPOLOGY)


@pytest.fixture
def eeh_system(request: pytest.FixtureRequest, eeh_topology: Topology,
               eeh_assets: GuestAssets, eeh_accel: str) -> Iterator[RunningSystem]:
    marker = request.node.get_closest_marker("eeh_guest_command")
    command = str(marker.args[0]) if marker else AGENT_COMMAND
    run_dir = new_run_dir(REPO / "runs" / "tests", request.node.name.replace("/", "_")[:60])
    dirs = getattr(request.node, "eeh_run_dirs", [])
    dirs.append(run_dir)
    request.node.eeh_run_dirs = dirs  # named in the report if the test fails
    running = RunningSystem(eeh_topology, run_dir, eeh_assets, eeh_accel, lambda g: command)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def eeh_console(eeh_system: RunningSystem) -> Iterator[ConsoleClient]:
    client = ConsoleClient(eeh_system.platform_console, eeh_system.timeline)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def eeh_timeline(eeh_system: RunningSystem) -> TimelineView:
    return TimelineView(eeh_system)
