"""Hostile descriptor rings, fuzzed (hypothesis): what a buggy or malicious driver can
program into one VF's rings and descriptors.

Memory of the VF (its DMA maps): the driver's own RAM (rings and buffers), a mapped
"canary" area the driver never hands over, a read-only map, and the top 8 KiB of the
64-bit space; the VF's BAR0 sits at an address no map covers. Rings may be based anywhere
(0, unmapped, the BAR, the canary, read-only, half off the end of a map, next to 2^64),
LEN and TAIL any value, descriptors any addresses and lengths (0, huge, crossing a map's
end), rewritten while hardware holds them (TXEN off, or the PE frozen), pointing at
each other or at the ring itself (a "loop").

Invariants after every step:
- nothing raises out of the model and it records no internal error;
- the device wrote only what the driver handed over: status words of TX descriptors,
  length/flags/status/vlan words of RX descriptors, and RX buffers [addr, addr + size)
  of descriptors in the RX ring; every other mapped byte (canary included) is unchanged,
  and read-only maps never change;
- bounded work: at most 3 DMA accesses per descriptor a doorbell hands over (read it, read
  its buffer, write its status) and a few per received frame;
- the books balance (every posted descriptor sent, completed with an error, dropped or
  pending); HEAD is inside the ring;
- every error log entry's address is a 64-bit value (never 2^64 or more), and a DMA fault
  left the VF's PE frozen (an error status or a frozen PE, as documented).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_model import Adapter, AdapterConfig, ManualClock, PeStateCode, QueueUplink
from device_model.nic import registers as R
from device_model.nic.descriptor import DESC_SIZE, DESCRIPTOR
from device_model.pci import ids
from device_model.testkit import MiniDriver, PfDriver, RamGuest, frame
from vfio_user import DmaMap, GuestMemory

TOP = 1 << 64
RAM, RAM_SIZE = 0x10000, 0x10000  # the driver's pages: rings and buffers
CANARY, CANARY_SIZE = 0x40000, 0x4000  # mapped, never handed over (unless a ring/desc says so)
RO, RO_SIZE = 0x50000, 0x1000  # mapped read-only
TOP_MAP = TOP - 0x2000  # the top of the address space, mapped
BAR = 0xFE000000  # the VF's BAR0: not guest memory
OTHER = bytes.fromhex("02aa00000001")
WORK_PER_DOORBELL = 3 * R.RING_MAX + 8  # per descriptor: read it, read its buffer, status


class Canaried(GuestMemory):
    """The VF's DMA maps, with a count of DMA accesses."""

    def __init__(self) -> None:
        super().__init__()
        self.backing: dict[int, bytearray] = {}
        self.writable: dict[int, bool] = {}
        for base, size, fill, rw in ((RAM, RAM_SIZE, 0x00, True), (CANARY, CANARY_SIZE, 0xA5, True),
                                     (RO, RO_SIZE, 0x5A, False), (TOP_MAP, 0x2000, 0xC3, True)):
            buf = bytearray([fill]) * size
            self.backing[base] = buf
            self.writable[base] = rw
            self.map(DmaMap(base, size, buf, writable=rw))
        self.accesses = 0

    def read(self, addr: int, length: int) -> bytes:
        self.accesses += 1
        return super().read(addr, length)

    def write(self, addr: int, data: bytes) -> None:
        self.accesses += 1
        super().write(addr, data)

    def find(self, addr: int) -> tuple[bytearray, int] | None:
        for base, buf in self.backing.items():
            if base <= addr < base + len(buf):
                return buf, addr - base
        return None

    def poke(self, addr: int, data: bytes) -> None:
        """The driver (CPU) writes its memory: any map, read-only too."""
        for i, b in enumerate(data):
            hit = self.find(addr + i)
            if hit is not None:
                hit[0][hit[1]] = b

    def peek(self, addr: int, length: int) -> bytes | None:
        hit = self.find(addr)
        if hit is not None and hit[1] + length <= len(hit[0]):
            return bytes(hit[0][hit[1]:hit[1] + length])
        out = bytearray()
        for i in range(length):
            hit = self.find(addr + i)
            if hit is None:
                return None
            out.append(hit[0][hit[1]])
        return bytes(out)


