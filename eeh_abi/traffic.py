"""The test traffic's frame format, shared by the host's generator and the guest drivers.

A probe goes from the host (through the adapter's uplink) or from a VF to a VF; the VF's
driver answers it with an echo to the sender. Every frame carries a sequence number per
(sender, target), so loss and duplication are counted exactly.

    Ethernet header (14 bytes; 802.1Q tag added/removed by the adapter's switch)
    ethertype 0x88B5 (IEEE local experimental)
    magic b"EEHT" | kind u8 (0 probe, 1 echo) | stream u8 | target u16 | seq u32 | t_ns u64
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

ETHERTYPE = 0x88B5
MAGIC = b"EEHT"
PROBE, ECHO = 0, 1
_HDR = struct.Struct(">4sBBHIQ")
HEADER_LEN = 14 + _HDR.size
MIN_FRAME = 60  # padded like a minimum Ethernet frame (without FCS)


@dataclass(frozen=True)
class Probe:
    dst: bytes
    src: bytes
    kind: int
    stream: int  # who sent the probe: 0 the host, 1 + n VF n
    target: int  # the VF number the probe is for
    seq: int
    t_ns: int


def build(p: Probe, size: int = MIN_FRAME) -> bytes:
    head = p.dst + p.src + ETHERTYPE.to_bytes(2, "big")
    body = _HDR.pack(MAGIC, p.kind, p.stream, p.target, p.seq & 0xFFFFFFFF,
                     p.t_ns & 0xFFFFFFFFFFFFFFFF)
    frame = head + body
    return frame + bytes(max(0, size - len(frame)))


def parse(frame: bytes) -> Probe | None:
    """A probe or echo (untagged or 802.1Q-tagged), else None."""
    off = 12
    if frame[12:14] == b"\x81\x00":
        off = 16
    if len(frame) < off + 2 + _HDR.size or int.from_bytes(frame[off:off + 2], "big") \
            != ETHERTYPE:
        return None
    magic, kind, stream, target, seq, t_ns = _HDR.unpack_from(frame, off + 2)
    if magic != MAGIC or kind not in (PROBE, ECHO):
        return None
    return Probe(frame[0:6], frame[6:12], kind, stream, target, seq, t_ns)


_TYPE = ETHERTYPE.to_bytes(2, "big")
_PROBE_START = _TYPE + MAGIC + bytes([PROBE])  # ethertype, magic and kind of a probe
_ECHO_START = _TYPE + MAGIC + bytes([ECHO])


def echo_of(frame: bytes) -> bytes | None:
    """The echo a VF driver sends back for a probe it received (None: not a probe):
    build(Probe(src, dst, ECHO, stream, target, seq, t_ns), max(MIN_FRAME, len(frame)))
    of the probe's parse(), without its objects (a VF driver's per-frame work: in a TCG
    guest ~20x slower than on the host; tests/unit/abi/test_traffic_echo.py checks the
    two agree)."""
    off = 16 if frame[12:14] == b"\x81\x00" else 12
    end = off + 2 + _HDR.size
    if len(frame) < end or frame[off:off + 7] != _PROBE_START:
        return None
    echo = b"".join((frame[6:12], frame[0:6], _ECHO_START, frame[off + 7:end]))
    return echo + bytes(max(MIN_FRAME, len(frame)) - len(echo))
