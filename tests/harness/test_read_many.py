"""`FunctionAccess.read_many` and `config_write_many` in harness mode, on the real
platform's server and model: reads within READ_SPAN_MAX bytes are one REGION_READ, each
value what its own read gives (all-ones from a frozen PE); config writes together are one
REGION_WRITE_MULTI, waited for (a reply) as a config write is, done in order; the config
space restore after a PE reset (SavedConfig.restore) is that one message."""

from __future__ import annotations

from pathlib import Path

from eeh_abi import nic
from guest_drivers.driver import ALL_ONES32, MEM_BME
from guest_drivers.platform.harness import READ_SPAN_MAX, HarnessFunction
from guest_drivers.recovery_types import SavedConfig
from hypervisor_shim.platform import Platform
from tests.support.platform_rig import PlatformRig, host_config, running


def _stats(plat: Platform, name: str) -> tuple[int, int]:
    """(messages, replies) of `name`'s session."""
    def look() -> tuple[int, int]:
        conn = plat.host.server.server.endpoints[name].connection
        assert conn is not None
        return conn.session.stats.messages, conn.session.stats.replies
    return plat.call(look)


def _open(rig: PlatformRig, name: str) -> HarnessFunction:
    fn = HarnessFunction(rig.infos()[name])
    fn.config_write(nic.CFG_COMMAND, 2, MEM_BME)  # memory decoding on
    return fn


def _delta(rig: PlatformRig, before: tuple[int, int]) -> tuple[int, int]:
    after = _stats(rig.plat, "vf0")
    return after[0] - before[0], after[1] - before[1]


def test_reads_together_are_one_message_with_each_value(tmp_path: Path) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0")
        try:
            fn.write32_many([(nic.MTU, 1400), (nic.VLAN, int(nic.Vlan.EN) | 7)])
            spans = [(nic.MAC_LO, 8), (nic.MTU, 8), (nic.RESET_COUNT, 4)]
            one_by_one = [fn.read64(nic.MAC_LO), fn.read64(nic.MTU), fn.read32(nic.RESET_COUNT)]
            before = _stats(rig.plat, "vf0")
            got = fn.read_many(spans)
            assert _delta(rig, before) == (1, 1)  # one REGION_READ, answered
            assert got == one_by_one
            assert got[1] == 1400 | (int(nic.Vlan.EN) | 7) << 32
            # in the order given, whatever the offsets' order
            assert fn.read_many([(nic.RESET_COUNT, 4), (nic.MAC_LO, 8)]) == [got[2], got[0]]
            # farther apart than READ_SPAN_MAX: one read each
            far = nic.MAC_LO + READ_SPAN_MAX
            before = _stats(rig.plat, "vf0")
            assert fn.read_many([(nic.MAC_LO, 8), (far, 4)]) == [got[0], fn.read32(far)]
            assert _delta(rig, before) == (3, 3)
        finally:
            fn.close()


def test_a_frozen_pe_reads_all_ones_in_each(tmp_path: Path) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0")
        try:
            pe = rig.model(lambda: rig.plat.adapter.vf(0).pe)
            assert rig.model(lambda: pe.freeze("test"))
            assert fn.read_many([(nic.CTRL, 8), (nic.MAC_HI, 4)]) == [
                (1 << 64) - 1, ALL_ONES32]
        finally:
            fn.close()


def test_config_writes_together_are_one_waited_message(tmp_path: Path) -> None:
    with running(host_config(1, vf_settings={}), tmp_path) as rig:
        fn = _open(rig, "vf0")
        try:
            saved = SavedConfig.save(fn)
            fn.config_write_many([(nic.CFG_COMMAND, 2, 0), (nic.MSIX_MSGCTL, 2, 0)])
            assert fn.config_read(nic.CFG_COMMAND, 2) & MEM_BME == 0
            before = _stats(rig.plat, "vf0")
            assert saved.restore(fn) == {"command": saved.command, "msix_ctl": saved.msix_ctl}
            assert _delta(rig, before) == (1, 1)  # one message, answered: waited for
            assert fn.config_read(nic.CFG_COMMAND, 2) == saved.command
            assert fn.config_read(nic.MSIX_MSGCTL, 2) == saved.msix_ctl
            # in order: the last write of a register wins
            fn.config_write_many([(nic.MSIX_MSGCTL, 2, 0), (nic.MSIX_MSGCTL, 2,
                                                             saved.msix_ctl)])
            assert fn.config_read(nic.MSIX_MSGCTL, 2) == saved.msix_ctl
        finally:
            fn.close()
