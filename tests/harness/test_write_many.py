"""`FunctionAccess.write32_many` in harness mode: a run of BAR0 writes as one vfio-user
REGION_WRITE_MULTI, on the real platform's server and model. Each write is done in order
as a single REGION_WRITE of it is (a frozen PE drops it the same way), and a bad element
refuses the whole message with a clear error, applying none of it, the connection going on
(vfio_user/README.md)."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest

from eeh_abi import nic
from guest_drivers.driver import MEM_BME
from guest_drivers.platform.base import FunctionGone
from guest_drivers.platform.harness import HarnessFunction
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import PlatformRig, host_config, running

VF_BAR0_SIZE = nic.VF_BAR0_SIZE


def _stats(plat: Platform, name: str) -> tuple[int, int, int]:
    """(messages, replies, posted_errors) of `name`'s session."""
    def look() -> tuple[int, int, int]:
        conn = plat.host.server.server.endpoints[name].connection
        assert conn is not None
        s = conn.session.stats
        return s.messages, s.replies, s.posted_errors
    return plat.call(look)


def _open(rig: PlatformRig, name: str, posted: bool | None = None) -> HarnessFunction:
    fn = HarnessFunction(rig.infos()[name], posted_writes=posted)
    fn.config_write(nic.CFG_COMMAND, 2, MEM_BME)  # memory decoding on
    return fn


def test_a_run_is_one_message_done_in_order(tmp_path: Path) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0")
        try:
            before = _stats(rig.plat, "vf0")
            fn.write32_many([(nic.MTU, 1000), (nic.TX_BASE_LO, 0x2000), (nic.TX_LEN, 16),
                             (nic.MTU, 1400)])  # the last MTU wins: done in order
            assert fn.read64(nic.MTU) & 0xFFFFFFFF == 1400
            assert fn.read32(nic.TX_BASE_LO) == 0x2000 and fn.read32(nic.TX_LEN) == 16
            after = _stats(rig.plat, "vf0")
            # the run (posted: unanswered) and three reads
            assert (after[0] - before[0], after[1] - before[1]) == (4, 3)
            # the same registers written one by one give the same state
            fn.write32_many([(nic.TX_BASE_LO, 0x3000)])  # one write: a REGION_WRITE
            assert fn.read32(nic.TX_BASE_LO) == 0x3000
        finally:
            fn.close()


def test_a_frozen_pe_drops_a_run_as_it_drops_a_write(tmp_path: Path) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0")
        try:
            fn.write32_many([(nic.MTU, 1500), (nic.TX_LEN, 32)])
            assert fn.read32(nic.MTU) == 1500
            pe = rig.model(lambda: rig.plat.adapter.vf(0).pe)
            assert rig.model(lambda: pe.freeze("test"))
            fn.write32_many([(nic.MTU, 1200), (nic.TX_LEN, 8)])
            fn.write32(nic.MTU, 1300)
            assert fn.read32(nic.MTU) == 0xFFFFFFFF  # frozen: reads all-ones
            rig.model(pe.thaw_mmio)
            assert fn.read32(nic.MTU) == 1500 and fn.read32(nic.TX_LEN) == 32
        finally:
            fn.close()


@pytest.mark.parametrize("posted", [False, True])
def test_a_bad_element_refuses_the_run_and_applies_none(
        tmp_path: Path, posted: bool, caplog: pytest.LogCaptureFixture) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0", posted=posted)
        try:
            fn.write32_many([(nic.MTU, 1500), (nic.TX_LEN, 32)])
            before = _stats(rig.plat, "vf0")
            caplog.set_level(logging.INFO, logger="vfio_user")
            run = [(nic.MTU, 1111), (nic.TX_LEN, 4), (VF_BAR0_SIZE, 1)]
            if posted:
                fn.write32_many(run)  # never answered: counted and logged
            else:
                with pytest.raises(FunctionGone) as err:
                    fn.write32_many(run)
                assert f"errno {errno.EFAULT} (EFAULT)" in str(err.value), err.value
            # nothing of it applied; the connection goes on
            assert fn.read32(nic.MTU) == 1500 and fn.read32(nic.TX_LEN) == 32
            after = _stats(rig.plat, "vf0")
            assert after[2] - before[2] == (1 if posted else 0)
            assert any("write 2 of 3" in r.getMessage() for r in caplog.records), \
                [r.getMessage() for r in caplog.records]
        finally:
            fn.close()