@dataclass
class World:
    adapter: Adapter
    mem: Canaried
    vf: MiniDriver
    uplink: QueueUplink
    shadow: dict[int, bytes] = field(default_factory=dict)
    rings_seen: set[tuple[str, int, int]] = field(default_factory=set)  # (TX/RX, base, count)
    buffers: set[tuple[int, int]] = field(default_factory=set)  # RX (addr, size) handed over
    rings: dict[str, tuple[int, int]] = field(default_factory=dict)

    def snapshot(self) -> None:
        self.shadow = {b: bytes(buf) for b, buf in self.mem.backing.items()}

    def hand_over(self) -> None:
        """What the device may write from now on, given the rings as programmed and the
        descriptors they hold now (a superset: what was handed over stays so)."""
        for which, (base, count) in self.rings.items():
            if not 2 <= count <= R.RING_MAX or base + count * DESC_SIZE > TOP:
                continue
            self.rings_seen.add((which, base, count))
            if which == "RX":
                for i in range(count):
                    raw = self.mem.peek(base + i * DESC_SIZE, DESC_SIZE)
                    if raw is not None:
                        self.buffers.add(tuple(DESCRIPTOR.unpack(raw)[:2]))  # type: ignore[arg-type]

    def allowed(self, a: int) -> bool:
        for which, base, count in self.rings_seen:
            if base <= a < base + count * DESC_SIZE:
                off = (a - base) % DESC_SIZE
                if (which == "TX" and off in (12, 13)) or (which == "RX" and off >= 8):
                    return True
        return any(buf <= a < buf + size for buf, size in self.buffers)

    def check_writes(self) -> None:
        for base, buf in self.mem.backing.items():
            old = self.shadow[base]
            new = bytes(buf)
            if new == old:
                continue
            assert self.mem.writable[base], f"a read-only map changed at 0x{base:x}"
            for c in range(0, len(new), 256):
                if new[c:c + 256] == old[c:c + 256]:
                    continue
                for i in range(c, min(c + 256, len(new))):
                    if new[i] != old[i]:
                        assert self.allowed(base + i), \
                            f"device wrote 0x{base + i:x}, which the driver never handed over"


def world() -> World:
    adapter = Adapter(AdapterConfig(total_vfs=2), ManualClock(), QueueUplink())
    uplink = adapter.switch.uplink
    assert isinstance(uplink, QueueUplink)
    pf = PfDriver(adapter.pf, RamGuest(size=1 << 20))
    pf.enable()
    pf.setup_rings()
    pf.enable_vfs(1)
    pf.reset_done()
    mem = Canaried()
    vf = MiniDriver(adapter.vf(0), RamGuest(size=0x1000), attach=False)
    adapter.vf(0).attach(mem, vf.irqs)
    vf.cfg_write(0x10, BAR)  # BAR0 at an address no DMA map covers
    vf.enable()
    w = World(adapter, mem, vf, uplink)
    sane(w)
    w.snapshot()
    return w


TX_RING, RX_RING, TX_BUFS, RX_BUFS, NDESC = RAM, RAM + 0x400, RAM + 0x4000, RAM + 0x8000, 64


def sane(w: World) -> None:
    """What a correct driver sets up: 64 TX descriptors of valid frames, 64 RX buffers of
    512 bytes posted (63 given to hardware), TXEN and RXEN."""
    vf, mem = w.vf, w.mem
    f = frame(OTHER, vf.mac())
    for i in range(NDESC):
        mem.poke(TX_BUFS + i * 0x100, f)
        mem.poke(TX_RING + i * DESC_SIZE, DESCRIPTOR.pack(TX_BUFS + i * 0x100, len(f), 0, 0, 0))
        mem.poke(RX_RING + i * DESC_SIZE, DESCRIPTOR.pack(RX_BUFS + i * 0x200, 0x200, 0, 0, 0))
    for which, base in (("TX", TX_RING), ("RX", RX_RING)):
        lo, hi, ln = ((R.TX_BASE_LO, R.TX_BASE_HI, R.TX_LEN) if which == "TX"
                      else (R.RX_BASE_LO, R.RX_BASE_HI, R.RX_LEN))
        vf.write(lo, base)
        vf.write(hi, 0)
        vf.write(ln, NDESC)
        w.rings[which] = (base, NDESC)
    vf.write(R.RX_TAIL, NDESC - 1)
    vf.write(R.CTRL, R.Ctrl.TXEN | R.Ctrl.RXEN)
    w.hand_over()
    w.snapshot()


