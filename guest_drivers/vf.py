"""The VF driver: a small netdev over one virtual function, with EEH recovery.

    vf = VfDriver(fn, services)        # fn: a FunctionAccess from the backend
    vf.start()                         # probe + worker thread
    vf.send(frame)                     # bytes or a scapy packet (bytes(pkt))
    vf.recv(timeout=1.0)               # received frames (test probes: echoed instead)
    vf.mac, vf.vlan, vf.mtu            # settable; restored after a recovery
    vf.counters()                      # the ledger (guest_drivers.ledger), exact

Data path (guest_drivers.vf_netdev.VfNetdev, this driver's base): a TX and an RX ring
of 16-byte descriptors in DMA memory, a buffer per slot, and the books; here: the
configuration (MAC/VLAN/MTU), the probe and the recovery.

Recovery (`error_detected` -> `mmio_enabled` -> [`slot_reset`] -> `resume`):
- error_detected(FROZEN): stop the queues, free nothing (frames not completed stay in
  the books) -> CAN_RECOVER; the framework thaws MMIO once the lockout is lifted.
- mmio_enabled (state 4: MMIO on, DMA still stopped). The hardware restarts a ring where
  it stopped when DMA is thawed, so the rings are dealt with NOW, before DMA comes back:
  TX descriptors already done are reaped, the others are taken back (`reclaimed`, held
  for replay) and the rings are reprogrammed empty (the device counts those descriptors
  TX_DROPPED); RX frames already written are harvested and every RX buffer re-posted.
  If the function lost its configuration (an adapter reset clears a VF's config space:
  Command reads 0, CTRL stopped, MAC not valid, or the mailbox says "PF reset in
  progress"), it returns NEED_RESET and the framework resets the VF PE (an FLR).
- slot_reset (after the FLR, configure-pe and the config-space restore): restore
  MAC/VLAN/MTU and reprogram the rings, then look at the mailbox: unless it says "PF
  reset done" (MBX.RSTD), the PF was resetting (its per-VF settings cleared until its
  driver applies them again): wait for RSTD and restore again.
- resume: restart the queues; held frames go out first (`replayed`).
- error_detected(PERM_FAILURE): disconnect; every pending frame is counted dropped.
- a reset of the function it did not ask for (an operator's `eeh-reset-pe`, seen by the
  pushed `pe-reset-done`, Command cleared or RESET_COUNT moved): a recovery with the
  restore of slot_reset (guest_drivers.recovery, "An unexpected reset is a recovery").
- after a failure the platform cleared (a reset of its PE or of the adapter PE above):
  probed again (Driver._wait_revival) once its function is back (SR-IOV re-enabled).
- a PE found frozen or left recovering at probe (e.g. a crashed driver's rings unmapped
  under the device): a recovery (Driver._recover_at_probe) whose slot_reset probes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from eeh_abi import nic
from eeh_abi.papr import ChannelState, ErsResult
from eeh_abi.vf_settings import format_mac
from eeh_abi.vf_settings import parse_mac as parse_mac_text
from eeh_abi.vocabulary import Kind
from guest_drivers.driver import ALL_ONES32, MEM_BME, DriverError, DriverState
from guest_drivers.platform.base import FunctionAccess
from guest_drivers.poll import PollConfig
from guest_drivers.recovery import found_unrecovered
from guest_drivers.recovery_types import RecoveryPolicy
from guest_drivers.services import Services
from guest_drivers.vf_netdev import ReceiveCallback, VfNetdev

log = logging.getLogger("guest_drivers.vf")


def parse_mac(value: object) -> bytes | None:
    """A MAC as "02:ee:00:00:01:00", "02ee00000100", 6 bytes or an int; None if absent."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)) and len(value) == 6:
        return bytes(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 48:
        return value.to_bytes(6, "big")
    return parse_mac_text(value)


class VfDriver(VfNetdev):
    kind = "vf"
    driver_name = "eeh-vf"
    # restores in one slot_reset before giving up on a PF that keeps resetting under it
    # (config-lost: the recovery then resets the VF again, a bounded number of times)
    restore_tries = 3

    def __init__(self, fn: FunctionAccess, services: Services, *, handlers: bool = True,
                 tx_ring: int = 64, rx_ring: int = 64, mtu: int | None = None,
                 max_mtu: int | None = None, backlog: int = 4096, rx_queue: int = 8192,
                 on_receive: ReceiveCallback | None = None, poll: PollConfig | None = None,
                 policy: RecoveryPolicy | None = None, pf_wait_s: float = 60.0,
                 echo: bool = True, recovery_lock: threading.Lock | None = None) -> None:
        super().__init__(fn, services, handlers=handlers, poll=poll, policy=policy,
                         recovery_lock=recovery_lock, tx_ring=tx_ring, rx_ring=rx_ring,
                         mtu=mtu, max_mtu=max_mtu, backlog=backlog, rx_queue=rx_queue,
                         on_receive=on_receive, echo=echo)
        self.pf_wait_s = pf_wait_s
        # wanted configuration (the driver's own copy, restored after a reset; the MTU
        # is the data path's: VfNetdev._want_mtu)
        self._want_mac: bytes | None = None  # None: the function's own (or the PF's admin)
        self._want_vlan: int | None = None
        self._vlan_set = False  # False: leave the port VLAN as the function has it
        self._cfg_gen = 0
        self._cfg_done = 0
        self._cfg_cv = threading.Condition()
        # what the hardware shows (read back after each change)
        self._hw_mac = b"\0" * 6
        self._hw_vlan: int | None = None
        self._hw_mtu = 0
        self.recoveries = 0
        self.resets = 0
        self._config_before: dict[str, Any] = {}

    # ------------------------------------------------------------------ public API
    @property
    def mac(self) -> bytes:
        return self._hw_mac

    @mac.setter
    def mac(self, value: bytes | str) -> None:
        mac = parse_mac(value)
        if mac is None or mac[0] & 1:
            raise ValueError("a VF's MAC must be a unicast address")
        self._set_config(lambda: setattr(self, "_want_mac", mac))

    @property
    def vlan(self) -> int | None:
        return self._hw_vlan

    @vlan.setter
    def vlan(self, value: int | None) -> None:
        if value is not None and not 0 <= value <= nic.VLAN_VID:
            raise ValueError(f"VLAN ID 0..{nic.VLAN_VID}")
        def change() -> None:
            self._want_vlan = value
            self._vlan_set = True

        self._set_config(change)

    @property
    def mtu(self) -> int:
        return self._want_mtu

    @mtu.setter
    def mtu(self, value: int) -> None:
        if not nic.MTU_MIN <= value <= self.max_mtu:
            raise ValueError(f"MTU {value} outside {nic.MTU_MIN}..{self.max_mtu} (buffers "
                             f"hold {self.buf_size} bytes; pass max_mtu to hold more)")
        self._set_config(lambda: setattr(self, "_want_mtu", value))

    def counters(self) -> dict[str, Any]:
        out = super().counters()
        with self._lock:
            out["tx"] = self.tx.to_json(self._in_ring, len(self._backlog), self._held)
            out["rx"] = self.rx.to_json(len(self._rxq))
        out.update(mac=format_mac(self._hw_mac), vlan=self._hw_vlan, mtu=self._want_mtu,
                   recoveries=self.recoveries, resets=self.resets, echoed=self.echoed)
        return out

    def _set_config(self, change: Callable[[], None]) -> None:
        with self._cfg_cv:
            change()
            self._cfg_gen += 1
            gen = self._cfg_gen
        if threading.current_thread() is self._thread:
            self._apply_config()
            return
        self._wake.set()
        if self.state is not DriverState.UP:
            return  # applied at probe / restored by recovery
        with self._cfg_cv:
            self._cfg_cv.wait_for(lambda: self._cfg_done >= gen or self.state
                                  is not DriverState.UP, 10.0)

    # ------------------------------------------------------------------ probe
    def probe(self) -> None:
        fn = self.fn
        rec = self.recovery
        if rec is not None and rec.failed and self._poll_pf(
                lambda: self.fn.config_read(nic.CFG_COMMAND, 2) != 0xFFFF) is None:
            # a probe after a failure the platform cleared (Driver._wait_revival): the
            # adapter's reset took the VFs away until the PF driver brings SR-IOV back
            raise DriverError(f"{self.name}: the function did not come back within "
                              f"{self.pf_wait_s} s (its config space reads all-ones)")
        self.enable_function()
        waited = self._wait_pf_ready()
        if waited is None or waited < 0:
            raise DriverError(f"{self.name}: the PF did not finish its reset within "
                              f"{self.pf_wait_s} s (mailbox RSTI)")
        # a clean start: NIC state and counters reset
        fn.write32_many([(nic.CTRL, nic.Ctrl.RST), (nic.STATUS, nic.Status.RESET_DONE)])
        self._alloc()
        with self._lock:
            self._stopped = False
            self._disconnected = False
        self._apply_config()
        self._check_identity()
        self._program_rings(then=[(nic.CTRL, nic.Ctrl.TXEN | nic.Ctrl.RXEN)])
        self.note_resets()

    def _check_identity(self) -> None:
        """The PF forced the MAC the platform configured for this VF: a function showing
        another one is not this VF (a wrong slot lookup in a guest)."""
        try:
            expected = parse_mac(self.fn.info.config.get("mac"))
        except ValueError:
            return
        if expected is not None and self._want_mac is None and self._hw_mac != expected:
            raise DriverError(
                f"{self.name}: the function shows MAC {format_mac(self._hw_mac)}, the platform "
                f"configured {format_mac(expected)} for it: not this VF (or its PF driver "
                "applies other settings)")

    def probe_detail(self) -> dict[str, Any]:
        return {"mac": format_mac(self._hw_mac), "vlan": self._hw_vlan, "mtu": self._hw_mtu,
                "tx_ring": self.tx_ring, "rx_ring": self.rx_ring, "buf_size": self.buf_size}

    def _pf_ready(self) -> bool | None:
        """One look at the mailbox: True if it says "PF reset done", False while the PF
        resets (or the function reads all-ones), None when the function lost its config
        space (memory decoding off: the PF re-created its VFs)."""
        mbx = self.fn.read32(nic.VF_MBX)
        if mbx != ALL_ONES32 and not mbx & nic.Mbx.RSTI and mbx & nic.Mbx.RSTD:
            return True
        cmd = self.fn.config_read(nic.CFG_COMMAND, 2) if mbx == ALL_ONES32 else 0xFFFF
        return None if cmd != 0xFFFF and not cmd & nic.Command.MEMORY else False

    def _wait_pf_ready(self) -> float | None:
        """Wait for the mailbox's "PF reset done"; seconds waited, None on timeout, -1.0
        when the function lost its config space again while waiting (the PF re-created
        its VFs after this VF's reset: only another reset brings it back)."""
        return self._poll_pf(self._pf_ready)

    def _poll_pf(self, look: Callable[[], bool | None]) -> float | None:
        """Poll `look` (1 ms, doubling to 50 ms) while the PF driver sets the adapter up:
        seconds until it says True, -1.0 if it says None (give up), None after pf_wait_s,
        when the driver stops or its recovery is interrupted."""
        t0 = time.monotonic()
        delay = 0.001
        while (seen := look()) is False:
            rec = self.recovery
            if time.monotonic() - t0 > self.pf_wait_s or self._stop.is_set() or (
                    rec is not None and rec.running and rec.interrupted):
                return None
            self.services.flush()  # no report held while it sleeps (a recovery round)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        return -1.0 if seen is None else time.monotonic() - t0

    def _apply_config(self, then: Sequence[tuple[int, int]] = (), *,
                      reset_count: bool = False) -> int | None:
        """Write the wanted MAC/VLAN/MTU, then read back what the function shows. The
        writes go as one run (`write32_many`: one posted vfio-user message in harness
        mode), followed in it by the writes `then` (the restore's rings and CTRL); the
        read-backs come after the run (a read after a write on one function sees it), as
        one `read_many`: MAC_LO+MAC_HI and MTU+VLAN (8 bytes each), and RESET_COUNT with
        `reset_count` (returned: slot_reset's, the count this driver set the function up
        at): one REGION_READ in harness mode, a guest's two or three loads. One round trip.
        A function showing a MAC without the valid bit (none wanted: the function's own)
        gets it set and read again (one run and one read more)."""
        fn = self.fn
        with self._cfg_cv:
            gen = self._cfg_gen
            want_mac, want_vlan, want_mtu = self._want_mac, self._want_vlan, self._want_mtu
            vlan_set = self._vlan_set
        writes: list[tuple[int, int]] = []
        if want_mac is not None:
            writes += [(nic.MAC_LO, int.from_bytes(want_mac[0:4], "little")),
                       (nic.MAC_HI, int.from_bytes(want_mac[4:6], "little") | nic.MacHi.VALID)]
        if vlan_set:
            writes.append((nic.VLAN, 0 if want_vlan is None else int(nic.Vlan.EN) | want_vlan))
        writes.append((nic.MTU, want_mtu))
        fn.write32_many([*writes, *then])
        spans = [(nic.MAC_LO, 8), (nic.MTU, 8)] + ([(nic.RESET_COUNT, 4)] if reset_count
                                                   else [])
        mac, mtu_vlan, *count = fn.read_many(spans)
        hi = mac >> 32
        if want_mac is None and hi != ALL_ONES32 and not hi & nic.MacHi.VALID:
            fn.write32(nic.MAC_HI, hi | nic.MacHi.VALID)
            mac = fn.read64(nic.MAC_LO)
        lo, hi = mac & ALL_ONES32, mac >> 32
        self._hw_mac = lo.to_bytes(4, "little") + (hi & nic.MAC_HI_ADDR).to_bytes(2, "little")
        vlan = mtu_vlan >> 32
        self._hw_vlan = vlan & nic.VLAN_VID if vlan & nic.Vlan.EN else None
        self._hw_mtu = mtu_vlan & ALL_ONES32
        with self._cfg_cv:
            self._cfg_done = max(self._cfg_done, gen)
            self._cfg_cv.notify_all()
        return count[0] if count else None

    # ------------------------------------------------------------------ data path
    def poll(self) -> bool:
        if self._disconnected:
            return False
        work = 0
        if self._cfg_done < self._cfg_gen and not self._stopped:
            self._apply_config()
            work += 1
        work += self._rx_poll()
        work += self._tx_reap()
        if not self._stopped:
            work += self._tx_post()
        return work > 0

    # ------------------------------------------------------------------ recovery
    def error_detected(self, state: ChannelState) -> ErsResult:
        if state is ChannelState.PERM_FAILURE:
            self._disconnect("permanent-failure")
            return ErsResult.DISCONNECT
        if not self.set_up:  # found unrecovered at probe: reset, then probe (slot_reset)
            return ErsResult.NEED_RESET
        with self._lock:
            self._stopped = True
            if not self._config_before:  # the first round of this recovery
                self._config_before = self.config()
        self.recoveries += 1
        rec = self.recovery
        if rec is not None and rec.last_freeze.get("side_effect"):
            # frozen because the adapter PE froze: the adapter driver's reset wipes this
            # VF (its config space, MAC, rings), so a thaw alone cannot bring it back. Ask
            # for the reset at once, as Linux's igbvf and ixgbevf do; the rings are
            # harvested in slot_reset (DMA memory needs no MMIO)
            return ErsResult.NEED_RESET
        return ErsResult.CAN_RECOVER

    def mmio_enabled(self) -> ErsResult:
        reclaimed = self._tx_reclaim()
        harvested = self._rx_poll(self.rx_ring)
        lost = self._config_lost()
        if lost is None and self._restore()[0] is not True:
            # the PF reset under the restore (the mailbox is looked at after it, not
            # before: one round trip): its per-VF settings are gone until its driver
            # is back, which slot_reset waits for
            lost = "mailbox: PF reset in progress"
        if lost is not None:
            self.report(Kind.CONFIG_LOST, why=lost, reclaimed=reclaimed, harvested=harvested)
            return ErsResult.NEED_RESET
        self.report(Kind.RINGS_REARMED, reclaimed=reclaimed, harvested=harvested)
        return ErsResult.RECOVERED

    def _config_lost(self) -> str | None:
        fn = self.fn
        cmd = fn.config_read(nic.CFG_COMMAND, 2)
        if cmd == 0xFFFF or cmd & MEM_BME != MEM_BME:
            return f"command {cmd:#06x}"
        # CTRL+STATUS and MAC_HI: one read_many (one round trip in harness mode)
        ctrl_status, mac_hi = fn.read_many([(nic.CTRL, 8), (nic.MAC_HI, 4)])
        if ctrl_status >> 32 == ALL_ONES32:
            return "STATUS reads all-ones"
        if not mac_hi & nic.MacHi.VALID:
            return "MAC not valid"
        ctrl = ctrl_status & ALL_ONES32
        if ctrl & (nic.Ctrl.TXEN | nic.Ctrl.RXEN) != nic.Ctrl.TXEN | nic.Ctrl.RXEN:
            return f"CTRL {ctrl:#x}: rings stopped"
        return None

    def slot_reset(self) -> ErsResult:
        self.resets += 1
        if not self.set_up:  # found unrecovered at probe: the function reset, now probed
            self.probe()  # its DriverError: reported by the recovery, DISCONNECT
            self.set_up = True
            self.report(Kind.CONFIG_RESTORED, at_probe=True, **self.config())
            return ErsResult.RECOVERED
        # what completed before the freeze is still in DMA memory: take it (a no-op when
        # mmio_enabled already did), then every unfinished TX descriptor back for replay
        self._rx_poll(self.rx_ring)
        self._tx_reclaim()
        # Restore first, then look at the mailbox: the restore holds only if the PF was
        # not resetting while it ran. A PF reset clears the PF's per-VF settings (the
        # admin MAC and VLAN) until its driver applies them again and writes
        # pf_reset_done, so what the read-backs saw meanwhile is not this VF's
        # configuration: wait for "PF reset done", then restore again. (The common case,
        # the PF long done, costs no round trip more than restoring.) Invariant: the
        # configuration reported below was read back while the mailbox said "PF reset
        # done" both before (the lockout lifts only after it) and after.
        waited = 0.0
        for _ in range(self.restore_tries):
            ready, count = self._restore(reset_count=True)
            if ready is True:
                break
            # not restored after all: the rings stopped again while the PF resets (a
            # round interrupted in this wait then finds the function not set up)
            self.fn.write32(nic.CTRL, 0)
            wait = self._wait_pf_ready()
            if wait is not None and wait < 0:
                self.report(Kind.CONFIG_LOST, why="config space lost again after the reset")
                return ErsResult.NEED_RESET  # the framework resets again (a bounded number)
            if wait is None:
                rec = self.recovery
                if rec is not None and rec.interrupted:
                    return ErsResult.NEED_RESET  # the framework restarts (or stops) anyway
                self.report(Kind.PF_RESET_TIMEOUT, waited_s=self.pf_wait_s)
                return ErsResult.DISCONNECT
            waited += wait
        else:
            self.report(Kind.CONFIG_LOST, why=f"the PF reset during each of {self.restore_tries} "
                        "restores")
            return ErsResult.NEED_RESET
        self.report(Kind.PF_RESET_DONE, waited_ms=round(waited * 1000, 3))
        # RESET_COUNT as read with the restore's read-backs, before the mailbox said "PF
        # reset done": a reset after it shows as a count moved (Driver.reset_behind)
        self._resets_seen = ALL_ONES32 if count is None else count
        self.report(Kind.CONFIG_RESTORED, mac=format_mac(self._hw_mac), vlan=self._hw_vlan,
                    mtu=self._hw_mtu)
        return ErsResult.RECOVERED

    def _restore(self, *, reset_count: bool = False) -> tuple[bool | None, int | None]:
        """MAC/VLAN/MTU written, the rings reprogrammed and started (CTRL), all in one run
        of writes (one vfio-user message in harness mode, in that order), then
        MAC/VLAN/MTU (and RESET_COUNT, `reset_count`) read back in one read; then one look
        at the mailbox (`_pf_ready`): True if the PF is not resetting, so what was read
        back is this VF's configuration. (That look, RESET_COUNT read or None.)"""
        count = self._apply_config(
            then=[*self._ring_writes(), (nic.CTRL, nic.Ctrl.TXEN | nic.Ctrl.RXEN)],
            reset_count=reset_count)
        return self._pf_ready(), count

    def resume(self) -> None:
        with self._lock:
            held = self._held
            self._stopped = False
        self.report(Kind.REPLAY, frames=held)
        self._wake.set()

    def config(self) -> dict[str, Any]:
        """MAC, VLAN and MTU as the function shows them (read back at the last change)."""
        return {"mac": format_mac(self._hw_mac), "vlan": self._hw_vlan, "mtu": self._hw_mtu}

    def recovery_detail(self) -> dict[str, Any]:
        """Added to the "recovered" report: the books and the configuration before the
        error and now (the host's claim check compares them)."""
        with self._lock:
            ledger = self.tx.to_json(self._in_ring, len(self._backlog), self._held)
            ledger["rx"] = self.rx.to_json(len(self._rxq))
            ledger["balanced"] = ledger["balanced"] and ledger["rx"]["balanced"]
            before, self._config_before = self._config_before, {}
        return {"ledger": ledger, "config": self.config(), "config_before": before}

    def _disconnect(self, reason: str) -> None:
        if self._tx_desc is not None:
            self._tx_reap()
        with self._lock:
            self.tx.drop(reason, self._in_ring + len(self._backlog))
            self._backlog.clear()
            self._held = 0
            self._in_ring = 0
            self._disconnected = True
            self._stopped = True
            self._rx_cv.notify_all()
        self._tx_frames = [None] * self.tx_ring

    def on_disconnected(self) -> None:
        if not self._disconnected:
            self._disconnect("disconnected")

    def on_detach(self, reason: str) -> None:
        try:
            if self._tx_desc is not None:
                self._tx_reap()  # what completed before the removal counts as sent
        except Exception:  # the ring's memory or BAR may be gone with the function
            log.debug("%s: reaping TX after removal failed", self.name, exc_info=True)
        with self._lock:
            self.tx.drop(f"detached: {reason}", self._in_ring + len(self._backlog))
            self._backlog.clear()
            self._held = 0
            self._in_ring = 0
        self._tx_frames = [None] * self.tx_ring
        self._tx_next = self._tx_clean = 0
        # the DMA memory belonged to the function's access object: a new one brings its own
        self._tx_desc = self._rx_desc = None
        self._tx_bufs, self._rx_bufs = [], []

    def recovery_policy(self) -> RecoveryPolicy:
        return self.policy or RecoveryPolicy.for_vf()

    def found_unrecovered(self) -> dict[str, Any] | None:
        return found_unrecovered(self.services, self.pe)
