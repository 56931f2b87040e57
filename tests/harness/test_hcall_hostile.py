"""Hostile callers fuzzed against the real platform-call server (hypothesis): bad JSON,
huge lines, unknown calls, wrong types, floods, any bytes at all.

Invariants, for every example: the server answers every non-blank line with exactly one
well-formed reply, in order (no desync: a sentinel request sent last gets the last reply
with its own id); the connection stays up; nothing is an "internal error"; the caller
never acts on a PE it does not own (the adapter PE and another guest's VF stay untouched);
and the work is bounded (each example finishes within a few seconds, other channels are
served meanwhile).
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from eeh_abi.hcall import MAX_LINE, Channel
from eeh_abi.schema import CALL_SPECS, CALLS, Call
from hypervisor_shim.pe import PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
PF, VF0, VF1 = 0x10000, 0x18000, 0x18100
SENTINEL = 9_000_000


@pytest.fixture(scope="module")
def plat(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS,
                         policy=PolicyConfig(errinjct=True))
    with Platform(cfg, tmp_path_factory.mktemp("hcall")) as p:
        yield p


# ---------------------------------------------------------------------------- inputs
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
arg_names = st.sampled_from(["pe", "addr", "option", "function", "vf_pes", "step", "detail",
                             "driver", "handlers", "address", "mask", "guest_time", "x"])
arg_values = st.one_of(json_values, st.sampled_from([PF, VF0, VF1, 0, -1, 2**64, 2**63]),
                       st.lists(st.sampled_from([PF, VF0, VF1, 5]), max_size=6))
requests = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1", None]),
     "id": st.one_of(st.integers(0, 2**53), st.integers(), st.none(), st.text(max_size=3)),
     "call": st.one_of(st.sampled_from(CALLS), st.text(max_size=30)),
     "args": st.one_of(st.dictionaries(arg_names, arg_values, max_size=5), json_values)})


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode()


lines = st.one_of(
    requests.map(_line),
    json_values.map(_line),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"")),
    st.sampled_from([b"[" * 5000, b'{"a":' * 3000, b"NaN", b'{"v":1,"id":1,"call":"x",'
                     b'"args":{"pe":1e999}}', b"\xff\xfe", b"\r", b"   ",
                     b'{"v":1,"id":1,"call":"' + b"c" * (MAX_LINE - 20) + b'"}',
                     b"z" * (MAX_LINE + 1)]),
)
floods = st.tuples(lines, st.integers(1, 300)).map(lambda t: [t[0]] * t[1])


# ---------------------------------------------------------------------------- the check
def exchange(path: Path, payload: bytes) -> list[dict[str, object]]:
    """Send `payload` then a sentinel request on one connection; return every reply up to
    and including the sentinel's (the connection must stay up until then)."""
    sentinel = _line({"v": 1, "id": SENTINEL, "call": "read-slot-reset-state2",
                      "args": {"pe": VF0}}) + b"\n"
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.settimeout(10)
        s.sendall(payload + b"\n" + sentinel)
        buf = b""
        replies: list[dict[str, object]] = []
        deadline = time.monotonic() + 20
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                line, buf = buf[:nl], buf[nl + 1:]
                assert len(line) <= MAX_LINE
                msg = json.loads(line)
                if "event" in msg:
                    continue
                replies.append(msg)
                if msg.get("id") == SENTINEL:
                    return replies
                continue
            assert time.monotonic() < deadline, "no reply to the sentinel: a hang"
            chunk = s.recv(1 << 20)
            assert chunk, f"the server closed the connection after {len(replies)} replies"
            buf += chunk


def expected_replies(lines: list[bytes]) -> int:
    """How many replies the protocol promises for these lines (none holds a newline),
    from docs/platform-calls.md, not from the framing code under test: one for every line
    that is not blank (ASCII whitespace only), and one for every line longer than
    MAX_LINE bytes whatever it holds."""
    blank = set(b" \t\r\x0b\x0c")
    return sum(1 for line in lines
               if len(line) > MAX_LINE or any(c not in blank for c in line))


