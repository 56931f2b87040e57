"""The console's QMP, read off the wire with a raw asyncio client: greeting, negotiation,
ids, the PE commands and their argument checks, events, several clients."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from test_console_fakes import (
    QEMU_COMMANDS,
    QEMU_VERSION,
    FakePlatformApi,
    GuestRig,
    RawClient,
    run_console,
    sock_dir,
)

from hypervisor_shim.console import Console, pe_command_names

__all__ = ["sock_dir"]  # the fixture, imported

PE_NAMES = ["query-pes", "eeh-inject", "eeh-reset-pe", "query-pe-error-log",
            "eeh-set-policy", "query-eeh-policy"]


def error(reply: dict[str, Any]) -> tuple[str, str]:
    assert set(reply) <= {"error", "id"}, reply
    return reply["error"]["class"], reply["error"]["desc"]


def test_greeting_and_negotiation(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path, negotiate=False)
        assert c.greeting == {"QMP": {"version": {"qemu": {"major": 0, "minor": 1,
                                                           "micro": 0},
                                                  "package": "eeh-sriov platform console"},
                                      "capabilities": []}}
        # before negotiation: CommandNotFound for anything else, events withheld
        for cmd in ("query-pes", "query-commands", "no-such-command"):
            r = await c.command(cmd, id=cmd)
            assert error(r) == ("CommandNotFound",
                                "Expecting capabilities negotiation with 'qmp_capabilities'")
            assert r["id"] == cmd
        api.emit("EEH_PE_STATE_CHANGED", {"pe": "vf0", "state": 2})
        assert await c.nothing_pending()
        assert api.calls == []
        # malformed input is still malformed
        assert error(await c.command("query-pes", bogus=1)) == (
            "GenericError", "QMP input member 'bogus' is unexpected")
        r = await c.command("qmp_capabilities", {"enable": ["oob"]})
        assert error(r) == ("GenericError", "Capability 'oob' not available")
        r = await c.command("qmp_capabilities", {"enable": ["bogus"]})
        assert error(r)[1] == "Parameter 'enable[0]' does not accept value 'bogus'"
        r = await c.command("qmp_capabilities", {"x": 1})
        assert error(r)[1] == "Parameter 'x' is unexpected"
        assert await c.command("qmp_capabilities", id=1) == {"return": {}, "id": 1}
        r = await c.command("qmp_capabilities", id=2)
        assert error(r) == ("CommandNotFound",
                            "Capabilities negotiation is already complete, command ignored")
        assert r["id"] == 2
        api.emit("EEH_PE_STATE_CHANGED", {"pe": "vf0", "state": 2})
        ev = await c.event()
        assert ev["event"] == "EEH_PE_STATE_CHANGED"
        await c.close()

    run_console(sock_dir, body)


def test_id_is_echoed_whatever_its_type(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        for ident in (1, "abc", None, [1, {"a": 2}], {"k": "v"}, 2.5, True):
            r = await c.command("query-eeh-policy", id=ident)
            assert r == {"return": api.policy, "id": ident}
            r = await c.command("no-such", id=ident)
            assert r["id"] == ident and "error" in r
        r = await c.command("query-eeh-policy")
        assert "id" not in r
        await c.close()

    run_console(sock_dir, body)


def test_platform_socket_commands(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        names = [x["name"] for x in (await c.command("query-commands"))["return"]]
        expected = ["qmp_capabilities", "query-commands", "query-version",
                    *(n for p in PE_NAMES for n in (f"__org.eeh-sriov_{p}", p))]
        assert names == expected == ["qmp_capabilities", "query-commands", "query-version",
                                     *pe_command_names()]
        r = await c.command("query-version")
        assert r["return"]["qemu"] == {"major": 0, "minor": 1, "micro": 0}
        assert error(await c.command("query-version", {"x": 1}))[1] == \
            "Parameter 'x' is unexpected"
        for cmd in ("query-status", "human-monitor-command", "quit"):
            assert error(await c.command(cmd)) == (
                "CommandNotFound", f"The command {cmd} has not been found")
        await c.close()

    run_console(sock_dir, body)


def test_pe_commands_and_aliases(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        pes = (await c.command("query-pes"))["return"]
        assert [p["pe"] for p in pes] == ["adapter", "vf0", "vf1"]
        assert (await c.command("__org.eeh-sriov_query-pes"))["return"] == pes

        r = await c.command("eeh-inject", {"pe": "vf1", "function": "DMA_read-master-abort",
                                           "address": "0x1000", "mask": 0xFFFF})
        assert r["return"] == {"pe": "vf1", "kind": "errinjct", "frozen": ["vf1"]}
        assert api.calls[-1] == ("inject", "vf1", "errinjct", 14, 0x1000, 0xFFFF)
        assert [e["data"]["pe"] for e in c.events] == ["vf1"]  # it came before the reply
        c.events.clear()
        await c.command("__org.eeh-sriov_eeh-inject", {"pe": "vf0", "function": 19})
        assert api.calls[-1] == ("inject", "vf0", "errinjct", 19, 0, 0)
        await c.command("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
        assert api.calls[-1] == ("inject", "adapter", "adapter-fatal", None, 0, 0)
        log = (await c.command("query-pe-error-log", {"pe": "vf1"}))["return"]
        assert log == [{"seq": 1, "kind": "errinjct", "function": 14, "address": 4096}]

        assert (await c.command("eeh-reset-pe", {"pe": "vf0"}))["return"]["kind"] == "hot"
        await c.command("__org.eeh-sriov_eeh-reset-pe", {"pe": "adapter", "kind": "fundamental"})
        assert api.calls[-1] == ("reset_pe", "adapter", "fundamental")

        r = await c.command("eeh-set-policy", {"max-freezes": 5000})
        assert r["return"] == {"max-freezes": 5000, "window-s": 3600.0}
        r = await c.command("__org.eeh-sriov_eeh-set-policy", {"window-s": 60})
        assert api.calls[-1] == ("set_policy", None, 60.0)
        assert (await c.command("query-eeh-policy"))["return"] == \
            {"max-freezes": 5000, "window-s": 60.0}
        assert (await c.command("__org.eeh-sriov_query-eeh-policy"))["return"]["window-s"] == 60
        await c.close()

    run_console(sock_dir, body)


BAD_ARGUMENTS = [
    ("eeh-inject", {}, "Parameter 'pe' is missing"),
    ("eeh-inject", {"pe": 3, "function": 1}, "Invalid parameter type for 'pe', expected: string"),
    ("eeh-inject", {"pe": "vf0"}, "Parameter 'function' is missing"),
    ("eeh-inject", {"pe": "vf0", "function": 20},
     "Parameter 'function' does not accept value '20'"),
    ("eeh-inject", {"pe": "vf0", "function": -1},
     "Parameter 'function' does not accept value '-1'"),
    ("eeh-inject", {"pe": "vf0", "function": "dma-sideways"},
     "Parameter 'function' does not accept value 'dma-sideways'"),
    ("eeh-inject", {"pe": "vf0", "function": True},
     "Invalid parameter type for 'function', expected: integer or error function name"),
    ("eeh-inject", {"pe": "vf0", "function": 1.5},
     "Invalid parameter type for 'function', expected: integer or error function name"),
    ("eeh-inject", {"pe": "vf0", "kind": "meteor"},
     "Parameter 'kind' does not accept value 'meteor'"),
    ("eeh-inject", {"pe": "vf0", "kind": "vf-error", "function": 3},
     "Parameter 'function' applies to kind 'errinjct' only, not 'vf-error'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": -1},
     "Parameter 'address' does not accept value '-1'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "mask": 1 << 64},
     f"Parameter 'mask' does not accept value '{1 << 64}'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": "0xZZ"},
     "Parameter 'address' does not accept value '0xZZ'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": [1]},
     "Invalid parameter type for 'address', expected: uint64"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "colour": "red"},
     "Parameter 'colour' is unexpected"),
    ("eeh-reset-pe", {"pe": "vf0", "kind": "warm"},
     "Parameter 'kind' does not accept value 'warm'"),
    ("eeh-reset-pe", {"pe": None}, "Invalid parameter type for 'pe', expected: string"),
    ("query-pe-error-log", {}, "Parameter 'pe' is missing"),
    ("query-pes", {"pe": "vf0"}, "Parameter 'pe' is unexpected"),
    ("query-eeh-policy", {"all": True}, "Parameter 'all' is unexpected"),
    ("eeh-set-policy", {"max-freezes": "5"},
     "Invalid parameter type for 'max-freezes', expected: integer"),
    ("eeh-set-policy", {"max-freezes": -1}, "Parameter 'max-freezes' does not accept value '-1'"),
    ("eeh-set-policy", {"window-s": 0}, "Parameter 'window-s' does not accept value '0'"),
    ("eeh-set-policy", {"window-s": False},
     "Invalid parameter type for 'window-s', expected: number"),
    ("eeh-set-policy", {"max_freezes": 3}, "Parameter 'max_freezes' is unexpected"),
]


def test_bad_arguments_are_refused_before_the_backend_is_called(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        for cmd, args, desc in BAD_ARGUMENTS:
            for name in (cmd, f"__org.eeh-sriov_{cmd}"):
                r = await c.command(name, args, id=name)
                assert error(r) == ("GenericError", desc), (name, args)
                assert r["id"] == name
        assert api.calls == []
        # the backend's own refusals (PlatformApiError) carry its message
        r = await c.command("eeh-inject", {"pe": "vf7", "kind": "vf-error"})
        assert error(r) == ("GenericError", "no PE named 'vf7' (have adapter, vf0, vf1)")
        r = await c.command("eeh-reset-pe", {"pe": "vf0", "kind": "fundamental"})
        assert error(r) == ("GenericError", "a VF PE has no fundamental reset")
        # a backend bug is an internal error, and the console goes on
        api.boom = RuntimeError("oops")
        r = await c.command("query-pes")
        assert error(r) == ("GenericError", "internal error in query-pes: RuntimeError: oops")
        assert "return" in await c.command("query-pes")
        await c.close()

    run_console(sock_dir, body)


def test_events_reach_every_negotiated_client_of_every_socket(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir) as g:
            a = await RawClient.connect(console.platform_path)
            b = await RawClient.connect(console.platform_path)
            guest = await RawClient.connect(g.path)
            waiting = await RawClient.connect(console.platform_path, negotiate=False)
            before = time.time()
            api.emit("EEH_RECOVERY_STEP", {"pe": "vf0", "step": "slot_reset"})
            api.emit_from_thread("EEH_LOCKOUT_LIFTED", {"pes": ["vf0", "vf1"]})
            for c in (a, b, guest):
                e1, e2 = await c.event(), await c.event()
                assert e1["event"] == "EEH_RECOVERY_STEP"
                assert e1["data"] == {"pe": "vf0", "step": "slot_reset"}
                assert e2 == {"event": "EEH_LOCKOUT_LIFTED", "data": {"pes": ["vf0", "vf1"]},
                              "timestamp": e2["timestamp"]}
                ts = e1["timestamp"]
                assert set(ts) == {"seconds", "microseconds"}
                assert 0 <= ts["microseconds"] < 1_000_000
                assert before - 1 <= ts["seconds"] + ts["microseconds"] / 1e6 <= time.time()
            assert await waiting.nothing_pending()
            # QEMU's events go to that guest's clients only, unchanged
            g.qemu.event("RESUME")
            assert await guest.event() == {
                "event": "RESUME", "timestamp": {"seconds": 1700000000, "microseconds": 42}}
            assert await a.nothing_pending()
            # an event the backend cannot encode is dropped, not sent half
            api.emit("EEH_BAD", {"x": object()})
            api.emit("EEH_GOOD", {})
            assert (await a.event())["event"] == "EEH_GOOD"
            for c in (a, b, guest, waiting):
                await c.close()

    run_console(sock_dir, body)


def test_several_clients_interleave(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        clients = [await RawClient.connect(console.platform_path) for _ in range(8)]

        async def work(c: RawClient, n: int) -> None:
            for i in range(20):
                r = await c.command("query-pe-error-log", {"pe": f"vf{n % 2}"}, id=[n, i])
                assert r["id"] == [n, i]

        await asyncio.gather(*(work(c, n) for n, c in enumerate(clients)))
        assert console.session_count("platform") == 8
        for c in clients:
            await c.close()
        for _ in range(100):
            if console.session_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert console.session_count() == 0

    run_console(sock_dir, body)


def test_guest_socket_passes_qemu_through(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir) as g:
            c = await RawClient.connect(g.path, negotiate=False)
            # QEMU's version, but never its oob: the console offers no capability
            assert c.greeting == {"QMP": {"version": QEMU_VERSION, "capabilities": []}}
            await c.command("qmp_capabilities")
            r = await c.command("query-status", id="s")
            assert r == {"return": {"status": "running", "singlestep": False,
                                    "running": True}, "id": "s"}
            r = await c.command("human-monitor-command", {"command-line": "info status"})
            assert r == {"return": "VM status: running\r\n"}
            r = await c.command("device_del", {"id": "vf9"}, id=7)
            assert r == {"error": {"class": "DeviceNotFound", "desc": "Device 'vf9' not found"},
                         "id": 7}
            r = await c.command("no-such")
            assert error(r) == ("CommandNotFound", "The command no-such has not been found")
            assert (await c.command("query-version"))["return"] == QEMU_VERSION
            # the event QEMU sends during a command is passed on
            assert await c.command("stop") == {"return": {}}
            assert (await c.event())["event"] == "STOP"
            names = [x["name"] for x in (await c.command("query-commands"))["return"]]
            assert names == [*QEMU_COMMANDS, *pe_command_names()]
            assert (await c.command("query-pes"))["return"][0]["pe"] == "adapter"
            # the console negotiated with nobody on QEMU's side: the QMPClient did
            sent = [m["execute"] for m in g.qemu.received]
            assert sent.count("qmp_capabilities") == 1
            assert "query-pes" not in sent
            await c.close()

    run_console(sock_dir, body)


def test_history_keeps_what_went_in_and_out(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        await c.send(b'{"execute": "query-eeh-policy", "id": 5} [1]')
        await c.reply()
        await c.reply()
        await c.close()
        hist = [(h.socket, h.client, h.direction, h.message) for h in console.history]
        assert hist[0][:3] == ("platform", 1, "out") and "QMP" in hist[0][3]  # type: ignore
        assert ("platform", 1, "in", {"execute": "query-eeh-policy", "id": 5}) in hist
        assert ("platform", 1, "out", {"return": api.policy, "id": 5}) in hist
        assert ("platform", 1, "in", [1]) in hist
        assert hist[-1] == ("platform", 1, "out", {"error": {
            "class": "GenericError", "desc": "QMP input must be a JSON object"}})

    run_console(sock_dir, body, history_size=50)


def test_wire_format_is_ascii_crlf_json(sock_dir: Path) -> None:
    async def body(console: Console, api: FakePlatformApi) -> None:
        c = await RawClient.connect(console.platform_path)
        api.emit("EEH_NOTE", {"text": "fr\u00e9quence \u2603"})
        ev = await c.event()
        assert ev["data"]["text"] == "fr\u00e9quence \u2603"
        assert b"\\u2603" in c.lines[-1]
        assert all(json.loads(line) for line in c.lines)
        await c.close()

    run_console(sock_dir, body)


@pytest.mark.parametrize("name", ["", "platform", "a/b", "../x", ".hidden", "x" * 65])
def test_bad_guest_names(sock_dir: Path, name: str) -> None:
    from hypervisor_shim.console import ConsoleError

    async def body(console: Console, api: FakePlatformApi) -> None:
        async with GuestRig(console, sock_dir):
            with pytest.raises(ConsoleError):
                await console.add_guest(name, object())  # type: ignore[arg-type]
            with pytest.raises(ConsoleError, match="already has"):
                await console.add_guest("guest0", object())  # type: ignore[arg-type]

    run_console(sock_dir, body)
