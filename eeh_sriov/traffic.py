"""Host-side traffic through the adapter's uplink: numbered probes to every VF, echoes back.

    with UplinkTraffic(platform, targets, rate_hz=50) as traffic:
        ...
        traffic.wait_echo_after("vf0", t)        # traffic flows again on vf0
        traffic.stats()["vf0"]                   # sent, echoed, lost, duplicates

Probes (eeh_abi.traffic) go into the switch from the uplink, addressed to each VF's MAC
(802.1Q-tagged with its port VLAN if it has one); a VF driver answers each with an echo,
which leaves through the uplink. Every uplink frame both ways is kept with its host time
and its adapter for the capture (`write_pcap`). `probing=False`: a capture only, nothing
sent.

Of several adapters, each VF's probes go through its own adapter's uplink (the adapter its
name names: "nic1.vf3" through nic1's), and every adapter's uplink is captured; with
`adapter="nic1"` only that adapter's uplink is used, for every target.

    vf_targets(topo)                         # every VF a guest holds -> Target
    guest_traffic_command(topo, "g1", 10.0)  # the agent, with its VFs' own traffic
    back = TrafficBack(traffic, timeline)    # `traffic-back` after each VF's recovery
    write_pcaps(traffic, run_dir)            # uplink.pcap, or uplink-nic0.pcap, ...
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from eeh_abi import traffic as T
from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.system import AGENT_COMMAND
from eeh_sriov.topology import Topology, format_mac
from hypervisor_shim.pe.names import split
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry, Timeline
from hypervisor_shim.uplink import HostPort

PEER_MAC = bytes.fromhex("02aabbccdd01")
# The uplink is read this often between rounds of probes: echoes were read once a round
# (each 0.1 s at bench.scale's 10 Hz), so every "traffic back" was up to a period late,
# quantized to the rounds (docs/reliability.md).
RECEIVE_S = 0.01


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


def vf_names(topo: Topology) -> dict[str, str]:
    """VF -> owner, for the VFs the guests hold."""
    return {fn: owner for fn in topo.all_functions
            if split(fn)[1] != "pf" and (owner := topo.owner_of(fn)) is not None}


def vf_targets(topo: Topology) -> dict[str, Target]:
    """Every VF a guest holds: its MAC and port VLAN, as the uplink probes address it."""
    out = {}
    for fn in vf_names(topo):
        c = topo.vf_config(fn)
        assert c.mac is not None  # the topology gives every VF one
        out[fn] = Target(c.mac, c.vlan)
    return out


MAX_PEERS = 8  # VFs of other guests each VF of a guest probes (VF-to-VF traffic)


def guest_traffic_command(topo: Topology, guest: str, pps: float) -> str:
    """The drivers' agent with test traffic: each of the guest's VFs sends `pps` probes a
    second to the uplink and to the VFs of other guests in its VLAN (at most MAX_PEERS
    of them: those that follow the guest's own VFs)."""
    mine = set(topo.functions_of(guest))
    my_vlans = {topo.vf_config(f).vlan for f in mine if split(f)[1] != "pf"}
    # the agent sends to every peer from each of its VFs: a guest whose VFs are on
    # several adapters gets no peers (one on another adapter's switch is unreachable)
    adapters = {split(f)[0] for f in mine if split(f)[1] != "pf"}
    targets = vf_targets(topo)
    peers = [fn for fn, t in targets.items()
             if fn not in mine and t.vlan in my_vlans and len(adapters) == 1
             and split(fn)[0] in adapters]
    if len(peers) > MAX_PEERS:
        # the VFs that follow this guest's own, wrapping round: each guest probes the
        # next one's, so every VF still gets VF-to-VF traffic while the frames grow with
        # the VFs, not with their square (64 VFs in eight guests: 8 peers, not 56)
        order = list(targets)
        last = max(order.index(f) for f in mine if f in targets)
        peers.sort(key=lambda fn: (order.index(fn) - last) % len(order))
        peers = peers[:MAX_PEERS]
    cmd = f"{AGENT_COMMAND} --traffic {pps:g}"
    peers = [format_mac(targets[fn].mac) for fn in peers]
    return cmd + (f" --peers {','.join(peers)}" if peers else "")


def uplink_of(name: str, adapters: Sequence[str]) -> str:
    """The adapter whose uplink reaches VF `name`: the adapter its name names ("nic1.vf3":
    nic1), else the first (an unqualified name, or the only adapter's)."""
    adapter = split(name)[0]
    return adapter if adapter in adapters else adapters[0]


class UplinkTraffic:
    def __init__(self, plat: Platform, targets: Mapping[str, Target], *,
                 rate_hz: float = 50.0, keep_frames: int = 200_000,
                 probing: bool = True, adapter: str | None = None,
                 receive_s: float = RECEIVE_S) -> None:
        """`adapter`: every target through that adapter's uplink (its name); None: each
        through its own adapter's, and every adapter's uplink captured. `receive_s`: how
        often the uplink is read between rounds of probes (an echo's host time is when
        it was read)."""
        self.plat = plat
        every = list(plat.host.adapters)
        self.ports: dict[str, HostPort] = {}
        try:
            for name in every if adapter is None else [adapter]:
                self.ports[name] = plat.host.host_port(name)
        except BaseException:
            self._close_ports()
            raise
        self.port = next(iter(self.ports.values()))  # the first (the only one, before)
        self.targets = dict(targets)
        self.route = {n: uplink_of(n, list(self.ports)) for n in targets}
        self.period = 1.0 / rate_hz
        self.receive_s = min(receive_s, self.period)
        self.streams = {name: StreamStats() for name in targets}
        self.frames: list[tuple[float, bytes, str]] = []  # (host t, frame, adapter)
        self._keep = keep_frames
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uplink-traffic", daemon=True)
        self.errors: list[str] = []
        self.other_frames = 0
        if not probing:
            self.pause()

    def __enter__(self) -> UplinkTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()  # waiters (wait_echo_after) give up at once
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self._close_ports()

    def _close_ports(self) -> None:
        for port in self.ports.values():
            port.close()

    def pause(self, paused: bool = True) -> None:
        (self._paused.set if paused else self._paused.clear)()

    def _frame_for(self, n: int, name: str, seq: int) -> bytes:
        tgt = self.targets[name]
        frame = T.build(T.Probe(tgt.mac, PEER_MAC, T.PROBE, 0, n, seq, time.monotonic_ns()))
        if tgt.vlan is not None:
            frame = frame[:12] + b"\x81\x00" + tgt.vlan.to_bytes(2, "big") + frame[12:]
        return frame

    def _run(self) -> None:
        # a probe's `target` is the VF's index among every target (whatever its uplink):
        # its echo names it, from whichever uplink it comes
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
                    for adapter, port in self.ports.items():
                        port.send([f for name, _, f in out if self.route[name] == adapter])
                    with self._lock:
                        for name, seq, frame in out:
                            self.streams[name].send_times[seq] = now
                            self.streams[name].sent += 1
                            self._keep_frame(now, frame, self.route[name])
                self._receive()
            except Exception as e:  # the platform stopped under us
                self.errors.append(repr(e))
                if self._stop.wait(0.1):
                    break
            next_t += self.period
            if next_t - time.monotonic() < -1.0:
                next_t = time.monotonic()
            # until the next round, the echoes each receive_s: an echo's time is when it
            # was taken from the uplink, so it is at most receive_s late, not a period
            while (delay := next_t - time.monotonic()) > 0:
                if self._stop.wait(min(delay, self.receive_s)):
                    return
                try:
                    self._receive()
                except Exception as e:  # the platform stopped under us
                    self.errors.append(repr(e))
                    if self._stop.wait(0.1):
                        return

    def _receive(self) -> None:
        for adapter, port in self.ports.items():
            self._account(port.receive(), adapter)

    def _keep_frame(self, t: float, frame: bytes, adapter: str) -> None:
        if len(self.frames) < self._keep:
            self.frames.append((t, frame, adapter))

    def _account(self, frames: list[bytes], adapter: str) -> None:
        now = time.monotonic()
        names = list(self.targets)
        with self._cond:
            for f in frames:
                self._keep_frame(now, f, adapter)
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
        """Host time of the first echo from `name` received after `t` (None: timeout, or
        the traffic stopped)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for et, _ in self.streams[name].echo_times:
                    if et > t:
                        return et
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(min(left, 0.2))

    def stats(self, in_flight_s: float = 1.0) -> dict[str, dict[str, int]]:
        now = time.monotonic()
        with self._lock:
            return {n: st.summary(in_flight_s, now) for n, st in self.streams.items()}

    def write_pcap(self, path: Path, adapter: str | None = None) -> int:
        """The uplink capture (both directions) with scapy's writer: `adapter`'s uplink, or
        (None) every uplink captured; returns frames written."""
        from scapy.layers.l2 import Ether  # scapy is slow to import: only here
        from scapy.utils import wrpcap

        with self._lock:
            frames = [(t, f) for t, f, a in self.frames if adapter in (None, a)]
        offset = time.time() - time.monotonic()
        packets = []
        for t, raw in frames:
            pkt = Ether(raw)
            pkt.time = t + offset
            packets.append(pkt)
        wrpcap(str(path), packets, linktype=1)  # Ethernet, also when nothing was seen
        return len(packets)


def pcap_names(adapters: Sequence[str]) -> dict[str, str]:
    """The capture file of each adapter's uplink: uplink.pcap of the only adapter,
    uplink-<name>.pcap of each of several."""
    if len(adapters) == 1:
        return {adapters[0]: "uplink.pcap"}
    return {a: f"uplink-{a}.pcap" for a in adapters}


def write_pcaps(traffic: UplinkTraffic, run_dir: Path) -> dict[str, int]:
    """Each captured uplink's file (pcap_names) in `run_dir`: file name -> frames."""
    return {name: traffic.write_pcap(run_dir / name, adapter)
            for adapter, name in pcap_names(list(traffic.ports)).items()}


# A VF's driver is back: its recovery's outcome, or a probe after a failure the platform
# cleared (Driver._wait_revival).
_BACK_AFTER = {Kind.RECOVERED, Kind.PROBE}


class TrafficBack:
    """After each recovery of a VF its traffic is watched for: the first echo through it
    after its driver reported `recovered` (or `probe` with `revived`) is a `traffic-back`
    entry in the timeline (source traffic, the VF's PE, the echo's host time; data: the
    driver's step and `ms` since it). A newer recovery of the same VF replaces the wait.

        back = TrafficBack(traffic, timeline, on_back=say)
        back.start()        # in the event loop; then every recovery is watched
        back.stop()
    """

    def __init__(self, traffic: UplinkTraffic, timeline: Timeline, *, timeout: float = 60.0,
                 on_back: Callable[[Entry], None] | None = None) -> None:
        self.traffic = traffic
        self.timeline = timeline
        self.timeout = timeout
        self.on_back = on_back
        self.back: list[Entry] = []  # the traffic-back entries recorded
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: dict[str, asyncio.Future[None]] = {}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.timeline.add_listener(self._entry)

    def stop(self) -> None:
        """No more waits (a wait already in a thread ends with the traffic's stop)."""
        self.timeline.remove_listener(self._entry)
        for task in self._tasks.values():
            task.cancel()

    def _entry(self, e: Entry) -> None:  # any thread: never blocks
        if e.source != Source.DRIVER or e.kind not in _BACK_AFTER or \
                e.pe not in self.traffic.targets or self._loop is None:
            return
        if e.kind == Kind.PROBE and not e.data.get("revived"):
            return  # the first probe is no recovery
        self._loop.call_soon_threadsafe(self._watch, e)

    def _watch(self, e: Entry) -> None:
        assert e.pe is not None
        old = self._tasks.get(e.pe)
        if old is not None:
            old.cancel()
        self._tasks[e.pe] = asyncio.ensure_future(self._wait(e))

    async def _wait(self, e: Entry) -> None:
        assert e.pe is not None
        t = await asyncio.to_thread(self.traffic.wait_echo_after, e.pe, e.t, self.timeout)
        if t is None:
            return
        entry = self.timeline.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=e.pe, t=t, data={
            "after": e.kind, "ms": round((t - e.t) * 1000, 3)})
        self.back.append(entry)
        if self.on_back is not None:
            self.on_back(entry)
