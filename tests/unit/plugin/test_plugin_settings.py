"""The pytest plugin's settings: which checkout (command line > environment > ini > the
package's own checkout), the runs directory, topology paths relative to the test file,
and each guest's command from the markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from eeh_sriov.plugin.settings import (
    CHECKOUT_ENV,
    CHECKOUT_INI,
    CHECKOUT_OPTION,
    BadCheckout,
    BadMarker,
    Mark,
    NoCheckout,
    SettingValues,
    guest_commands,
    resolve_checkout,
    runs_dir,
    topology_path,
)
from eeh_sriov.topology import DEFAULT_TOPOLOGY
from qemu_launcher.assets import BUILD_SCRIPT

AGENT = "python3 -m guest_drivers.agent"


def checkout(path: Path) -> Path:
    (path / BUILD_SCRIPT).parent.mkdir(parents=True)
    (path / BUILD_SCRIPT).write_text("#!/bin/sh\n")
    return path


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    names = ("option", "env", "ini", "package")
    out = {n: checkout(tmp_path / n) for n in names}
    out["cwd"] = tmp_path / "work"
    out["cwd"].mkdir()
    out["plain"] = tmp_path / "plain"
    out["plain"].mkdir()
    return out


def values(d: dict[str, Path], **given: str | None) -> SettingValues:
    return SettingValues(option=given.get("option"), env=given.get("env"),
                         ini=given.get("ini"), ini_dir=d["cwd"], cwd=d["cwd"],
                         package_dir=d["package"])


def test_the_command_line_beats_the_environment_beats_the_ini(dirs: dict[str, Path]) -> None:
    every = {n: str(dirs[n]) for n in ("option", "env", "ini")}
    co = resolve_checkout(values(dirs, **every))
    assert (co.path, co.source) == (dirs["option"], CHECKOUT_OPTION)
    co = resolve_checkout(values(dirs, env=every["env"], ini=every["ini"]))
    assert (co.path, co.source) == (dirs["env"], CHECKOUT_ENV)
    co = resolve_checkout(values(dirs, ini=every["ini"]))
    assert co.path == dirs["ini"] and CHECKOUT_INI in co.source
    co = resolve_checkout(values(dirs))
    assert co.path == dirs["package"] and "imported from" in co.source
    # an empty value is not given
    assert resolve_checkout(values(dirs, option="", env=" ")).path == dirs["package"]


def test_relative_settings_resolve_from_where_they_were_given(tmp_path: Path,
                                                             dirs: dict[str, Path]) -> None:
    ini_dir = tmp_path / "project"
    ini_dir.mkdir()
    v = SettingValues(ini="../ini", ini_dir=ini_dir, cwd=dirs["cwd"],
                      package_dir=dirs["plain"])
    assert resolve_checkout(v).path == dirs["ini"]
    v = SettingValues(option="../option", env="../env", cwd=dirs["cwd"],
                      package_dir=dirs["plain"])
    assert resolve_checkout(v).path == dirs["option"]


def test_a_setting_that_names_no_checkout_is_an_error_naming_it(dirs: dict[str, Path]) -> None:
    with pytest.raises(BadCheckout) as e:  # never skipped for the next setting
        resolve_checkout(values(dirs, option=str(dirs["plain"]), env=str(dirs["env"])))
    assert CHECKOUT_OPTION in str(e.value) and str(dirs["plain"]) in str(e.value)
    with pytest.raises(BadCheckout, match=CHECKOUT_ENV):
        resolve_checkout(values(dirs, env=str(dirs["plain"] / "absent")))


def test_no_checkout_anywhere_is_one_line_naming_the_three_ways(dirs: dict[str, Path]) -> None:
    v = SettingValues(cwd=dirs["cwd"], package_dir=dirs["plain"])
    with pytest.raises(NoCheckout) as e:
        resolve_checkout(v)
    text = str(e.value)
    assert "\n" not in text and str(dirs["plain"]) in text
    assert all(way in text for way in (CHECKOUT_OPTION, CHECKOUT_ENV, CHECKOUT_INI))


def test_runs_go_under_the_projects_rootdir_unless_told(tmp_path: Path) -> None:
    root, cwd = tmp_path / "project", tmp_path / "cwd"
    assert runs_dir(None, root, cwd) == root / "runs"
    assert runs_dir("out", root, cwd) == (cwd / "out").resolve()
    assert runs_dir(str(tmp_path / "abs"), root, cwd) == tmp_path / "abs"


def test_topology_paths_are_relative_to_the_test_file(tmp_path: Path) -> None:
    test_file = tmp_path / "tests" / "test_x.py"
    assert topology_path("topo.toml", test_file) == tmp_path / "tests" / "topo.toml"
    assert topology_path("../t.toml", test_file) == tmp_path / "tests" / ".." / "t.toml"
    assert topology_path(str(tmp_path / "a.toml"), test_file) == tmp_path / "a.toml"
    assert topology_path(None, test_file) == DEFAULT_TOPOLOGY
    with pytest.raises(BadMarker):
        topology_path(3, test_file)


GUESTS = ["svc", "g1", "g2"]


def test_guest_commands_every_guest_one_guest_or_a_dict() -> None:
    assert guest_commands([], GUESTS, AGENT) == dict.fromkeys(GUESTS, AGENT)
    assert guest_commands([Mark(("a",), {})], GUESTS, AGENT) == dict.fromkeys(GUESTS, "a")
    assert guest_commands([Mark(("b",), {"guest": "g1"})], GUESTS, AGENT) == \
        {"svc": AGENT, "g1": "b", "g2": AGENT}
    assert guest_commands([Mark(({"g1": "x", "g2": "y"},), {})], GUESTS, AGENT) == \
        {"svc": AGENT, "g1": "x", "g2": "y"}


def test_the_closest_marker_wins_for_each_guest() -> None:
    # closest first, as pytest's iter_markers gives them
    marks = [Mark(("near-g1",), {"guest": "g1"}), Mark(("far-all",), {})]
    assert guest_commands(marks, GUESTS, AGENT) == \
        {"svc": "far-all", "g1": "near-g1", "g2": "far-all"}
    marks = [Mark(("near-all",), {}), Mark(("far-g1",), {"guest": "g1"})]
    assert guest_commands(marks, GUESTS, AGENT) == dict.fromkeys(GUESTS, "near-all")


@pytest.mark.parametrize("mark, says", [
    (Mark(("x",), {"guest": "g9"}), "no guest g9"),
    (Mark(({"g9": "x"},), {}), "no guest g9"),
    (Mark(("",), {}), "non-empty string"),
    (Mark((["ls"],), {}), "non-empty string"),
    (Mark((), {}), "got args"),
    (Mark(("x", "y"), {}), "got args"),
    (Mark(("x",), {"guests": "g1"}), "keywords"),
    (Mark(({"g1": "x"},), {"guest": "g1"}), "takes no guest="),
])
def test_a_bad_guest_command_marker_is_named(mark: Mark, says: str) -> None:
    with pytest.raises(BadMarker, match=says):
        guest_commands([mark], GUESTS, AGENT)