# ---------------------------------------------------------------------------- steps
ring_bases = st.one_of(
    st.sampled_from([RAM, RAM + 0x800, 0, BAR, CANARY, RO, RAM + RAM_SIZE - 0x40,
                     TOP_MAP, TOP - 0x20, TOP - 0x40, 0xDEAD0000, TOP - 0x10000]),
    st.integers(0, TOP - 1).map(lambda a: a & ~0xF))
counts = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 64, R.RING_MAX, R.RING_MAX + 1]),
                   st.integers(0, 1 << 16))
buf_addrs = st.one_of(
    st.sampled_from([RAM + 0x4000, RAM + 0x8000, RAM, 0, BAR, CANARY, RO, TOP - 16,
                     TOP - 0x800, RAM + RAM_SIZE - 20, TOP - 1, 0xDEAD0000]),
    st.integers(0, TOP - 1))
lengths = st.one_of(st.sampled_from([0, 13, 14, 60, 64, 1514, 1518, 9234, 9235, 0xFFFF]),
                    st.integers(0, 0xFFFF))

steps = st.one_of(
    st.tuples(st.just("tail"), st.sampled_from(["TX", "TX", "RX"]),
              st.one_of(st.integers(0, NDESC + 2), st.integers(0, 1 << 16))),
    st.tuples(st.just("rx"), st.one_of(st.integers(14, 600), st.integers(14, 9300))),
    st.tuples(st.just("sane"),),
    st.tuples(st.just("edge"), st.sampled_from(["TX", "RX"]), st.integers(1, 8),
              st.integers(2, 8), st.integers(1, 7)),
    st.tuples(st.just("post"), st.sampled_from(["TX", "RX"]), buf_addrs, lengths,
              st.integers(1, 3)),
    st.tuples(st.just("ring"), st.sampled_from(["TX", "RX"]), ring_bases, counts),
    st.tuples(st.just("desc"), st.sampled_from(["TX", "RX"]), st.integers(0, 70), buf_addrs,
              lengths, st.integers(0, 0xFFFF)),
    st.tuples(st.just("loop"), st.sampled_from(["TX", "RX"]), st.integers(0, 8)),
    st.tuples(st.just("ctrl"), st.sampled_from([0, 1, 2, 3])),
    st.tuples(st.just("pe"), st.sampled_from(["thaw", "reset", "flr", "freeze"])),
)


