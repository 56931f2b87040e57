"""Where the platform serves its vfio-user clients (issue 22): in harness mode (no
`slots`: the drivers are this host's) every client on the model's loop, one thread, no
GIL and model lock handed over per message; in VM mode (QEMU guests: `slots`) each from
a thread of its own, which shortens a guest's MMIO read; `vfio_user_threads` chooses
either way. The drivers recover the same on both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import host_config, running
from tests.support.waiting import wait_for
from vfio_user.model_loop import serves_threaded
from vfio_user.server import Connection, ThreadedConnection

NVFS = 2


def _threaded(plat: Platform) -> bool:
    return serves_threaded(plat.host.server.loop)


def test_harness_mode_serves_every_client_on_the_loop() -> None:
    with Platform(host_config(NVFS)) as plat:
        assert not _threaded(plat)


def test_vm_mode_serves_each_client_from_a_thread() -> None:
    with Platform(host_config(NVFS), slots={"vf0": 1}) as plat:
        assert _threaded(plat)


@pytest.mark.parametrize("threads", [True, False])
def test_the_config_chooses_either_way(threads: bool) -> None:
    cfg = dataclasses.replace(host_config(NVFS), vfio_user_threads=threads)
    with Platform(cfg, slots={} if not threads else None) as plat:
        assert _threaded(plat) is threads


@pytest.mark.parametrize("threads", [True, False])
def test_drivers_recover_either_way(tmp_path: Path, threads: bool) -> None:
    cfg = dataclasses.replace(host_config(NVFS), vfio_user_threads=threads)
    names = [f"vf{n}" for n in range(NVFS)]
    with running(cfg, tmp_path) as rig:
        plat = rig.plat
        assert len(rig.agent().start()) == NVFS + 1
        eps = plat.host.server.server.endpoints.values()
        kinds = plat.call(lambda: {type(ep.connection) for ep in eps})
        assert kinds == {ThreadedConnection if threads else Connection}
        t0 = plat.timeline.snapshot()[-1].t
        plat.inject_adapter_error("serving")

        def recovered() -> bool:
            return set(names) <= {e.pe for e in plat.timeline.snapshot() if e.t > t0 and (
                e.source, e.kind) == (Source.DRIVER, Kind.RECOVERED)}

        assert wait_for(recovered, 30), "the VFs did not recover"
