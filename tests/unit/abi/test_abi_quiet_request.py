"""The quiet request flag in the codec (eeh_abi.hcall; docs/platform-calls.md "Quiet
requests"): written only when set, so a request without it is the same line as before;
read back; anything but a boolean refused with the request's id."""

from __future__ import annotations

import pytest

from eeh_abi.hcall import DecodeError, Request, decode, encode


def test_the_flag_is_written_only_when_set_and_read_back() -> None:
    loud = Request(7, "report", {"step": "reset"})
    assert b"quiet" not in encode(loud)
    assert decode(encode(loud)) == loud
    quiet = Request(8, "report", {"step": "reset"}, quiet=True)
    assert b'"quiet":true' in encode(quiet).replace(b" ", b"")
    assert decode(encode(quiet)) == quiet
    assert decode(b'{"v":1,"id":9,"call":"report","args":{},"quiet":false}') == \
        Request(9, "report", {})


@pytest.mark.parametrize("value", [b"1", b"0", b'"true"', b"null", b"[]", b"{}"])
def test_a_flag_that_is_not_a_boolean_is_refused_with_the_id(value: bytes) -> None:
    with pytest.raises(DecodeError) as e:
        decode(b'{"v":1,"id":9,"call":"report","args":{},"quiet":%s}' % value)
    assert e.value.msg_id == 9 and e.value.reason == "quiet must be true or false"
