"""AdapterHost without QEMU: the real server and the Python client over real sockets."""

from __future__ import annotations

import os

import pytest

from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig, NotAttachable
from qemu_launcher.config import MachineConfig
from vfio_user import Client
from vfio_user.contract import RegionIndex


def test_functions_answer_over_vfio_user_and_attach_rule() -> None:
    with AdapterHost(AdapterHostConfig(total_vfs=4, enabled_vfs=2)) as host:
        client = Client.open(host.server.paths["vf1"])
        try:
            ids = int.from_bytes(client.region_read(RegionIndex.CONFIG, 0, 4), "little")
        finally:
            client.close()
        assert ids == 0x10EF1B36

        cfg = host.machine_config(MachineConfig(), ["pf", "vf0"], spare_ports=2)
        assert [d.id for d in cfg.vfio_user] == ["pf", "vf0"]
        assert cfg.root_ports == 4

        with pytest.raises(NotAttachable, match="not enabled"):
            host.device("vf2", "rp2")  # beyond NumVFs
        host.call(lambda: host.adapter.pes.vf(0).freeze("test"))
        with pytest.raises(NotAttachable, match="state 2"):
            host.device("vf0", "rp2")
        assert host.device("vf1", "rp2").id == "vf1"
    assert not host.sock_dir.exists()


def test_device_model_thread_and_its_guests_share_one_cpu_by_default() -> None:
    allowed = os.sched_getaffinity(0)
    with AdapterHost(AdapterHostConfig(enabled_vfs=0)) as host:
        assert host.host_cpus == (max(allowed),)
        assert host.call(lambda: os.sched_getaffinity(0)) == {max(allowed)}
        cfg = host.machine_config(MachineConfig(), ["pf"])
        assert cfg.host_cpus == (max(allowed),)
        # a guest that names its own CPUs keeps them
        own = host.machine_config(MachineConfig(host_cpus=(min(allowed),)), ["pf"])
        assert own.host_cpus == (min(allowed),)
    assert os.sched_getaffinity(0) == allowed  # the caller's thread is never pinned


def test_no_pinning_when_asked() -> None:
    allowed = os.sched_getaffinity(0)
    with AdapterHost(AdapterHostConfig(enabled_vfs=0, host_cpus=())) as host:
        assert host.call(lambda: os.sched_getaffinity(0)) == allowed
        assert host.machine_config(MachineConfig(), ["pf"]).host_cpus == ()
