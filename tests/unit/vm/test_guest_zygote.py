"""The zygote's decisions (which guest commands it runs itself) and its protocol, run
on the host: a real zygote process on real pipes and a FIFO (qemu_launcher.guest_zygote;
in a guest, tests/vm/test_zygote_vm.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qemu_launcher.assets import REPO
from qemu_launcher.guest_zygote import ZygoteError, parse_env, plan

PYTHON = os.path.realpath(sys.executable)


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    (d / "python3").symlink_to(PYTHON)
    other = d.parent / "other"
    other.mkdir()
    (other / "python3").write_text("#!/bin/sh\n")
    (other / "python3").chmod(0o755)
    return d


def test_a_python3_m_command_is_planned_with_its_words(bin_dir: Path) -> None:
    env = {"PATH": str(bin_dir), "PYTHONPATH": "/mnt/repo", "EEH_GUEST": "g1"}
    p = plan("python3 -m guest_drivers.agent --traffic 10 --peers '02:00:00:00:00:01'\n",
             env, "/mnt/repo", PYTHON)
    assert (p.module, p.args) == ("guest_drivers.agent",
                                 ("--traffic", "10", "--peers", "02:00:00:00:00:01"))
    assert p.argv[:2] == ("python3", "-m") and p.env == env and p.cwd == "/mnt/repo"


@pytest.mark.parametrize(("command", "why"), [
    ("sh -c 'python3 -m x'", "not `python3 -m"),
    ("python3 -c 'import x'", "not `python3 -m"),
    ("python3 -u -m x", "not `python3 -m"),
    ("FOO=1 python3 -m x", "not `python3 -m"),
    ("FOO=1 -m x", "is not python3"),
    ("python2 -m x", "is not python3"),
    ("python3 -m x; echo done", "shell syntax"),
    ("python3 -m x | tee log", "shell syntax"),
    ("python3 -m x > log", "shell syntax"),
    ("python3 -m x $HOME", "shell syntax"),
    ("python3 -m x\npython3 -m y", "shell syntax"),
    ("python3 -m 'x y'", "module name"),
    ("python3 -m x 'unclosed", "not one command"),
])
def test_anything_else_runs_with_sh(bin_dir: Path, command: str, why: str) -> None:
    with pytest.raises(ZygoteError, match=why):
        plan(command, {"PATH": str(bin_dir)}, "/", PYTHON)


def test_python3_must_be_this_interpreter_and_need_no_fresh_start(bin_dir: Path) -> None:
    other = str(bin_dir.parent / "other")
    with pytest.raises(ZygoteError, match="on the command's PATH is"):
        plan("python3 -m x", {"PATH": f"{other}:{bin_dir}"}, "/", PYTHON)
    with pytest.raises(ZygoteError, match="PYTHONWARNINGS need a fresh interpreter"):
        plan("python3 -m x", {"PATH": str(bin_dir), "PYTHONWARNINGS": "error"}, "/", PYTHON)
    plan("python3 -m x", {"PATH": str(bin_dir), "PYTHONDONTWRITEBYTECODE": "1"}, "/", PYTHON)


def test_environment_as_proc_environ() -> None:
    assert parse_env(b"A=1\0B=x=y\0EMPTY=\0") == {"A": "1", "B": "x=y", "EMPTY": ""}
    with pytest.raises(ZygoteError, match="bad environment entry"):
        parse_env(b"A=1\0NOEQUALS\0")


class HostZygote:
    """A zygote process on the host, its request and reply pipes."""

    def __init__(self, tmp: Path) -> None:
        preload = tmp / "preload.json"
        preload.write_text(json.dumps({"path": [], "modules": ["json", "no_such_module"],
                                       "checks": []}))
        req_r, self.req = os.pipe()
        self.rep, rep_w = os.pipe()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qemu_launcher.guest_zygote", "serve", str(preload),
             str(req_r), str(rep_w)], cwd=REPO, pass_fds=(req_r, rep_w),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.close(req_r)
        os.close(rep_w)
        self._replies = os.fdopen(self.rep, "r")

    def send(self, line: str) -> str:
        os.write(self.req, (line + "\n").encode())
        return self._replies.readline().strip()

    def first(self) -> str:
        return self._replies.readline().strip()

    def close(self) -> str:
        os.close(self.req)
        out, _ = self.proc.communicate(timeout=30)
        self._replies.close()
        return out.decode(errors="replace")


def _request(tmp: Path, command: str, env: dict[str, str]) -> str:
    (tmp / "cmd").write_text(command + "\n")
    (tmp / "env").write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    (tmp / "cwd").write_text(f"{REPO}\n")
    if not (tmp / "out").exists():
        os.mkfifo(tmp / "out")
    return f"run {tmp}/cmd {tmp}/env {tmp}/cwd {tmp}/out {tmp}/status"


def test_the_zygote_runs_a_python3_m_command_and_hands_back_its_status(
        tmp_path: Path, bin_dir: Path) -> None:
    z = HostZygote(tmp_path)
    try:
        assert z.first().startswith("preloaded 1 1 "), "json imported, one failure"
        env = {"PATH": str(bin_dir), "PYTHONPATH": str(REPO), "EEH_GUEST": "host"}
        assert z.send(_request(tmp_path, "python3 -m qemu_launcher.guest_zygote report",
                               env)) == "running"
        output = (tmp_path / "out").read_text()  # EOF once the zygote has the status
        assert (tmp_path / "status").read_text() == "0\n"
    finally:
        console = z.close()
    got = json.loads(output)
    assert got["started"]["how"] == "zygote" and got["started"]["checkout"] == "same", got
    assert "preload failed: no_such_module" in console, console
    assert "python3 -m qemu_launcher.guest_zygote: started from the pre-imported" in console
    assert z.proc.returncode == 0


def test_the_zygote_answers_exec_for_a_shell_command(tmp_path: Path, bin_dir: Path) -> None:
    z = HostZygote(tmp_path)
    try:
        assert z.first().startswith("preloaded ")
        answer = z.send(_request(tmp_path, "echo hi", {"PATH": str(bin_dir)}))
    finally:
        z.close()
    assert answer == "exec not `python3 -m MODULE ...`"
    assert z.proc.returncode == 0
