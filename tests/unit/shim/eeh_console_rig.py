"""The operator's console over the real platform, for the test_console_* modules: a
`Platform` (device model, PE policy, platform channels, timeline: started in ~10 ms, so
no fake of it is needed) and a `Console` on it, run in one asyncio loop."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hypervisor_shim.console import Console
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry

# An adapter with two VFs; the PF held by "svc", each VF by a guest of its own.
OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
CONFIG = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
ADAPTER, VF0, VF1 = 0x10000, 0x18000, 0x18100  # the PEs' config addresses (docs)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eeh-con-"))  # the session's short temp dir
    yield d
    shutil.rmtree(d, ignore_errors=True)


Body = Callable[[Console, Platform], Awaitable[None]]


def run_console(sock_dir: Path, body: Body, cfg: PlatformConfig = CONFIG,
                **kwargs: Any) -> None:
    """Start a platform and a console on it, run `body`, stop both; fail after 60 s."""
    with Platform(cfg) as plat:
        async def main() -> None:
            console = Console(sock_dir / "console", plat, **kwargs)
            await console.start()
            try:
                await asyncio.wait_for(body(console, plat), 60)
            finally:
                await console.stop()
            assert not list((sock_dir / "console").iterdir()), "sockets left behind"

        asyncio.run(main())


def console_entries(plat: Platform) -> list[Entry]:
    """What the console asked of the platform, as the timeline recorded it."""
    return [e for e in plat.timeline.snapshot() if e.source == "console"]


async def until(cond: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)
