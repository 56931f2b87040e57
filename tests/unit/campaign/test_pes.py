"""PE and function names as a campaign reads them, of one adapter or several
(eeh_sriov.campaign.pes)."""

from __future__ import annotations

from eeh_sriov.campaign.pes import adapter_of, adapter_pe, is_adapter_pe, is_vf, order, vf_index


def test_the_unnamed_adapter_and_named_ones() -> None:
    for name in ("adapter", "pf", "vf0", "vf12"):
        assert adapter_of(name) == ""
    for name in ("nic1", "nic1.pf", "nic1.vf0", "nic1.vf12"):
        assert adapter_of(name) == "nic1"
    assert [is_vf(n) for n in ("vf3", "nic1.vf3", "nic1", "pf", "adapter", "nic1.pf")] == [
        True, True, False, False, False, False]
    assert [is_adapter_pe(n) for n in ("adapter", "nic1", "vf3", "nic1.vf3", "pf")] == [
        True, True, False, False, False]
    assert vf_index("nic1.vf12") == 12 and adapter_pe("") == "adapter" and \
        adapter_pe("nic1") == "nic1"


def test_order_is_adapter_by_adapter_then_vfs_by_number() -> None:
    names = ["nic1.vf10", "nic0.vf2", "nic1", "nic1.vf2", "nic0", "nic0.vf10"]
    assert sorted(names, key=order) == ["nic0", "nic0.vf2", "nic0.vf10", "nic1", "nic1.vf2",
                                        "nic1.vf10"]
    assert sorted(["vf10", "adapter", "vf2"], key=order) == ["adapter", "vf2", "vf10"]
