"""Reading test frames in tests: what a frame on the wire carries."""

from __future__ import annotations

from eeh_abi import traffic


def payload(f: bytes) -> str:
    """What a test frame carries: "stream:seq" of a test-traffic probe, else its text
    (after an 802.1Q tag if the switch added one)."""
    p = traffic.parse(f)
    if p is not None:
        return f"{p.stream}:{p.seq}"
    body = f[18:] if f[12:14] == b"\x81\x00" else f[14:]
    return body.rstrip(b".").decode(errors="replace")
