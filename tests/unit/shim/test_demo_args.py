"""The demo's arguments are checked against the topology before anything boots."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from eeh_sriov.recovery_demo import Story, StoryConfig, StoryError
from eeh_sriov.topology import DEFAULT_TOPOLOGY, load_topology
from qemu_launcher.assets import GuestAssets

NO_ASSETS = cast(GuestAssets, None)  # the checks come before the assets are used


def test_a_vf_only_error_on_a_vf_no_guest_holds_is_refused_before_the_boot(
        tmp_path: Path) -> None:
    """`demo --kind vf --vf vf9` used to boot three guests, wait for the drivers, then fail
    with the console's "no PE named 'vf9'"; vf3 is a PE but no guest holds it."""
    topo = load_topology(DEFAULT_TOPOLOGY)
    for vf in ("vf9", "vf3", "adapter"):
        with pytest.raises(StoryError, match=f"--vf {vf}: not a VF a guest of .* holds "
                                             r"\(vf0, vf1, vf2\)"):
            Story(StoryConfig(topo, kind="vf", vf=vf), NO_ASSETS, tmp_path)
    Story(StoryConfig(topo, kind="vf", vf="vf2"), NO_ASSETS, tmp_path)
    Story(StoryConfig(topo, kind="adapter", vf="vf9"), NO_ASSETS, tmp_path)  # not used


def test_the_cli_refuses_before_any_set_up(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`demo --kind vf --vf vf9`: one error line, no QEMU or accelerator line, no run
    directory (it used to resolve the accelerator and make runs/<time>-demo-vf first)."""
    from eeh_sriov.__main__ import main
    runs = tmp_path / "runs"
    assert main(["--runs", str(runs), "demo", "--kind", "vf", "--vf", "vf9"]) == 1
    cap = capsys.readouterr()
    assert cap.err.startswith("error: --vf vf9: not a VF") and not cap.out, cap
    assert not runs.exists() or not any(runs.iterdir())


def test_a_topology_of_several_adapters_tells_the_first_adapters_story(
        tmp_path: Path) -> None:
    """Of two adapters the story is nic0's error (its VFs watched, its claim) with nic1's
    VFs the ones that must stay untouched; a VF-only error is its VF's adapter's. The
    permanent failure stays one adapter's story (refused: `up` does it)."""
    topo = load_topology(DEFAULT_TOPOLOGY.parent / "two-adapters.toml")
    story = Story(StoryConfig(topo, kind="adapter"), NO_ASSETS, tmp_path)
    assert story.adapter == "nic0"
    assert sorted(story.vf_names()) == ["nic0.vf0", "nic0.vf1"]
    assert sorted(story.others()) == ["nic1.vf0", "nic1.vf1"]
    vf = Story(StoryConfig(topo, kind="vf", vf="nic1.vf1"), NO_ASSETS, tmp_path)
    assert vf.adapter == "nic1" and sorted(vf.others()) == ["nic0.vf0", "nic0.vf1"]
    with pytest.raises(StoryError, match="--vf vf0: not a VF a guest of .* holds "
                                         r"\(nic0.vf0, nic0.vf1, nic1.vf0, nic1.vf1\)"):
        Story(StoryConfig(topo, kind="vf"), NO_ASSETS, tmp_path)
    with pytest.raises(StoryError, match="several adapters; the permanent failure"):
        Story(StoryConfig(topo, kind="permanent"), NO_ASSETS, tmp_path)
    one = Story(StoryConfig(load_topology(DEFAULT_TOPOLOGY)), NO_ASSETS, tmp_path)
    assert one.adapter == "" and one.others() == {}
