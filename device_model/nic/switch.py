"""The adapter's internal L2 switch and its pluggable uplink port.

Ports are the functions (PF and VFs) plus one uplink. Every function sits in one VLAN
domain: its port VLAN ID if one is set, else 0 (untagged). The switch forwards by
(domain, destination MAC): a known unicast address goes to its function; anything else
goes out of the uplink (tagged with the domain's VLAN ID if not 0); broadcast and multicast
go to every other function of the domain and to the uplink. From the uplink, an 802.1Q tag
selects the domain and is removed; unknown unicast goes to functions in promiscuous mode.
Nothing is ever queued: a frame is delivered (or counted dropped) in the call that sends it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from device_model.nic.descriptor import ETH_HEADER

log = logging.getLogger(__name__)

TPID = b"\x81\x00"


class Uplink(Protocol):
    """The adapter's external port: a queue in tests, a TAP/veth device later."""

    def send(self, frame: bytes) -> None:
        """Put one frame on the wire (must not block for long; may drop)."""
        ...

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        """The switch's receive entry point: call `deliver(frame)` per received frame."""
        ...

    def detach(self) -> None: ...


class QueueUplink:
    """An in-process uplink: sent frames pile up in `sent`; `inject` plays received ones."""

    def __init__(self, maxlen: int | None = None) -> None:
        self.sent: deque[bytes] = deque(maxlen=maxlen)
        self._deliver: Callable[[bytes], None] | None = None

    def send(self, frame: bytes) -> None:
        self.sent.append(frame)

    def attach(self, deliver: Callable[[bytes], None]) -> None:
        self._deliver = deliver

    def detach(self) -> None:
        self._deliver = None

    def inject(self, frame: bytes) -> bool:
        """Deliver a frame from the wire into the switch; False if none is attached."""
        if self._deliver is None:
            return False
        self._deliver(frame)
        return True

    def take(self) -> list[bytes]:
        out = list(self.sent)
        self.sent.clear()
        return out


class SwitchPort(Protocol):
    """What the switch needs from a function's NIC."""

    name: str

    def switch_present(self) -> bool: ...
    def switch_mac(self) -> bytes | None: ...
    def switch_domain(self) -> int: ...
    def switch_promisc(self) -> bool: ...
    def receive(self, frame: bytes, vlan: int) -> None: ...


class Switch:
    def __init__(self) -> None:
        self.ports: list[SwitchPort] = []
        self.uplink: Uplink | None = None
        self.enabled = True  # false while the adapter is failed or in reset
        self.loopback = True
        self.uplink_enabled = True
        self.uplink_tx = 0
        self.uplink_rx = 0
        self.dropped = 0
        self.dropped_total = 0  # never reset: the model's own books (cf. NicPort.ledger)
        self.local = 0
        self._table: dict[tuple[int, bytes], SwitchPort] | None = None
        self._members: dict[int, list[SwitchPort]] = {}
        self._promisc: dict[int, list[SwitchPort]] = {}

    def attach_uplink(self, uplink: Uplink) -> None:
        self.detach_uplink()
        self.uplink = uplink
        uplink.attach(self.from_uplink)

    def detach_uplink(self) -> None:
        if self.uplink is not None:
            self.uplink.detach()
            self.uplink = None

    def invalidate(self) -> None:
        """A MAC, VLAN, mode or presence changed: rebuild the table on next use."""
        self._table = None

    def _drop(self) -> None:
        self.dropped += 1
        self.dropped_total += 1

    def reset_counters(self) -> None:
        self.uplink_tx = self.uplink_rx = self.dropped = self.local = 0

    def _build(self) -> dict[tuple[int, bytes], SwitchPort]:
        table: dict[tuple[int, bytes], SwitchPort] = {}
        members: dict[int, list[SwitchPort]] = {}
        promisc: dict[int, list[SwitchPort]] = {}
        for p in self.ports:
            if not p.switch_present():
                continue
            d = p.switch_domain()
            members.setdefault(d, []).append(p)
            if p.switch_promisc():
                promisc.setdefault(d, []).append(p)
            mac = p.switch_mac()
            if mac is not None:
                table.setdefault((d, mac), p)  # duplicates: the lowest port wins
        self._table, self._members, self._promisc = table, members, promisc
        return table

    def lookup(self, domain: int, mac: bytes) -> SwitchPort | None:
        table = self._table if self._table is not None else self._build()
        return table.get((domain, mac))

    def from_port(self, src: SwitchPort, frame: bytes) -> None:
        """A function transmitted `frame` (untagged, at least an Ethernet header long)."""
        if not self.enabled:
            self._drop()
            return
        table = self._table if self._table is not None else self._build()
        domain = src.switch_domain()
        dst = frame[0:6]
        if dst[0] & 1:
            if self.loopback:
                for p in self._members.get(domain, ()):
                    if p is not src:
                        p.receive(frame, domain)
                        self.local += 1
            self._to_uplink(frame, domain)
            return
        if self.loopback:
            dest = table.get((domain, dst))
            if dest is not None:
                if dest is src:
                    self._drop()  # no hairpin back to the sender
                else:
                    self.local += 1
                    dest.receive(frame, domain)
                return
        self._to_uplink(frame, domain)

    def _to_uplink(self, frame: bytes, domain: int) -> None:
        uplink = self.uplink
        if uplink is None or not self.uplink_enabled:
            self._drop()
            return
        if domain:
            frame = frame[:12] + TPID + domain.to_bytes(2, "big") + frame[12:]
        try:
            uplink.send(frame)
        except Exception:  # a backend's failure is a lost frame, not a dead adapter
            log.exception("uplink send failed")
            self._drop()
            return
        self.uplink_tx += 1

    def from_uplink(self, frame: bytes) -> None:
        """A frame arrived on the uplink (the Uplink backend calls this)."""
        self.uplink_rx += 1
        if not (self.enabled and self.uplink_enabled) or len(frame) < ETH_HEADER:
            self._drop()
            return
        domain = 0
        if frame[12:14] == TPID and len(frame) >= ETH_HEADER + 4:
            domain = int.from_bytes(frame[14:16], "big") & 0xFFF
            frame = frame[:12] + frame[16:]
        table = self._table if self._table is not None else self._build()
        dst = frame[0:6]
        if dst[0] & 1:
            targets = self._members.get(domain, [])
        else:
            hit = table.get((domain, dst))
            targets = [hit] if hit is not None else self._promisc.get(domain, [])
        if not targets:
            self._drop()
            return
        for p in targets:
            p.receive(frame, domain)
