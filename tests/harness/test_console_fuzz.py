"""Console commands fuzzed (hypothesis) against the real console over the real platform
(the Platform facade: PE policy, device model, timeline). The framing's own hostile tests
(malformed JSON, huge and deep messages, control bytes, disconnects) run against the
generic server in tests/unit/qmp/test_qmp_hostile.py; these send well-framed commands with
any names and arguments and check, per example:

- every command gets exactly one reply, in order, with its id; a reply is `return` or an
  `error` of class GenericError or CommandNotFound with a non-empty desc;
- the session stays up (a ping answers last), nothing is logged as a backend failure, the
  device model records no internal error, and the work is bounded (seconds per example);
- the platform stays consistent: every PE's state is one of 0, 1, 2, 4, 5.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hypervisor_shim.console import pe_command_names
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from tests.harness.console_rig import ConsoleThread

PES = ["adapter", "vf0", "vf1", "vf2"]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, ConsoleThread]]:
    cfg = PlatformConfig(total_vfs=3, enabled_vfs=3, owners={"pf": "svc", "vf0": "g1"},
                         policy=PolicyConfig(max_freezes=1_000_000))
    with Platform(cfg, tmp_path_factory.mktemp("console")) as plat:
        con = ConsoleThread(plat)
        try:
            yield plat, con
        finally:
            con.close()


class Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


values = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                   st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=12),
                   st.sampled_from([*PES, "0x10", "-1", "dma-read-master-abort", "25", "hot",
                                          "fundamental", "adapter-fatal", "vf-error",
                                          "errinjct", "freeze", str(2**64)]),
                   st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3),
                                                                        st.integers(),
                                                                        max_size=2))
arg_names = st.sampled_from(["pe", "kind", "function", "address", "mask", "max-freezes",
                             "window-s", "last", "x"])
commands = st.fixed_dictionaries(
    {"execute": st.one_of(st.sampled_from(pe_command_names()),
                          st.sampled_from(["query-commands", "query-version",
                                           "qmp_capabilities", "quit", "device_del"]),
                          st.text(max_size=20)),
     "arguments": st.dictionaries(arg_names, values, max_size=4)})


def run(path: str, cmds: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One session: negotiate, send `cmds` (ids 0..n-1) and a ping; every reply in order."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(path)
        s.settimeout(20)
        f = s.makefile("rb")
        json.loads(f.readline())  # greeting
        s.sendall(b'{"execute": "qmp_capabilities"}')
        assert "return" in json.loads(f.readline())
        payload = b"".join(json.dumps(dict(c, id=i)).encode() for i, c in enumerate(cmds))
        s.sendall(payload + json.dumps({"execute": "query-eeh-policy", "id": "ping"}).encode())
        replies = []
        while True:
            line = f.readline()
            assert line, f"the console closed the session after {len(replies)} replies"
            msg = json.loads(line)
            if "event" in msg:
                continue
            replies.append(msg)
            if msg.get("id") == "ping":
                return replies


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(cmds=st.lists(commands, max_size=8))
def test_any_commands_get_one_reply_each_and_the_platform_stays_sane(
        console: tuple[Platform, ConsoleThread], cmds: list[dict[str, Any]]) -> None:
    plat, con = console
    failures = Failures()
    logging.getLogger("hypervisor_shim").addHandler(failures)
    try:
        t0 = time.monotonic()
        replies = run(str(con.console.platform_path), cmds)
        assert time.monotonic() - t0 < 30
    finally:
        logging.getLogger("hypervisor_shim").removeHandler(failures)
    assert [r.get("id") for r in replies] == [*range(len(cmds)), "ping"], replies
    for r in replies:
        if "error" in r:
            assert r["error"]["class"] in ("GenericError", "CommandNotFound"), r
            assert r["error"]["desc"], r
        else:
            assert "return" in r, r
    assert "return" in replies[-1]
    assert failures.records == [], [r.getMessage() for r in failures.records]
    assert plat.call(lambda: list(plat.adapter.internal_errors)) == []
    states = plat.pe_states()
    assert all(s["state"] in (0, 1, 2, 4, 5) for s in states.values()), states
