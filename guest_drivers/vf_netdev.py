"""The VF driver's data path: a small netdev over one virtual function.

`VfNetdev` holds what moves frames (guest_drivers.vf.VfDriver adds the configuration,
the probe and the EEH recovery): a TX and an RX ring of 16-byte descriptors in DMA
memory, a buffer per slot, and the books (guest_drivers.ledger). `send()` only queues
(any thread) and wakes the worker, which posts frames, reaps TX completions and harvests
RX descriptors by looking at DMA memory (no MMIO when idle).

Invariants (under `_lock`): every frame accepted is in exactly one of the backlog, the
TX ring (`_in_ring`) or the ledger's completed/dropped counts; `_held` frames at the
head of the backlog were taken back from the ring by a recovery and are counted
`replayed` when posted again. Ring indices (`_tx_next`, `_tx_clean`, `_rx_next`) are
the worker thread's alone.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from eeh_abi import nic, traffic
from eeh_abi.vocabulary import Kind
from guest_drivers.driver import Driver, DriverState
from guest_drivers.ledger import RxLedger, TxLedger
from guest_drivers.platform.base import PAGE, DmaBuffer, DmaUnavailable, FunctionAccess
from guest_drivers.poll import PollConfig
from guest_drivers.recovery_types import RecoveryPolicy
from guest_drivers.services import Services

ReceiveCallback = Callable[[bytes], None]

_DD = int(nic.DescStatus.DD)
_ERR = int(nic.DescStatus.ERR)
FRAME_OVERHEAD = nic.ETH_HEADER + nic.VLAN_TAG
# A settled driver (guest_drivers.poll: woken by the IdleWatch, sparse work) reaps TX
# completions when it wakes for other work (an RX, a send, its health check), and is
# woken for them alone only once its oldest descriptor in flight is this old: each echo
# of sparse probes then costs one wake-up, not two (the doorbell is a posted write: the
# completion comes after the worker has looked). Otherwise (a send woke it) at once.
TX_REAP_S = 0.25
TX_STUCK_S = 0.1  # a descriptor not completed after this long is a hint the PE froze


class VfNetdev(Driver):
    """The rings and the books of a VF (see the module docstring)."""

    def __init__(self, fn: FunctionAccess, services: Services, *, handlers: bool,
                 poll: PollConfig | None, policy: RecoveryPolicy | None,
                 recovery_lock: threading.Lock | None, tx_ring: int, rx_ring: int,
                 mtu: int | None, max_mtu: int | None, backlog: int, rx_queue: int,
                 on_receive: ReceiveCallback | None, echo: bool) -> None:
        super().__init__(fn, services, handlers=handlers, poll=poll, policy=policy,
                         recovery_lock=recovery_lock)
        if not nic.RING_MIN <= tx_ring <= nic.RING_MAX or not nic.RING_MIN <= rx_ring \
                <= nic.RING_MAX:
            raise ValueError(f"rings hold {nic.RING_MIN}..{nic.RING_MAX} descriptors")
        cfg_mtu = fn.info.config.get("mtu")
        want = mtu or (cfg_mtu if isinstance(cfg_mtu, int) else None) or nic.MTU_DEFAULT
        if not nic.MTU_MIN <= want <= nic.MTU_MAX:
            raise ValueError(f"MTU {want} outside {nic.MTU_MIN}..{nic.MTU_MAX}")
        self.max_mtu = min(nic.MTU_MAX, max(max_mtu or 0, want, nic.MTU_DEFAULT))
        self.buf_size = (self.max_mtu + FRAME_OVERHEAD + 127) & ~127
        self.tx_ring = tx_ring
        self.rx_ring = rx_ring
        self.backlog_limit = backlog
        self.rx_queue_limit = rx_queue
        self._on_receive = on_receive
        self.echo = echo  # answer eeh_abi.traffic probes with echoes (the test traffic)
        self.echoed = 0
        self._want_mtu = want  # the MTU wanted (restored after a reset; bounds send())
        # DMA memory, allocated once
        self._tx_desc: DmaBuffer | None = None
        self._rx_desc: DmaBuffer | None = None
        self._tx_bufs: list[DmaBuffer] = []
        self._rx_bufs: list[DmaBuffer] = []
        # ring state (worker thread only)
        self._tx_frames: list[bytes | None] = [None] * tx_ring
        self._tx_next = 0
        self._tx_clean = 0
        self._tx_since = 0.0  # when the oldest in-flight descriptor was posted
        self._rx_next = 0
        # books, shared with API threads
        self._lock = threading.Lock()
        self._backlog: deque[bytes] = deque()
        self._held = 0  # frames at the head of the backlog taken back from the ring
        self._in_ring = 0
        self.tx = TxLedger()
        self.rx = RxLedger()
        self._rxq: deque[bytes] = deque()
        self._rx_cv = threading.Condition(self._lock)
        self._stopped = False  # queues stopped (recovery)
        self._disconnected = False

    # ------------------------------------------------------------------ public API
    def send(self, frame: Any) -> bool:
        """Queue a frame (bytes or a scapy packet). False if refused (counted dropped)."""
        return self.send_batch([frame if isinstance(frame, bytes) else bytes(frame)]) == 1

    def send_batch(self, frames: list[bytes]) -> int:
        """Queue several frames (bytes) at once: one lock and one wake-up for all of them.
        Returns how many were accepted; the rest are refused (and counted dropped) as
        `send` would refuse them."""
        accepted = self._queue(frames)
        if accepted:
            self._wake.set()
        return accepted

    def _queue(self, frames: list[bytes]) -> int:
        """send_batch without the wake-up (the worker itself: its poll posts them next)."""
        accepted = 0
        limit = self._want_mtu + FRAME_OVERHEAD
        with self._lock:
            down = self._disconnected or self.state in (DriverState.FAILED,
                                                        DriverState.DETACHED)
            for data in frames:
                self.tx.submitted += 1
                if down:
                    self.tx.drop("down")
                elif len(data) < nic.ETH_HEADER:
                    self.tx.drop("runt")
                elif len(data) > limit:
                    self.tx.drop("too-long")
                elif len(self._backlog) >= self.backlog_limit:
                    self.tx.drop("backlog-full")
                else:
                    self._backlog.append(data)
                    accepted += 1
        return accepted

    def queued(self) -> int:
        """Frames accepted and not completed yet (waiting, or in the TX ring)."""
        with self._lock:
            return len(self._backlog) + self._in_ring

    def recv(self, timeout: float = 0.0, max_frames: int | None = None) -> list[bytes]:
        """Frames received so far (waiting up to `timeout` for the first)."""
        with self._rx_cv:
            if not self._rxq and timeout > 0:
                self._rx_cv.wait_for(lambda: bool(self._rxq) or self._disconnected, timeout)
            n = len(self._rxq) if max_frames is None else min(max_frames, len(self._rxq))
            out = [self._rxq.popleft() for _ in range(n)]
            self.rx.delivered += n
            return out

    def recv_packets(self, timeout: float = 0.0) -> list[Any]:
        """Like recv, as scapy Ether packets (scapy is imported only here)."""
        from scapy.layers.l2 import Ether
        return [Ether(f) for f in self.recv(timeout)]

    def wait_tx_done(self, timeout: float) -> bool:
        """Wait until every accepted frame has completed (nothing queued or in the ring)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._backlog and not self._in_ring:
                    return True
            self._wake.set()
            time.sleep(0.002)
        return False

    def ledger_balanced(self) -> bool:
        with self._lock:
            return self.tx.balanced(self._in_ring, len(self._backlog)) and \
                self.rx.balanced(len(self._rxq))

    def _alloc(self) -> None:
        if self._tx_desc is not None:
            return
        dma = self.fn.dma
        self._tx_desc = dma.alloc(self.tx_ring * nic.DESC_SIZE, nic.RING_ALIGN)
        self._rx_desc = dma.alloc(self.rx_ring * nic.DESC_SIZE, nic.RING_ALIGN)
        try:
            self._tx_bufs = [dma.alloc(self.buf_size, 64) for _ in range(self.tx_ring)]
            self._rx_bufs = [dma.alloc(self.buf_size, 64) for _ in range(self.rx_ring)]
        except DmaUnavailable as e:  # a guest without hugepages: page-sized buffers
            wanted = self.max_mtu
            self.buf_size = PAGE
            self.max_mtu = PAGE - FRAME_OVERHEAD
            self._want_mtu = min(self._want_mtu, self.max_mtu)
            self._tx_bufs = [dma.alloc(self.buf_size, 64) for _ in range(self.tx_ring)]
            self._rx_bufs = [dma.alloc(self.buf_size, 64) for _ in range(self.rx_ring)]
            self.report(Kind.MTU_CAPPED, wanted=wanted, max_mtu=self.max_mtu, why=str(e))

    def _program_rings(self, then: Sequence[tuple[int, int]] = ()) -> None:
        """Both rings from scratch: TX empty, every RX buffer posted. Writing a ring's
        base/length empties it in hardware (pending TX descriptors count TX_DROPPED).
        The ring registers and the writes `then` (CTRL, say) go in one run
        (`write32_many`: one vfio-user message in harness mode)."""
        self.fn.write32_many([*self._ring_writes(), *then])

    def _ring_writes(self) -> list[tuple[int, int]]:
        """The rings reset in DMA memory and the books; the register writes that program
        them, in order (`_program_rings`: written at once, or ahead of other writes)."""
        assert self._tx_desc is not None and self._rx_desc is not None
        self._tx_desc.zero()
        self._tx_frames = [None] * self.tx_ring
        self._tx_next = self._tx_clean = 0
        with self._lock:
            self._in_ring = 0
        pack, size = nic.DESC.pack, self.buf_size  # every RX buffer posted, in one write
        self._rx_desc.write(0, b"".join(pack(buf.bus, size, 0, 0, 0) for buf in self._rx_bufs))
        self._rx_next = 0
        writes: list[tuple[int, int]] = []
        for base, ring, count in ((nic.TX_BASE_LO, self._tx_desc, self.tx_ring),
                                  (nic.RX_BASE_LO, self._rx_desc, self.rx_ring)):
            writes += [(base + nic.RING_BASE_LO, ring.bus & 0xFFFFFFFF),
                       (base + nic.RING_BASE_HI, ring.bus >> 32),
                       (base + nic.RING_LEN, count)]
        writes.append((nic.RX_TAIL, self.rx_ring - 1))
        return writes

    def idle_pending(self) -> Callable[[], bool] | None:
        return self.work_pending

    def work_pending(self) -> bool:
        """Whether poll() has anything to do (the IdleWatch's look, any thread): frames
        waiting, a frame at the RX ring's head, TX descriptors in flight (settled: only
        for TX_STUCK_S without completing, the health_due hint, or for TX_REAP_S; the
        completions of younger ones wait for the worker's next wake-up). DMA memory, no
        MMIO. A stale answer costs one period: the next look sees it."""
        if self._disconnected:
            return False
        if self._backlog and not self._stopped:
            return True
        rx, tx = self._rx_desc, self._tx_desc
        if rx is None or tx is None:
            return False
        if rx.u16(self._rx_next * nic.DESC_SIZE + nic.DESC_STATUS) & _DD:
            return True
        if not self._in_ring:
            return False
        if not self.poller.settled:
            return True
        age = time.monotonic() - self._tx_since
        return age > TX_REAP_S or (age > TX_STUCK_S and not tx.u16(
            self._tx_clean * nic.DESC_SIZE + nic.DESC_STATUS) & _DD)

    def health_due(self, now: float) -> bool:
        # a descriptor that does not complete is a hint the PE froze
        return bool(self._in_ring) and now - self._tx_since > TX_STUCK_S and \
            now - self._last_health > TX_STUCK_S

    def _tx_post(self) -> int:
        assert self._tx_desc is not None
        n = self.tx_ring
        posted = 0
        desc, bufs, frames = self._tx_desc, self._tx_bufs, self._tx_frames
        while True:
            with self._lock:
                if not self._backlog or self._in_ring >= n - 1:
                    break
                frame = self._backlog.popleft()
                if self._held:
                    self._held -= 1
                    self.tx.replayed += 1
                slot = self._tx_next
                bufs[slot].write(0, frame)
                desc.write(slot * nic.DESC_SIZE, nic.DESC.pack(bufs[slot].bus, len(frame),
                                                               0, 0, 0))
                frames[slot] = frame
                self._tx_next = (slot + 1) % n
                if not self._in_ring:
                    self._tx_since = time.monotonic()
                self._in_ring += 1
                self.tx.posted += 1
            posted += 1
        if posted:
            self.fn.write32(nic.TX_TAIL, self._tx_next)
        return posted

    def _tx_reap(self) -> int:
        desc = self._tx_desc
        if desc is None:
            return 0
        done = 0
        n = self.tx_ring
        while self._in_ring:
            slot = self._tx_clean
            status = desc.u16(slot * nic.DESC_SIZE + nic.DESC_STATUS)
            if not status & _DD:
                break
            frame = self._tx_frames[slot]
            with self._lock:
                if status & _ERR:
                    self.tx.errors += 1
                    self.tx.error_codes[status >> nic.DESC_ERROR_SHIFT] += 1
                else:
                    self.tx.sent += 1
                    self.tx.bytes_sent += len(frame or b"")
                self._in_ring -= 1
            self._tx_frames[slot] = None
            self._tx_clean = (slot + 1) % n
            self._tx_since = time.monotonic()
            done += 1
        return done

    def _tx_reclaim(self) -> int:
        """Take every unfinished descriptor back (done ones are reaped first); the frames
        go to the head of the backlog, in order, to be replayed."""
        self._tx_reap()
        n = self.tx_ring
        frames = []
        slot = self._tx_clean
        for _ in range(self._in_ring):
            frame = self._tx_frames[slot]
            if frame is not None:
                frames.append(frame)
            self._tx_frames[slot] = None
            slot = (slot + 1) % n
        with self._lock:
            self._backlog.extendleft(reversed(frames))
            self._held += len(frames)
            self.tx.reclaimed += len(frames)
            self._in_ring = 0
        self._tx_next = self._tx_clean = 0
        return len(frames)

    def _rx_poll(self, limit: int = 64) -> int:
        desc = self._rx_desc
        if desc is None:
            return 0
        n = self.rx_ring
        got = 0
        last = -1
        while got < limit:
            slot = self._rx_next
            off = slot * nic.DESC_SIZE
            status = desc.u16(off + nic.DESC_STATUS)
            if not status & _DD:
                break
            length = desc.u16(off + nic.DESC_LENGTH)
            buf = self._rx_bufs[slot]
            if status & _ERR:
                with self._lock:
                    self.rx.errors += 1
                    self.rx.error_codes[status >> nic.DESC_ERROR_SHIFT] += 1
            else:
                self._deliver(buf.read(0, min(length, self.buf_size)))
            desc.write(off, nic.DESC.pack(buf.bus, self.buf_size, 0, 0, 0))
            last = slot
            self._rx_next = (slot + 1) % n
            got += 1
        if last >= 0:
            self.fn.write32(nic.RX_TAIL, last)
        return got

    def _deliver(self, frame: bytes) -> None:
        cb = self._on_receive
        reply = traffic.echo_of(frame) if self.echo else None
        with self._rx_cv:
            self.rx.received += 1
            self.rx.bytes += len(frame)
            if reply is not None:  # a probe of the test traffic: consumed by the echo
                self.rx.delivered += 1
                self.echoed += 1
            elif cb is None:
                if len(self._rxq) >= self.rx_queue_limit:
                    self.rx.dropped += 1
                    return
                self._rxq.append(frame)
                self._rx_cv.notify_all()
                return
            else:
                self.rx.delivered += 1
        if reply is not None:  # posted by this poll's _tx_post: no wake-up of our own
            self._queue([reply])
        elif cb is not None:
            cb(frame)
