"""Hostile and broken clients: every malformed input gets a QMP error (or, for a parser
reset with nothing pending, nothing), the same connection then works, other clients never
notice, and the server never crashes, stalls or holds more than one message per client."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qmp_fakes import Backend, GuestRig, RawClient, run_server, sock_dir

from qmp_server import Server, ServerError
from qmp_server.framing import JsonSplitter, Malformed, Text, parse

__all__ = ["sock_dir"]
MIB = 1 << 20
PING = b'{"execute": "ping", "id": "ping"}'


async def still_works(c: RawClient) -> None:
    await c.send(PING)
    r = await c.reply()
    assert r["id"] == "ping" and "return" in r, r


def generic(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


MALFORMED = [
    (b'{"execute": }', "JSON parse error, expecting value"),
    (b'{"execute" "x"}', "JSON parse error, expecting ':' delimiter"),
    (b"[1, 2]", "QMP input must be a JSON object"),
    (b"42 ", "QMP input must be a JSON object"),
    (b'"ping"', "QMP input must be a JSON object"),
    (b"null\n", "QMP input must be a JSON object"),
    (b"nonsense\n", "JSON parse error, expecting value"),
    (b"}", "JSON parse error, stray '}'"),
    (b'{"execute": "ping", "execute": "quit"}', "JSON parse error, repeated key 'execute'"),
    (b'{"execute": "ping", "id": NaN}', "JSON parse error, 'NaN' is not JSON"),
    (b'{"execute": "ping", "id": 1e999}', "JSON parse error, number 1e999 is out of range"),
    (b'{"execute": "\xff', "JSON parse error, invalid character 0xff; pending input dropped"),
    (b'{"execute": "caf\xc3"}', "JSON parse error, invalid UTF-8 sequence"),
    (b'{"execute": 5}', "QMP input member 'execute' must be a string"),
    (b'{"arguments": {}}', "QMP input lacks member 'execute'"),
    (b'{}', "QMP input lacks member 'execute'"),
    (b'{"execute": "ping", "arguments": [1]}',
     "QMP input member 'arguments' must be an object"),
    (b'{"execute": "ping", "argument": {}}', "QMP input member 'argument' is unexpected"),
    (b'{"exec-oob": "ping"}', "QMP input member 'exec-oob' is unexpected"),
    (b'{"execute": "ping", "control": 1}', "QMP input member 'control' is unexpected"),
    (b'{"execute": "ping", "id": ' + b"9" * 5000 + b"}", None),  # int too long
    (b"[" * 100 + b"]" * 100, "QMP input exceeds the nesting limit of 64"),
]


def test_malformed_input_gets_an_error_and_the_connection_goes_on(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        other = await RawClient.connect(server.local_path)
        for raw, desc in MALFORMED:
            await c.send(raw)
            r = await c.reply()
            assert set(r) == {"error"}, (raw, r)  # these come before an id can be read...
            if desc is not None:
                assert r == generic(desc), raw
            else:
                assert r["error"]["class"] == "GenericError"
                assert r["error"]["desc"].startswith("JSON parse error"), r
            await still_works(c)
        # ...while these are objects, so their id comes back
        await c.send(b'{"execute": "ping", "bogus": 1, "id": "x"}')
        assert await c.reply() == {**generic("QMP input member 'bogus' is unexpected"),
                                   "id": "x"}
        await c.send(b'{"execute": "ping", "arguments": 7, "id": 3}')
        assert (await c.reply())["id"] == 3
        await c.send(b'{"exec-oob": "ping", "id": 4}')
        assert await c.reply() == {**generic("QMP input member 'exec-oob' is unexpected"),
                                   "id": 4}
        assert be.calls == [("ping",)] * len(MALFORMED)
        await still_works(other)
        await c.close()
        await other.close()

    run_server(sock_dir, body)


def test_framing_without_newlines_split_anywhere_and_single_quotes(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        # three commands in one write, no separators (qemu.qmp sends none)
        await c.send(PING.replace(b"ping", b"a") + PING.replace(b"ping", b"b") +
                     b'{"execute":"ping","id":"c"}')
        assert [(await c.reply())["id"] for _ in range(3)] == ["a", "b", "c"]
        # one command a byte at a time, spread over lines like a person at socat would
        text = b'{\n  "execute": "ping",\n  "id": {"s": "}{\\" ]["}\n}\n'
        for i in range(len(text)):
            await c.send(text[i:i + 1])
        assert (await c.reply())["id"] == {"s": '}{" ]['}
        # QEMU's single-quote extension, with \' and a double quote inside
        await c.send(b"{'execute': 'ping', 'id': 'it\\'s \"q\"'}")
        assert (await c.reply())["id"] == "it's \"q\""
        await c.close()

    run_server(sock_dir, body)


def test_huge_lines(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        other = await RawClient.connect(server.local_path)
        over = generic(f"QMP input exceeds the size limit of {MIB} bytes")
        huge = 2 * MIB
        cases = [
            # a well-formed object with a 2 MiB argument: dropped to its closing brace
            b'{"execute": "echo", "arguments": {"value": "' + b"A" * huge + b'"}}',
            # a 2 MiB line of garbage and one of an unterminated string
            b"x" * huge + b"\n",
            b'{"execute": "' + b"B" * huge + b"\n",
            # an unbalanced object: dropped to the end of its line
            b'{"execute": [' + b"1," * MIB + b"\n",
        ]
        for raw in cases:
            send = asyncio.ensure_future(c.send(raw))
            await still_works(other)  # served while this one streams its megabytes
            await send
            assert await c.reply() == over
            await still_works(c)
        assert ("echo",) not in [x[:1] for x in be.calls]
        # the limit is the limit: a 1 MiB - 1 text passes the framing
        pad = MIB - len(b'{"execute": "ping", "id": ""}')
        await c.send(b'{"execute": "ping", "id": "' + b"p" * pad + b'"}')
        assert len((await c.reply())["id"]) == pad
        await c.close()
        await other.close()

    run_server(sock_dir, body)


def test_control_character_resets_the_parser(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        c = await RawClient.connect(server.local_path)
        # nothing pending: a silent reset (what a careful client sends first)
        await c.send(b"\xff")
        await c.send(b"\x00")
        assert await c.nothing_pending()
        # an unfinished command, then the reset: reported once, then all is well
        await c.send(b'{"execute": "echo", "arguments": {"value": [[[ \x1b')
        r = await c.reply()
        assert r == generic("JSON parse error, invalid character 0x1b; pending input dropped")
        await still_works(c)
        await c.close()

    run_server(sock_dir, body)


def test_disconnect_mid_command_disturbs_nothing(sock_dir: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="qmp_server")
    backend = Backend()
    backend.gate = asyncio.Event()

    async def body(server: Server, be: Backend) -> None:
        assert be.gate is not None
        watcher = await RawClient.connect(server.local_path)
        c = await RawClient.connect(server.local_path)
        await c.send({"execute": "slow", "id": 1})
        await be.entered.wait()  # the command is running
        c.writer.transport.abort()  # gone, without a goodbye
        await still_works(watcher)  # others are served while that command waits
        be.gate.set()
        # the command completes (its effect stands, its events go out); the reply is dropped
        assert (await watcher.event())["event"] == "SLOW_DONE"
        for _ in range(200):
            if server.session_count() == 1:
                break
            await asyncio.sleep(0.01)
        assert server.session_count() == 1
        assert ("slow",) in be.calls
        # and gone in the middle of a message
        d = await RawClient.connect(server.local_path)
        await d.send(b'{"execute": "query-p')
        await d.close()
        await still_works(watcher)
        await watcher.close()

    run_server(sock_dir, body, backend=backend)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_disconnect_while_qemu_works_on_a_command(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            g.qemu.hold = asyncio.Event()
            c = await RawClient.connect(g.path)
            other = await RawClient.connect(g.path)
            await c.send({"execute": "query-status"})
            while not any(m["execute"] == "query-status" for m in g.qemu.received):
                await asyncio.sleep(0.01)
            await c.close()
            await other.send({"execute": "ping"})
            assert "return" in await other.reply()  # the server does not wait for QEMU
            g.qemu.hold.set()
            assert (await other.command("query-status"))["return"]["running"] is True
            await other.close()

    run_server(sock_dir, body)


def test_remove_guest_and_stop_close_clients_and_sockets(sock_dir: Path) -> None:
    async def body(server: Server, be: Backend) -> None:
        async with GuestRig(server, sock_dir) as g:
            c = await RawClient.connect(g.path)
            g.qemu.hold = asyncio.Event()  # a command in progress when the socket goes
            await c.send({"execute": "query-status"})
            await asyncio.sleep(0.05)
            await server.remove_guest("guest0")
            assert not g.path.exists()
            with pytest.raises((EOFError, ConnectionError)):
                await c.reply()
            g.qemu.hold.set()
            # the guest's QMPClient still works for its owner, without the server's listener
            assert g.client.execute is not None
            assert (await g.target.execute("query-status"))["running"] is True  # type: ignore
            await c.close()
        p = await RawClient.connect(server.local_path)
        await server.stop()
        with pytest.raises((EOFError, ConnectionError)):
            await p.reply()
        assert not server.local_path.exists()
        await server.start()  # a stopped server can start again
        await still_works(await RawClient.connect(server.local_path))

    run_server(sock_dir, body)


def test_stale_socket_is_replaced_and_a_live_one_refused(sock_dir: Path) -> None:
    d = sock_dir / "server"
    d.mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(d / "local.qmp"))
    stale.close()  # a socket file nobody listens on

    async def body(server: Server, be: Backend) -> None:
        other = Server(d, be.table(), local="local")
        with pytest.raises(ServerError, match="in use"):
            await other.start()
        (d / "g.qmp").write_text("not a socket")
        with pytest.raises(ServerError, match="not a socket"):
            await server.add_guest("g", object())  # type: ignore[arg-type]
        (d / "g.qmp").unlink()
        assert server.guests == []

    run_server(sock_dir, body)


# ---- the splitter on its own ------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12)
objects = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(objects, min_size=1, max_size=5), st.lists(st.integers(1, 40), max_size=30),
       st.sampled_from(["", "\n", " ", "\r\n\t"]), st.booleans())
def test_splitter_returns_exactly_the_objects_sent(messages: list[dict[str, Any]],
                                                   cuts: list[int], sep: str,
                                                   ascii_only: bool) -> None:
    stream = sep.join(json.dumps(m, ensure_ascii=ascii_only) for m in messages).encode()
    stream += b"\n"
    splitter = JsonSplitter()
    got: list[object] = []
    i = 0
    for n in [*cuts, len(stream)]:
        for piece in splitter.feed(stream[i:i + n]):
            assert isinstance(piece, Text), piece
            got.append(parse(piece))
        i += n
        if i >= len(stream):
            break
    assert got == messages
    assert splitter.idle


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=20))
def test_splitter_survives_any_bytes_within_its_limit(chunks: list[bytes]) -> None:
    splitter = JsonSplitter(limit=100, max_depth=8)
    for chunk in chunks:
        for piece in splitter.feed(chunk):
            if isinstance(piece, Text):
                assert len(piece.data) <= 100
                parse(piece)  # a value or a Malformed, never an exception
            else:
                assert isinstance(piece, Malformed)
        assert len(splitter._buf) <= 100
    # whatever came before, a reset byte and a good command get through
    out = splitter.feed(b"\xff" + PING)
    assert isinstance(out[-1], Text) and parse(out[-1]) == json.loads(PING)
