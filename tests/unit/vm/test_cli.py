"""The command line's own parsing (no guest is started)."""

from __future__ import annotations

import os

import pytest

from hypervisor_shim.__main__ import _parser


def test_demo_host_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    p = _parser()
    assert p.parse_args(["demo"]).host_cpus is None
    assert p.parse_args(["demo", "--host-cpus", "auto"]).host_cpus is None
    assert p.parse_args(["demo", "--host-cpus", "none"]).host_cpus == ()
    listed = ",".join(map(str, reversed(allowed)))
    assert p.parse_args(["demo", "--host-cpus", listed]).host_cpus == tuple(allowed)


@pytest.mark.parametrize("bad", ["x", "", "99999", "-1"])
def test_demo_host_cpus_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["demo", "--host-cpus", bad])
    assert e.value.code == 2
    assert "--host-cpus" in capsys.readouterr().err
