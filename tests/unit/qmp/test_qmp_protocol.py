"""The QMP server, read off the wire with a raw asyncio client: greeting, negotiation, ids,
the caller's command table and its argument refusal, events, several clients, QEMU
passed through on a guest's socket, history."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from qmp_fakes import (
    COMMAND_NAMES,
    PREFIX,
    QEMU_COMMANDS,
    QEMU_VERSION,
    VERSION,
    Backend,
    GuestRig,
    RawClient,
    run_server,
    sock_dir,
)

from qmp_server import Command, CommandTable, Server, ServerError

__all__ = ["sock_dir"]  # the fixture, imported


def error(reply: dict[str, Any]) -> tuple[str, str]:
    assert set(reply) <= {"error", "id"}, reply
    return reply["error"]["class"], reply["error"]["desc"]


def test_greeting_and_negotiation(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path, negotiate=False)
        assert c.greeting == {"QMP": {"version": VERSION, "capabilities": []}}
        # before negotiation: CommandNotFound for anything else, events withheld
        for cmd in ("ping", "query-commands", "no-such-command"):
            r = await c.command(cmd, id=cmd)
            assert error(r) == ("CommandNotFound",
                                "Expecting capabilities negotiation with 'qmp_capabilities'")
            assert r["id"] == cmd
        be.emit("SOME_EVENT", {"x": 1})
        assert await c.nothing_pending()
        assert be.calls == []
        # malformed input is still malformed
        assert error(await c.command("ping", bogus=1)) == (
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
        be.emit("SOME_EVENT", {"x": 2})
        ev = await c.event()
        assert (ev["event"], ev["data"]) == ("SOME_EVENT", {"x": 2})
        await c.close()

    run_server(sock_dir, body)


def test_id_is_echoed_whatever_its_type(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        for ident in (1, "abc", None, [1, {"a": 2}], {"k": "v"}, 2.5, True):
            r = await c.command("echo", {"value": [ident]}, id=ident)
            assert r == {"return": [ident], "id": ident}
            r = await c.command("no-such", id=ident)
            assert r["id"] == ident and "error" in r
        r = await c.command("ping")
        assert "id" not in r
        await c.close()

    run_server(sock_dir, body)


def test_local_socket_commands(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        names = [x["name"] for x in (await c.command("query-commands"))["return"]]
        assert names == ["qmp_capabilities", "query-commands", "query-version", *COMMAND_NAMES]
        assert (await c.command("query-version"))["return"] == VERSION
        assert error(await c.command("query-version", {"x": 1}))[1] == \
            "Parameter 'x' is unexpected"
        for cmd in ("query-status", "human-monitor-command", "quit"):
            assert error(await c.command(cmd)) == (
                "CommandNotFound", f"The command {cmd} has not been found")
        # both names of a command reach it
        assert (await c.command("ping"))["return"] == {"pong": 1}
        assert (await c.command(PREFIX + "ping"))["return"] == {"pong": 2}
        await c.close()

    run_server(sock_dir, body)


def test_unknown_arguments_are_refused_before_any_command_runs(sock_dir: Path) -> None:
    """The table refuses what a command does not list, for every command and name."""
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        for name in COMMAND_NAMES:
            r = await c.command(name, {"zz": 1}, id=name)
            assert error(r) == ("GenericError", "Parameter 'zz' is unexpected"), name
        assert be.calls == []
        assert (await c.command("echo", {"value": 3}))["return"] == 3  # a listed one passes
        await c.close()

    run_server(sock_dir, body)


def test_refusals_and_bugs_of_a_command(sock_dir: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        r = await c.command("refuse", {"why": "not now"}, id=1)
        assert r == {"error": {"class": "GenericError", "desc": "not now"}, "id": 1}
        r = await c.command("refuse")
        assert error(r) == ("GenericError", "Parameter 'why' is missing")
        # a command's bug is an internal error, logged, and the server goes on
        r = await c.command("boom")
        assert error(r) == ("GenericError", "internal error in boom: RuntimeError: oops")
        assert "return" in await c.command("ping")
        await c.close()

    run_server(sock_dir, body)
    assert "command boom failed" in caplog.text


def test_a_command_table_names_each_command_once() -> None:
    async def run(args: Any) -> object:
        return None

    with pytest.raises(ValueError, match="twice"):
        CommandTable([Command("a", run), Command("a", run)])
    with pytest.raises(ValueError, match="twice"):
        CommandTable([Command("p_a", run), Command("a", run)], prefix="p_")
    assert CommandTable([Command("a", run)]).names() == ["a"]


def test_events_reach_every_negotiated_client_of_every_socket(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            a = await RawClient.connect(server.local_path)
            b = await RawClient.connect(server.local_path)
            guest = await RawClient.connect(g.path)
            waiting = await RawClient.connect(server.local_path, negotiate=False)
            before = time.time()
            be.emit("STEP", {"pe": "vf0", "step": "slot_reset"})
            be.emit_from_thread("LIFTED", {"pes": ["vf0", "vf1"]})
            for c in (a, b, guest):
                e1, e2 = await c.event(), await c.event()
                assert e1["event"] == "STEP"
                assert e1["data"] == {"pe": "vf0", "step": "slot_reset"}
                assert e2 == {"event": "LIFTED", "data": {"pes": ["vf0", "vf1"]},
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
            # an event the source cannot encode is dropped, not sent half
            be.emit("BAD", {"x": object()})
            be.emit("GOOD", {})
            assert (await a.event())["event"] == "GOOD"
            # the events a command causes come before its reply
            r = await a.command("slow")
            assert r == {"return": {}} and [e["event"] for e in a.events] == ["SLOW_DONE"]
            for c in (a, b, guest, waiting):
                await c.close()

    run_server(sock_dir, body)


def test_several_clients_interleave(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        clients = [await RawClient.connect(server.local_path) for _ in range(8)]

        async def work(c: RawClient, n: int) -> None:
            for i in range(20):
                r = await c.command("echo", {"value": [n, i]}, id=[n, i])
                assert r == {"return": [n, i], "id": [n, i]}

        await asyncio.gather(*(work(c, n) for n, c in enumerate(clients)))
        assert server.session_count("local") == 8
        for c in clients:
            await c.close()
        for _ in range(100):
            if server.session_count() == 0:
                break
            await asyncio.sleep(0.01)
        assert server.session_count() == 0

    run_server(sock_dir, body)


def test_guest_socket_passes_qemu_through(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            c = await RawClient.connect(g.path, negotiate=False)
            # QEMU's version, but never its oob: the server offers no capability
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
            assert names == [*QEMU_COMMANDS, *COMMAND_NAMES]
            assert (await c.command("ping"))["return"] == {"pong": 1}
            # the server negotiated with nobody on QEMU's side: the QMPClient did
            sent = [m["execute"] for m in g.qemu.received]
            assert sent.count("qmp_capabilities") == 1
            assert "ping" not in sent
            await c.close()

    run_server(sock_dir, body)


def test_history_keeps_what_went_in_and_out(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        await c.send(b'{"execute": "ping", "id": 5} [1]')
        await c.reply()
        await c.reply()
        await c.close()
        hist = [(h.socket, h.client, h.direction, h.message) for h in server.history]
        assert hist[0][:3] == ("local", 1, "out") and "QMP" in hist[0][3]  # type: ignore
        assert ("local", 1, "in", {"execute": "ping", "id": 5}) in hist
        assert ("local", 1, "out", {"return": {"pong": 1}, "id": 5}) in hist
        assert ("local", 1, "in", [1]) in hist
        assert hist[-1] == ("local", 1, "out", {"error": {
            "class": "GenericError", "desc": "QMP input must be a JSON object"}})

    run_server(sock_dir, body, history_size=50)


def test_wire_format_is_ascii_crlf_json(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        be.emit("NOTE", {"text": "fr\u00e9quence \u2603"})
        ev = await c.event()
        assert ev["data"]["text"] == "fr\u00e9quence \u2603"
        assert b"\\u2603" in c.lines[-1]
        assert all(json.loads(line) for line in c.lines)
        await c.close()

    run_server(sock_dir, body)


@pytest.mark.parametrize("name", ["", "local", "a/b", "../x", ".hidden", "x" * 65])
def test_bad_guest_names(sock_dir: Path, name: str) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir):
            with pytest.raises(ServerError):
                await server.add_guest(name, object())  # type: ignore[arg-type]
            with pytest.raises(ServerError, match="already has"):
                await server.add_guest("guest0", object())  # type: ignore[arg-type]

    run_server(sock_dir, body)
