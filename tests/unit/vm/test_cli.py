"""The command line: its parsing and its error paths (no guest is started)."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest
from qemu.qmp import ExecuteError
from qemu.qmp.message import Message
from qemu.qmp.models import ErrorResponse

import eeh_sriov.__main__ as cli
from device_model.errors import DeviceModelError
from eeh_sriov.__main__ import _parser
from eeh_sriov.transport_demo import ScenarioTimeout
from hypervisor_shim.adapter_host import AdapterHost
from qemu_launcher.assets import GuestAssets, QemuBinary
from qemu_launcher.errors import AssetError
from qemu_launcher.rootfs_lock import LockStatus, PackageDrift
from vfio_user.errors import VfioUserError


def test_demo_host_cpus() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    p = _parser()
    assert p.parse_args(["transport-demo"]).host_cpus is None
    assert p.parse_args(["transport-demo", "--host-cpus", "auto"]).host_cpus is None
    assert p.parse_args(["transport-demo", "--host-cpus", "none"]).host_cpus == ()
    listed = ",".join(map(str, reversed(allowed)))
    assert p.parse_args(["transport-demo", "--host-cpus", listed]).host_cpus == tuple(allowed)


@pytest.mark.parametrize("bad", ["x", "", "99999", "-1"])
def test_demo_host_cpus_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(["transport-demo", "--host-cpus", bad])
    assert e.value.code == 2
    assert "--host-cpus" in capsys.readouterr().err


class _HostWithFrozenVf(AdapterHost):
    """An adapter whose vf0 PE froze before the demo could hand vf0 to its guest."""

    def __enter__(self) -> AdapterHost:
        host = super().__enter__()
        host.call(lambda: host.adapter.pes.vf(0).freeze("test: vf0 froze early"))
        return host


def _no_guest(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The demo up to the point where it would boot a guest, without assets or QEMU."""
    q = QemuBinary(("qemu-system-x86_64",), (), "11.1.3", "host")
    assets = GuestAssets(rootfs=tmp_path, kernel=tmp_path / "k", initramfs=tmp_path / "i",
                         qemu=q)
    monkeypatch.setattr(cli, "ensure_assets", lambda cfg: assets)

    async def tcg(*args: object) -> tuple[str, str]:
        return "tcg", "test"

    monkeypatch.setattr(cli, "resolve_accel", tcg)


def test_not_attachable_is_one_line_on_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_guest(monkeypatch, tmp_path)
    monkeypatch.setattr(cli, "AdapterHost", _HostWithFrozenVf)
    code = cli.main(["--runs", str(tmp_path / "runs"), "transport-demo", "--host-cpus", "none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert re.fullmatch(r"error: vf0 cannot be attached: its PE is in state 2 \(\w+\)",
                        lines[0]), err


@pytest.mark.parametrize("exc", [
    AssetError("no kernel in /nowhere/boot"),
    ExecuteError(ErrorResponse({"error": {"class": "GenericError",
                                          "desc": "Duplicate device ID 'vf2'"}}),
                 Message({"execute": "device_add"}), Message({})),
    ScenarioTimeout("the guest did not write sync-frozen-checked", 120),
    DeviceModelError("the device model refused"),
    VfioUserError("the vfio-user peer closed the socket"),
    PermissionError(13, "Permission denied", "runs"),
])
def test_every_project_error_is_one_line_without_traceback(
    exc: Exception, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(cfg: object) -> GuestAssets:
        raise exc

    monkeypatch.setattr(cli, "ensure_assets", fail)
    for argv in (["demo"], ["transport-demo"], ["vm", "--", "true"]):
        assert cli.main(["--runs", str(tmp_path), *argv]) == 1
        err = capsys.readouterr().err
        assert err.splitlines() == [f"error: {exc}"]


def test_a_drifted_root_fs_is_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    q = QemuBinary(("qemu-system-x86_64",), (), "11.2.0", "host")
    drift = (PackageDrift("qemu-system-x86", "1:11.1.3+ds-1~bpo13+1", "1:11.2.0+ds-1~bpo13+1"),)
    assets = GuestAssets(rootfs=tmp_path, kernel=tmp_path / "k", initramfs=tmp_path / "i",
                         qemu=q, rootfs_lock=LockStatus(drift=drift))
    cli._warn_drift(assets)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("warning: root fs differs from qemu/rootfs.lock in 1 package(s)")
    assert "VF removal works only where the fix vfio-user-msix-teardown" in err[0]
    cli._warn_drift(dataclasses.replace(assets, rootfs_lock=LockStatus()))
    assert capsys.readouterr().err == ""
