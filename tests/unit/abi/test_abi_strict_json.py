"""eeh_abi.strict_json: exactly JSON in, compact JSON out, only JsonError for any bytes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eeh_abi.strict_json import JsonError, TooDeep, dumps, loads


@pytest.mark.parametrize("raw,reason", [
    (b'{"a": 1, "a": 2}', "repeated key 'a'"),
    (b"NaN", "'NaN' is not JSON"),
    (b"[Infinity]", "'Infinity' is not JSON"),
    (b"-Infinity", "'-Infinity' is not JSON"),
    (b"1e999", "number 1e999 is out of range"),
    (b'"caf\xc3"', "invalid UTF-8 sequence"),
    (b"\xff", "invalid UTF-8 sequence"),
    (b"{", "expecting property name enclosed in double quotes"),
    (b"", "expecting value"),
    (b"[1] 2", "extra data"),
])
def test_what_is_not_strict_json(raw: bytes, reason: str) -> None:
    with pytest.raises(JsonError) as e:
        loads(raw)
    assert e.value.reason == reason


def test_repeated_keys_nested_too() -> None:
    with pytest.raises(JsonError, match="repeated key 'b'"):
        loads(b'{"a": [{"b": 1, "b": 1}]}')
    assert loads(b'{"a": {"b": 1}, "b": {"a": 2}}') == {"a": {"b": 1}, "b": {"a": 2}}


def test_depth_limit() -> None:
    assert loads(b"[" * 32 + b"]" * 32, max_depth=32) == loads(b"[" * 32 + b"]" * 32)
    with pytest.raises(TooDeep, match="nested deeper than 32"):
        loads(b"[" * 33 + b"]" * 33, max_depth=32)
    with pytest.raises(TooDeep, match="nested deeper than 32"):
        loads(b'{"a":' * 33 + b"1" + b"}" * 33, max_depth=32)
    # many openers but shallow: allowed
    assert loads(b"[" + b"[]," * 100 + b"[]]", max_depth=2) == [[]] * 101
    with pytest.raises(JsonError):  # any depth at all: an error, never a crash
        loads(b"[" * 200_000 + b"]" * 200_000)


def test_dumps_is_compact_and_strict() -> None:
    assert dumps({"a": [1, 2.5, None, True], "b": "é"}) == '{"a":[1,2.5,null,true],"b":"\\u00e9"}'
    assert dumps({"x": b"\x01"}, default=lambda v: v.hex()) == '{"x":"01"}'
    for bad in (float("nan"), [float("inf")]):
        with pytest.raises(JsonError, match="not JSON"):
            dumps(bad)
    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(JsonError):
        dumps(circular)


@given(st.binary(max_size=300))
def test_any_bytes_give_a_value_or_a_json_error(raw: bytes) -> None:
    try:
        loads(raw, max_depth=8)
    except JsonError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4), max_leaves=20)


@given(json_values)
def test_round_trip(value: object) -> None:
    assert loads(dumps(value)) == value


def test_leading_int_reads_a_member_only_before_the_fault() -> None:
    from eeh_abi.strict_json import leading_int
    deep = "[" * 5000
    assert leading_int('{"v":1,"id":7,"x":' + deep, "id", max_depth=32) == 7
    assert leading_int(b'{ "id" : 7 , "x":"\xff"}', "id", max_depth=32) == 7
    assert leading_int('{"x":' + deep + '],"id":7}', "id", max_depth=32) is None
    assert leading_int('{"x":' + "[" * 40 + "]" * 40 + ',"id":7}', "id", max_depth=32) is None
    assert leading_int('{"x":[1],"id":7}', "id", max_depth=32) == 7
    for bad in ('{"id":"7"}', '{"id":7.0}', '{"id":7e1}', '{"id":07}', '[{"id":7}]',
                '{"v":NaN,"id":7}', '{"v":1,"v":1,"id":7}', '{"id":' + "9" * 5000 + "}", ""):
        assert leading_int(bad, "id", max_depth=32) is None, bad
