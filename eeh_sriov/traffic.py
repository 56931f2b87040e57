"""Host-side traffic through the adapter's uplink: numbered probes to every VF, echoes back.

    with UplinkTraffic(platform, targets, rate_hz=50) as traffic:
        ...
        traffic.wait_echo_after("vf0", t)        # traffic flows again on vf0
        traffic.stats()["vf0"]                   # sent, echoed, lost, duplicates

Probes (eeh_abi.traffic) go into the switch from the uplink, addressed to each VF's MAC
(802.1Q-tagged with its port VLAN if it has one); a VF driver answers each with an echo,
which leaves through the uplink. Every uplink frame both ways is kept with its host time
for the capture (`write_pcap`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from eeh_abi import traffic as T
from hypervisor_shim.platform import Platform

PEER_MAC = bytes.fromhex("02aabbccdd01")


@dataclass(frozen=True)
class Target:
    mac: bytes
    vlan: int | None = None


@dataclass
class StreamStats:
    sent: int = 0
    echoed: int = 0
    duplicates: int = 0
    seen: set[int] = field(default_factory=set)
    echo_times: list[tuple[float, int]] = field(default_factory=list)  # (host t, seq)
    send_times: dict[int, float] = field(default_factory=dict)

    def summary(self, in_flight_s: float, now: float) -> dict[str, int]:
        settled = [s for s, t in self.send_times.items() if now - t > in_flight_s]
        lost = sum(1 for s in settled if s not in self.seen)
        return {"sent": self.sent, "echoed": self.echoed, "duplicates": self.duplicates,
                "lost": lost, "in_flight": self.sent - len(settled)}


class UplinkTraffic:
    def __init__(self, plat: Platform, targets: Mapping[str, Target], *,
                 rate_hz: float = 50.0, keep_frames: int = 200_000) -> None:
        self.plat = plat
        self.port = plat.host.host_port()
        self.targets = dict(targets)
        self.period = 1.0 / rate_hz
        self.streams = {name: StreamStats() for name in targets}
        self.frames: list[tuple[float, bytes]] = []
        self._keep = keep_frames
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uplink-traffic", daemon=True)
        self.errors: list[str] = []
        self.other_frames = 0

    def __enter__(self) -> UplinkTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.port.close()

    def pause(self, paused: bool = True) -> None:
        (self._paused.set if paused else self._paused.clear)()

    def _frame_for(self, n: int, name: str, seq: int) -> bytes:
        tgt = self.targets[name]
        frame = T.build(T.Probe(tgt.mac, PEER_MAC, T.PROBE, 0, n, seq, time.monotonic_ns()))
        if tgt.vlan is not None:
            frame = frame[:12] + b"\x81\x00" + tgt.vlan.to_bytes(2, "big") + frame[12:]
        return frame

    def _run(self) -> None:
        port = self.port
        names = list(self.targets)
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                if not self._paused.is_set():
                    out = []
                    for n, name in enumerate(names):
                        st = self.streams[name]
                        frame = self._frame_for(n, name, st.sent)
                        out.append((name, st.sent, frame))
                    now = time.monotonic()
                    port.send([f for _, _, f in out])
                    with self._lock:
                        for name, seq, frame in out:
                            self.streams[name].send_times[seq] = now
                            self.streams[name].sent += 1
                            self._keep_frame(now, frame)
                self._account(port.receive())
            except Exception as e:  # the platform stopped under us
                self.errors.append(repr(e))
                if self._stop.wait(0.1):
                    break
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay < -1.0:
                next_t = time.monotonic()
            self._stop.wait(max(0.0, delay))

    def _keep_frame(self, t: float, frame: bytes) -> None:
        if len(self.frames) < self._keep:
            self.frames.append((t, frame))

    def _account(self, frames: list[bytes]) -> None:
        now = time.monotonic()
        names = list(self.targets)
        with self._cond:
            for f in frames:
                self._keep_frame(now, f)
                p = T.parse(f)
                if p is None or p.kind != T.ECHO or p.stream != 0 or \
                        not 0 <= p.target < len(names):
                    self.other_frames += 1
                    continue
                st = self.streams[names[p.target]]
                if p.seq in st.seen:
                    st.duplicates += 1
                    continue
                st.seen.add(p.seq)
                st.echoed += 1
                st.echo_times.append((now, p.seq))
            self._cond.notify_all()

    # ------------------------------------------------------------------ queries
    def wait_echo_after(self, name: str, t: float, timeout: float) -> float | None:
        """Host time of the first echo from `name` received after `t` (None: timeout)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for et, _ in self.streams[name].echo_times:
                    if et > t:
                        return et
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(min(left, 0.2))

    def stats(self, in_flight_s: float = 1.0) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        with self._lock:
            return {n: st.summary(in_flight_s, now) for n, st in self.streams.items()}

    def write_pcap(self, path: Path) -> int:
        """The uplink capture (both directions) with scapy's writer; returns frames written."""
        from scapy.layers.l2 import Ether  # scapy is slow to import: only here
        from scapy.utils import wrpcap

        with self._lock:
            frames = list(self.frames)
        offset = time.time() - time.monotonic()
        packets = []
        for t, raw in frames:
            pkt = Ether(raw)
            pkt.time = t + offset
            packets.append(pkt)
        wrpcap(str(path), packets)
        return len(packets)
