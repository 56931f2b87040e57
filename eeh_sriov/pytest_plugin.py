"""pytest plugin: a topology in real guests as fixtures (entry point `pytest11: eeh_sriov`).

    import pytest

    @pytest.mark.eeh_topology("topology.toml")                # relative to this file
    @pytest.mark.eeh_guest_command("python3 -m my_driver")      # every guest ...
    @pytest.mark.eeh_guest_command("python3 -m guest_drivers.agent", guest="svc")  # ... but svc
    def test_my_driver_recovers(eeh_system, eeh_console, eeh_timeline):
        eeh_system.wait_drivers_ready()
        t = eeh_console.inject("adapter", "adapter-fatal")
        eeh_timeline.wait_for("recovered", pe="vf0", after=t)
        assert eeh_console.pes()["vf0"]["state"] == 0

Loading it: installed (`pip install .` of a checkout), pytest loads it by its entry point;
from a checkout without installing, `PYTHONPATH=CHECKOUT pytest -p eeh_sriov.pytest_plugin`
(this repository's tests/conftest.py does that for its own tests).

Settings (eeh_sriov.plugin.settings): the checkout guests mount (`--eeh-checkout`, else
`EEH_CHECKOUT`, else the ini option `eeh_checkout`, else the checkout the package is
imported from); where each test's artifacts directory goes (`--eeh-runs`, default
`<rootdir>/runs`).

Markers: `eeh_topology(path)`: the topology, relative to the test file (default: the
shipped one); `eeh_guest_command(cmd)` for every guest, `eeh_guest_command(cmd,
guest=NAME)` or `eeh_guest_command({NAME: cmd, ...})` for some (the closest marker wins;
default: the drivers' agent). Every guest runs its command with EEH_GUEST=<its name>, in
the test's directory, mounted read-only at /mnt/test, with PYTHONPATH=/mnt/test:/mnt/repo
(the checkout is /mnt/repo).

Fixtures:
- `eeh_topology`: the parsed topology (marker, or override the fixture);
- `eeh_system`: the running `RunningSystem` (platform, guests, consoles) on a background
  loop, stopped after the test; `wait_drivers_ready()` fails at once, naming the guest, if
  a guest is gone (its command exited, or its QEMU);
- `eeh_console`: a client of the platform's QMP console (`command`, `inject`, `pes`);
- `eeh_timeline`: the run's timeline, with `wait_for`, `entries` and `claim()`.

Each test's artifacts directory (per guest console.log, qmp.jsonl, machine.json; the
run's events.jsonl, timeline.md, summary.json, uplink.pcap) is named in its failure report.
After collection, when a test uses `eeh_system`, a line gives the checkout, the QEMU, the
accelerator and the root fs's drift from its lock, if any.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from eeh_sriov.plugin.running import (
    ConsoleClient,
    GuestGone,
    PluginTimeout,
    RunningSystem,
    TimelineView,
)
from eeh_sriov.plugin.settings import (
    CHECKOUT_ENV,
    CHECKOUT_INI,
    CHECKOUT_OPTION,
    GUEST_COMMAND_MARKER,
    RUNS_OPTION,
    TOPOLOGY_MARKER,
    Checkout,
    Mark,
    PluginError,
    SettingValues,
    guest_commands,
    resolve_checkout,
    runs_dir,
    topology_path,
)
from eeh_sriov.system import AGENT_COMMAND, asset_config
from eeh_sriov.topology import Topology, TopologyError, load_topology
from qemu_launcher.assets import AssetConfig, GuestAssets, ensure_assets
from qemu_launcher.run import new_run_dir, resolve_accel

__all__ = ["ConsoleClient", "GuestGone", "PluginTimeout", "RunningSystem", "TimelineView"]

RUN_DIRS_ATTR = "eeh_run_dirs"  # an item's artifacts directories (tests/vm/conftest adds too)
_checkout = pytest.StashKey[Checkout | PluginError]()
_assets = pytest.StashKey[tuple[GuestAssets, str, str]]()
_outcome = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("eeh-sriov", "eeh-sriov guests (eeh_sriov.pytest_plugin)")
    group.addoption(CHECKOUT_OPTION, default=None, metavar="DIR",
                    help=f"the eeh-sriov checkout guests mount (over {CHECKOUT_ENV} and the "
                    f"ini option {CHECKOUT_INI})")
    group.addoption(RUNS_OPTION, default=None, metavar="DIR",
                    help="where each test's artifacts directory goes (default: "
                    "<rootdir>/runs)")
    parser.addini(CHECKOUT_INI, "the eeh-sriov checkout guests mount (relative to the ini "
                  f"file; {CHECKOUT_OPTION} and {CHECKOUT_ENV} come first)", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{TOPOLOGY_MARKER}(path): the topology eeh_system "
                            "runs (relative to the test file)")
    config.addinivalue_line("markers", f"{GUEST_COMMAND_MARKER}(cmd, guest=None): what every "
                            "guest (or one, or {name: cmd}) runs; default: the drivers' agent")


def checkout(config: pytest.Config) -> Checkout:
    """The checkout the settings name (read here, at the edge); PluginError if none."""
    if _checkout not in config.stash:
        ini = config.getini(CHECKOUT_INI)
        values = SettingValues(option=config.getoption(CHECKOUT_OPTION),
                               env=os.environ.get(CHECKOUT_ENV),
                               ini=ini if isinstance(ini, str) else None,
                               ini_dir=config.inipath.parent if config.inipath else None,
                               cwd=config.invocation_params.dir)
        try:
            config.stash[_checkout] = resolve_checkout(values)
        except PluginError as e:
            config.stash[_checkout] = e
    found = config.stash[_checkout]
    if isinstance(found, PluginError):
        raise found
    return found


def _assets_and_accel(config: pytest.Config) -> tuple[GuestAssets, str, str]:
    """The guest assets of the checkout and the accelerator (with why), once a session."""
    if _assets not in config.stash:
        cfg: AssetConfig = dataclasses.replace(asset_config(), repo=checkout(config).path)
        assets = ensure_assets(cfg)
        accel, why = asyncio.run(resolve_accel("auto", assets, cfg, _runs(config)))
        config.stash[_assets] = (assets, accel, why)
    return config.stash[_assets]


def _runs(config: pytest.Config) -> Path:
    return runs_dir(config.getoption(RUNS_OPTION), config.rootpath,
                    config.invocation_params.dir)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"eeh-sriov: {checkout(config).describe()}; runs in {_runs(config)}"
    except PluginError as e:
        return str(e)


def pytest_report_collectionfinish(config: pytest.Config,
                                   items: list[pytest.Item]) -> list[str]:
    """QEMU, accelerator and root fs drift, when a collected test boots guests (the
    first session that needs them builds the assets: only then)."""
    if not any("eeh_system" in getattr(i, "fixturenames", ()) for i in items):
        return []
    try:
        assets, accel, why = _assets_and_accel(config)
    except PluginError as e:  # reported again by each test that needs guests
        return [str(e)]
    except Exception as e:
        return [f"eeh-sriov: guests unavailable: {e}"]
    lock = assets.rootfs_lock
    drifts = not lock.locked or bool(lock.drift)
    return [f"eeh-sriov: {assets.qemu.describe()}; accelerator {accel} ({why})"
            + (f"; {lock.summary()}" if drifts else "")]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.when == "call" or report.failed:
        item.stash[_outcome] = report.outcome
    dirs = getattr(item, RUN_DIRS_ATTR, [])
    if report.failed and dirs:
        report.sections.append(("artifacts", "\n".join(str(d) for d in dirs)))


def _fail(e: Exception) -> BaseException:
    """A one-line failure, without the plugin's traceback."""
    return pytest.fail.Exception(str(e), pytrace=False)


