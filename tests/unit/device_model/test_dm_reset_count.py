"""RESET_COUNT: every function counts the resets it goes through (not CTRL.RST), and the
count survives them, so a driver can tell it was reset behind its back."""

from __future__ import annotations

from dm_helpers import bring_up

from device_model import Adapter, ResetKind
from device_model.nic import registers as R
from device_model.testkit import RamGuest


def test_counts_flr_and_adapter_resets_not_soft_resets(adapter: Adapter,
                                                       guest: RamGuest) -> None:
    pf, (v0, v1) = bring_up(adapter, guest)
    # the PF was never reset; each VF once, when VF Enable made it appear (in reset state)
    assert [d.read(R.RESET_COUNT) for d in (pf, v0, v1)] == [0, 1, 1]
    v0.write(R.MTU, 3000)
    v0.write(R.CTRL, R.Ctrl.RST)  # a soft reset of v0's NIC state: not counted
    assert v0.read(R.RESET_COUNT) == 1 and v0.read(R.MTU) == R.MTU_DEFAULT
    v0.flr()  # fast timing: back at once
    v0.enable()
    assert [d.read(R.RESET_COUNT) for d in (pf, v0, v1)] == [0, 2, 1]
    # an adapter hot reset: the PF once; each VF once by the reset (in which it also
    # vanishes: the PF's reset clears VF Enable), and once more as it reappears
    adapter.pes.adapter.reset(ResetKind.HOT)
    pf.enable()
    assert pf.read(R.RESET_COUNT) == 1
    pf.enable_vfs(2)
    v0.enable()
    v1.enable()
    assert [v0.read(R.RESET_COUNT), v1.read(R.RESET_COUNT)] == [4, 3]
    v0.write(R.RESET_COUNT, 0)  # read-only: the write is dropped
    assert v0.read(R.RESET_COUNT) == 4