def test_expected_replies_counts_by_the_protocol() -> None:
    """The model itself, on cases worked out by hand."""
    assert expected_replies([b"x", b"", b"   ", b"\r", b"\t\x0b\x0c", b" {} "]) == 2
    assert expected_replies([b" " * (MAX_LINE + 1), b"z" * MAX_LINE, b"z" * (MAX_LINE + 1)]) == 3
    assert expected_replies([b"\x00", b"\xa0", b"\x1c"]) == 3  # not ASCII whitespace


def untouched(p: Platform) -> None:
    st_ = p.pe_states()
    assert st_["adapter"]["state"] == 0 and st_["vf1"]["state"] == 0, st_
    assert st_["adapter"]["freeze_count"] == 0 and st_["vf1"]["freeze_count"] == 0, st_


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=st.lists(st.one_of(lines, floods), min_size=1, max_size=6))
@example(batch=[b"z" * (MAX_LINE + 1), b"x", b"q" * (3 * MAX_LINE)])  # over-long, in one read
@example(batch=[b"   ", b"\r", b"\x0b", b"{}", b"\x00"])  # blank lines get no reply
def test_any_lines_get_one_reply_each_and_the_channel_stays_up(
        plat: Platform, batch: list[bytes | list[bytes]]) -> None:
    flat: list[bytes] = []
    for item in batch:
        flat.extend(item if isinstance(item, list) else [item])
    payload = b"\n".join(flat)
    expected = expected_replies(flat) + 1  # and the sentinel's
    replies = exchange(plat.hcall_path("g1"), payload)
    assert len(replies) == expected, (len(replies), expected)
    assert all(r.get("v") == 1 and isinstance(r.get("status"), int) for r in replies)
    assert not [r for r in replies if "internal error" in str(r.get("error"))], replies
    last = replies[-1]
    assert last["status"] == 0 and "state" in last["ret"], last  # type: ignore[operator]
    untouched(plat)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(req=requests)
def test_requests_on_foreign_pes_are_refused_and_change_nothing(
        plat: Platform, req: dict[str, object]) -> None:
    """Whatever g1 asks about the adapter PE or g2's VF is -3 (or malformed), and their
    state does not move."""
    args = req["args"] if isinstance(req["args"], dict) else {}
    spec = CALL_SPECS.get(req["call"]) if isinstance(req["call"], str) else None
    key = spec.target if spec is not None and spec.target is not None else "pe"
    for pe in (PF, VF1):
        probe = dict(req, v=1, id=1, args={**args, key: pe})
        (reply, _) = exchange(plat.hcall_path("g1"), _line(probe))
        assert reply["status"] == -3, (probe, reply)
    untouched(plat)


def test_a_flood_on_one_channel_does_not_hold_up_another(plat: Platform) -> None:
    with socket.socket(socket.AF_UNIX) as s, Channel.unix(str(plat.hcall_path("g2")),
                                                          timeout=5) as g2:
        s.connect(str(plat.hcall_path("g1")))
        s.setblocking(False)
        junk = (b'{"v":1,"id":1,"call":"slot-error-detail","args":{"pe":98304}}\n' * 500
                + b"[" * 4000 + b"\n" + b"q" * (MAX_LINE + 5) + b"\n") * 4
        sent = 0
        worst = 0.0
        deadline = time.monotonic() + 30
        while sent < len(junk) and time.monotonic() < deadline:
            try:
                sent += s.send(junk[sent:sent + 65536])
            except BlockingIOError:
                pass
            except OSError:
                break  # it never reads its replies: the server cut it off, as documented
            t0 = time.monotonic()
            assert g2.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
            worst = max(worst, time.monotonic() - t0)
            if worst > 2.0:
                break
        print(f"\ng2's worst call while g1 floods: {worst * 1000:.1f} ms")
        assert worst < 2.0