def apply(w: World, step: tuple[Any, ...]) -> None:
    vf, mem = w.vf, w.mem
    kind = step[0]
    if kind == "ring":
        _, which, base, count = step
        lo, hi, ln = ((R.TX_BASE_LO, R.TX_BASE_HI, R.TX_LEN) if which == "TX"
                      else (R.RX_BASE_LO, R.RX_BASE_HI, R.RX_LEN))
        vf.write(lo, base & 0xFFFFFFFF)
        vf.write(hi, base >> 32)
        vf.write(ln, count & 0xFFFFFFFF)
        if w.adapter.pes.vf(0).mmio_open():
            w.rings[which] = (base, count & ((1 << R.RING_INDEX_BITS) - 1))
    elif kind == "desc":  # the driver writes a descriptor into a ring's slot (CPU store)
        _, which, slot, buf, length, status = step
        base, count = w.rings.get(which, (RAM, 64))
        mem.poke(base + (slot % max(count, 1)) * DESC_SIZE,
                 DESCRIPTOR.pack(buf, length, 0, status, 0))
        w.snapshot()  # the CPU's own stores are not the device's
    elif kind == "loop":  # descriptors that point into the ring itself
        _, which, slot = step
        base, count = w.rings.get(which, (RAM, 64))
        for i in range(min(count, 8)):
            target = (base + ((i + slot) % max(count, 1)) * DESC_SIZE) % TOP
            mem.poke(base + i * DESC_SIZE, DESCRIPTOR.pack(target, DESC_SIZE, 0, 0, 0))
        w.snapshot()
    elif kind == "tail":
        _, which, value = step
        vf.write(R.TX_TAIL if which == "TX" else R.RX_TAIL, value & 0xFFFFFFFF)
    elif kind == "post":  # a hostile descriptor where hardware looks next, then used
        _, which, buf, length, n = step
        base, count = w.rings.get(which, (RAM, NDESC))
        nic = w.adapter.vf(0).nic
        if not 2 <= count <= R.RING_MAX:
            return
        if which == "TX":
            tail = vf.read(R.TX_TAIL)
            tail = tail if tail < count else 0
            for k in range(n):
                mem.poke(base + ((tail + k) % count) * DESC_SIZE,
                         DESCRIPTOR.pack(buf, length, 0, 0, 0))
            w.hand_over()
            w.snapshot()
            vf.write(R.TX_TAIL, (tail + n) % count)
        else:
            mem.poke(base + (nic.rx_head % count) * DESC_SIZE,
                     DESCRIPTOR.pack(buf, length, 0, 0, 0))
            w.hand_over()
            w.snapshot()
            for _ in range(n):
                w.uplink.inject(frame(w.adapter.vf(0).nic.switch_mac() or OTHER, OTHER,
                                      size=min(max(length, 14), 9000)))
    elif kind == "edge":  # a ring at the very top of the address space, then used
        _, which, k, count, n = step
        apply(w, ("ring", which, TOP - DESC_SIZE * k, count))
        if which == "TX":
            vf.write(R.TX_TAIL, min(n, count - 1))
        else:
            vf.write(R.RX_TAIL, min(n, count - 1))
            w.uplink.inject(frame(w.adapter.vf(0).nic.switch_mac() or OTHER, OTHER))
    elif kind == "sane":
        if w.adapter.pes.vf(0).mmio_open():
            sane(w)
    elif kind == "ctrl":
        vf.write(R.CTRL, (R.Ctrl.TXEN if step[1] & 1 else 0) | (R.Ctrl.RXEN if step[1] & 2 else 0))
    elif kind == "rx":
        w.uplink.inject(frame(vf.mac() if w.adapter.pes.vf(0).mmio_open()
                              else w.adapter.vf(0).nic.default_mac or OTHER,
                              OTHER, size=step[1]))
    elif kind == "pe":
        pe = w.adapter.pes.vf(0)
        action = step[1]
        if action == "thaw":
            pe.thaw_mmio()
            pe.thaw_dma()
        elif action == "reset":
            pe.reset(1)
            w.adapter.clock.run_all()  # type: ignore[attr-defined]
            vf.enable()
        elif action == "flr":
            vf.flr()
            w.adapter.clock.run_all()  # type: ignore[attr-defined]
            vf.enable()
        else:
            pe.freeze("test")


def check(w: World, accesses_before: int, step: tuple[Any, ...]) -> None:
    a = w.adapter
    fn = a.vf(0)
    assert a.internal_errors == [], a.internal_errors
    w.check_writes()
    work = w.mem.accesses - accesses_before
    assert work <= WORK_PER_DOORBELL, (step, work)
    assert fn.nic.balanced, fn.nic.ledger
    _, count = fn.nic._tx_ring
    assert fn.nic.tx_head < max(count, 1) and fn.nic.tx_pending < max(count, 1)
    for e in fn.pe.error_log():
        assert 0 <= e.address < TOP, e
        assert 0 <= e.aer["header_log2"] < 1 << 32
    if fn.pe.error_log() and fn.pe.error_log()[-1].source.value == "dma-fault":
        assert fn.pe.freeze_count >= 1
    assert fn.bad_accesses == 0


@pytest.mark.timeout(240)  # 300 plans: ~3 s alone, >30 s on a loaded shared host
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=st.lists(steps, min_size=1, max_size=25))
def test_hostile_rings_never_escape_the_buffers_they_were_handed(
        plan: list[tuple[Any, ...]]) -> None:
    w = world()
    for step in plan:
        w.hand_over()
        before = w.mem.accesses
        apply(w, step)
        w.hand_over()  # descriptors the step itself wrote (CPU stores) are handed over too
        check(w, before, step)
        w.snapshot()


