"""A PF reset in the middle of a VF's restore (the adapter driver's guest restarted just
after it let the VFs unfreeze: QEMU resets the PF when the new guest attaches it). The
PF's per-VF settings (the admin MAC and VLAN) are cleared until the new PF driver
applies them again, so what the VF read back meanwhile is not its configuration: the
VF driver must wait for "PF reset done" and restore again, and report the configuration
it had before. Real platform in harness mode, drivers built by hand."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from guest_drivers.driver import DriverState
from tests.support.platform_rig import VF_SETTINGS, PlatformRig, host_config, running
from tests.support.waiting import wait_for


@pytest.fixture
def rig() -> Iterator[PlatformRig]:
    with running(host_config(nvfs=4, enabled=3, vf_settings={1: VF_SETTINGS[1]})) as r:
        yield r


def test_a_pf_reset_during_the_restore_is_waited_out_and_the_restore_done_again(
        rig: PlatformRig) -> None:
    services = rig.services()
    pf = rig.pf_driver(services)
    vf = rig.vf_driver(services, 1)
    a = rig.plat.adapter
    before = vf.config()
    assert before["mac"] == VF_SETTINGS[1].mac and before["vlan"] == 100, before
    pf.stop()  # the adapter driver's guest is gone: its function closed
    pf.fn.close()

    fired = threading.Event()

    def mtu_written(old: int, new: int, written: int) -> None:
        # the VF's restore wrote its MTU: now the PF is reset under it (device model
        # thread), before the VF reads its MAC and VLAN back
        if not fired.is_set():
            fired.set()
            a.pf.device_reset()

    rig.model(lambda: a.vf(1).bar0.on_write("MTU", mtu_written))
    rig.model(lambda: a.inject_vf_error(1))
    assert fired.wait(20), rig.steps("vf1")
    assert rig.model(lambda: a.pf_resetting)
    # the VF waits for "PF reset done" (not yet recovered) until a new PF driver is up
    assert not wait_for(lambda: "recovered" in rig.steps("vf1"), 0.5), rig.steps("vf1")
    pf2 = rig.pf_driver(services)  # applies the per-VF settings, writes pf_reset_done
    try:
        assert wait_for(lambda: "recovered" in rig.steps("vf1"), 20), rig.steps("vf1")
        done = rig.details("recovered", "vf1")[-1]
        assert done["config_before"] == before, done
        assert done["config"] == before, done  # not the PF-reset defaults (MAC base+2, no VLAN)
        restored = rig.details("config-restored", "vf1")[-1]
        assert (restored["mac"], restored["vlan"]) == (before["mac"], before["vlan"])
        # (the driver is UP once its recovery has returned, just after the report)
        assert wait_for(lambda: vf.state is DriverState.UP, 10), str(rig.steps("vf1"))
        assert vf.config() == before
    finally:
        vf.stop()
        pf2.stop()
