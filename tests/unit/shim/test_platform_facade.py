"""The Platform facade's threading rule (hypervisor_shim/platform.py): awaited from
another loop, a request runs on the device model's loop thread without a worker thread;
what others give the platform (slots, removal hooks) is given at construction, and its
callbacks run on the model's loop thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from eeh_abi.hcall import Channel
from hypervisor_shim.pe.removal import RemovalHooks
from hypervisor_shim.platform import Platform, PlatformConfig

CFG = PlatformConfig(total_vfs=2, enabled_vfs=2, owners={"pf": "svc", "vf0": "g1"})
MODEL_THREAD = "vfio-user-server"  # the device model's loop thread (vfio_user.ServerThread)


class NoWorkers(ThreadPoolExecutor):
    """A loop's default executor that refuses work: asyncio.to_thread fails on it."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise AssertionError("a worker thread was asked for")


def test_awaited_requests_run_on_the_model_thread_without_a_worker() -> None:
    with Platform(CFG) as plat:
        async def main() -> list[str]:
            asyncio.get_running_loop().set_default_executor(NoWorkers())
            where = [await plat.host.call_async(lambda: threading.current_thread().name)]
            await plat.query_pes()
            await plat.inject("vf0", "vf-error")
            await plat.reset_pe("vf0")
            await plat.error_log("vf0")
            await plat.set_policy(max_freezes=7)
            assert (await plat.query_policy()).max_freezes == 7
            return where
        assert asyncio.run(main()) == [MODEL_THREAD]


def test_slots_are_given_at_construction_and_read_only() -> None:
    with Platform(CFG, slots={"pf": 1, "vf0": 2}) as plat:
        listing = {f["name"]: f["slot"] for f in plat.call(lambda: plat.directory("g1"))}
        assert listing == {"vf0": 2}
        with pytest.raises(TypeError):
            plat.slots["vf0"] = 9  # type: ignore[index]


def test_removal_hooks_are_given_at_construction_and_called_on_the_model_thread() -> None:
    calls: list[tuple[str, str, str]] = []
    hooks = RemovalHooks(
        on_remove=lambda n: calls.append(("remove", n, threading.current_thread().name)),
        on_add=lambda n: calls.append(("add", n, threading.current_thread().name)))
    with Platform(CFG, removal_hooks=hooks) as plat:
        with Channel.unix(str(plat.hcall_path("g1")), timeout=5) as g1:
            r = g1.call("register", addr=0x18000, driver="no-handlers", handlers=False)
            assert r.status == 0, r
        plat.inject_vf_error(0, "a VF whose driver has no error handlers")
        deadline = time.monotonic() + 5
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls == [("remove", "vf0", MODEL_THREAD), ("add", "vf0", MODEL_THREAD)]
