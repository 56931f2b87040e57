"""Fixtures for tests that boot real QEMU guests (marker `vm`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from eeh_sriov.system import asset_config
from qemu_launcher.assets import REPO, GuestAssets, ensure_assets
from qemu_launcher.config import MachineConfig
from qemu_launcher.run import new_run_dir, resolve_accel

RUNS = REPO / "runs" / "tests"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vm)


@pytest.fixture(scope="session")
def assets() -> GuestAssets:
    return ensure_assets(asset_config())


@pytest.fixture(scope="session")
def accel(assets: GuestAssets) -> str:
    chosen, why = asyncio.run(resolve_accel("auto", assets, asset_config(), RUNS))
    print(f"\nvm tests: {assets.qemu.describe()}; accelerator {chosen} ({why}); "
          f"{assets.rootfs_lock.summary()}")
    return chosen


@pytest.fixture
def removal(assets: GuestAssets) -> None:
    """For tests that need VF removal (device_del): a QEMU that would abort on it fails
    the test with the reason, rather than skipping while the feature is broken."""
    if not assets.qemu.removal_works:
        pytest.fail(f"{assets.qemu.describe()}: {assets.qemu.removal()}", pytrace=False)


@pytest.fixture
def machine_config(accel: str) -> MachineConfig:
    return dataclasses.replace(MachineConfig(name="test"), accel=accel)


@pytest.fixture
def run_dir(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """Make an artifacts directory; it is named in the report if the test fails."""

    def make(label: str = "") -> Path:
        name = request.node.name.replace("/", "_")[:60] + (f"-{label}" if label else "")
        d = new_run_dir(RUNS, name)
        dirs = getattr(request.node, "eeh_run_dirs", [])
        dirs.append(d)
        request.node.eeh_run_dirs = dirs
        return d

    return make