@pytest.fixture(scope="session")
def eeh_checkout(request: pytest.FixtureRequest) -> Path:
    try:
        return checkout(request.config).path
    except PluginError as e:
        raise _fail(e) from None


@pytest.fixture(scope="session")
def eeh_assets(request: pytest.FixtureRequest, eeh_checkout: Path) -> GuestAssets:
    return _assets_and_accel(request.config)[0]


@pytest.fixture(scope="session")
def eeh_accel(request: pytest.FixtureRequest, eeh_assets: GuestAssets) -> str:
    return _assets_and_accel(request.config)[1]


@pytest.fixture
def eeh_topology(request: pytest.FixtureRequest) -> Topology:
    marker = request.node.get_closest_marker(TOPOLOGY_MARKER)
    try:
        return load_topology(topology_path(marker.args[0] if marker and marker.args else None,
                                           request.node.path))
    except (PluginError, TopologyError) as e:
        raise _fail(e) from None


@pytest.fixture
def eeh_system(request: pytest.FixtureRequest, eeh_topology: Topology,
               eeh_assets: GuestAssets, eeh_accel: str,
               eeh_checkout: Path) -> Iterator[RunningSystem]:
    marks = [Mark(m.args, m.kwargs) for m in request.node.iter_markers(GUEST_COMMAND_MARKER)]
    try:
        commands = guest_commands(marks, [g.name for g in eeh_topology.guests], AGENT_COMMAND)
    except PluginError as e:
        raise _fail(e) from None
    run_dir = new_run_dir(_runs(request.config), request.node.name.replace("/", "_")[:60])
    dirs = getattr(request.node, RUN_DIRS_ATTR, [])
    dirs.append(run_dir)
    setattr(request.node, RUN_DIRS_ATTR, dirs)  # named in the report if the test fails
    running = RunningSystem(eeh_topology, run_dir, eeh_assets, eeh_accel, commands.__getitem__,
                            checkout=eeh_checkout, test_dir=request.node.path.parent)
    try:
        yield running
    finally:
        running.stop(title=request.node.nodeid,
                     outcome=request.node.stash.get(_outcome, "unknown"))


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
