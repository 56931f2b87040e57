"""eeh_abi.traffic.echo_of (the VF drivers' per-frame echo, built without objects) gives
exactly what parse() and build() define: for probes untagged and 802.1Q-tagged, of every
size, and None for echoes, other kinds, other ethertypes or magics, short frames."""

from __future__ import annotations

import random

from eeh_abi import traffic as T


def reference(frame: bytes) -> bytes | None:
    p = T.parse(frame)
    if p is None or p.kind != T.PROBE:
        return None
    return T.build(T.Probe(p.src, p.dst, T.ECHO, p.stream, p.target, p.seq, p.t_ns),
                   max(T.MIN_FRAME, len(frame)))


def tagged(frame: bytes, vid: int) -> bytes:
    return frame[:12] + b"\x81\x00" + vid.to_bytes(2, "big") + frame[12:]


def test_echo_of_agrees_with_parse_and_build() -> None:
    rng = random.Random(22)
    frames = []
    for _ in range(300):
        p = T.Probe(rng.randbytes(6), rng.randbytes(6), rng.choice((T.PROBE, T.ECHO, 2, 255)),
                    rng.randrange(256), rng.randrange(65536), rng.randrange(2**32),
                    rng.randrange(2**64))
        f = T.build(p, rng.choice((0, 38, 59, 60, 61, 64, 1514)))
        frames += [f, tagged(f, rng.randrange(4096)), f[:rng.randrange(len(f) + 1)]]
        g = bytearray(f)
        g[rng.randrange(12, 20)] ^= 1 << rng.randrange(8)  # ethertype or magic broken
        frames.append(bytes(g))
    frames += [b"", bytes(13), bytes(60), b"\x00" * 12 + b"\x81\x00" + bytes(46)]
    probes = 0
    for f in frames:
        want = reference(f)
        assert T.echo_of(f) == want, f.hex()
        probes += want is not None
    assert probes > 100