def test_a_descriptor_rewritten_while_held_is_used_as_it_reads_then() -> None:
    """TXEN off: the doorbell hands descriptors over but hardware holds them; the driver
    then rewrites one to point at the canary (and another to a bad length). When TXEN
    comes on, the device uses the descriptors as they read then: the canary page is
    read (it is now a TX buffer: reading is allowed) but never written, the bad length
    completes with an error status, and the books balance."""
    w = world()
    vf = w.vf
    vf.write(R.TX_BASE_LO, RAM)
    vf.write(R.TX_BASE_HI, 0)
    vf.write(R.TX_LEN, 4)
    f = frame(OTHER, vf.mac())
    w.mem.poke(RAM + 0x4000, f)
    for i in range(3):
        w.mem.poke(RAM + i * DESC_SIZE, DESCRIPTOR.pack(RAM + 0x4000, len(f), 0, 0, 0))
    vf.write(R.CTRL, 0)
    vf.write(R.TX_TAIL, 3)
    assert w.adapter.vf(0).nic.tx_pending == 3
    w.mem.poke(RAM + 1 * DESC_SIZE, DESCRIPTOR.pack(CANARY, 64, 0, 0, 0))
    w.mem.poke(RAM + 2 * DESC_SIZE, DESCRIPTOR.pack(RAM + 0x4000, 5, 0, 0, 0))
    w.snapshot()
    vf.write(R.CTRL, R.Ctrl.TXEN)
    led = w.adapter.vf(0).nic.ledger
    assert (led.tx_sent, led.tx_errors, w.adapter.vf(0).nic.tx_pending) == (2, 1, 0)
    assert w.mem.backing[CANARY] == bytearray([0xA5]) * CANARY_SIZE
    sent = w.uplink.take()
    assert sent[1][:64] == bytes(w.mem.backing[CANARY][:64])  # read as it was then


def test_a_ring_in_a_bar_or_unmapped_is_a_dma_fault_not_an_access() -> None:
    for base in (BAR, 0xDEAD0000, 0):
        w = world()
        vf = w.vf
        vf.write(R.TX_BASE_LO, base)
        vf.write(R.TX_BASE_HI, 0)
        vf.write(R.TX_LEN, 8)
        vf.write(R.CTRL, R.Ctrl.TXEN)
        vf.write(R.TX_TAIL, 5)
        pe = w.adapter.pes.vf(0)
        assert pe.status().code is PeStateCode.FROZEN, hex(base)
        (entry,) = pe.error_log()
        assert entry.source.value == "dma-fault" and entry.address == base
        fn = w.adapter.vf(0)
        assert fn.config.stored("aer.uncor_status") & ids.AerUncorrectable.UNSUPPORTED_REQUEST
        assert fn.nic.ledger.tx_dropped == 1 and fn.nic.tx_pending == 4  # the rest held
        assert fn.nic.balanced


def test_a_full_ring_of_the_largest_size_is_one_bounded_pass() -> None:
    """LEN = 4096, 4095 descriptors handed over in one doorbell, all of them the same
    buffer (a ring "looping" over one frame): one pass, 3 DMA accesses each, done."""
    w = world()
    vf = w.vf
    base, count = RAM, R.RING_MAX  # 64 KiB of ring: all of the driver's RAM
    f = frame(OTHER, vf.mac())
    w.mem.poke(CANARY, f)  # the one buffer, read 4095 times
    w.mem.poke(base, DESCRIPTOR.pack(CANARY, len(f), 0, 0, 0) * count)
    vf.write(R.TX_BASE_LO, base)
    vf.write(R.TX_BASE_HI, 0)
    vf.write(R.TX_LEN, count)
    before = w.mem.accesses
    vf.write(R.TX_TAIL, count - 1)
    fn = w.adapter.vf(0)
    work = w.mem.accesses - before
    assert work <= 3 * (count - 1), work
    assert fn.nic.tx_pending == 0 and fn.nic.balanced
    assert fn.nic.ledger.tx_sent == count - 1 and len(w.uplink.take()) == count - 1
