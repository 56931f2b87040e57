"""The adapter (PF) driver: brings the adapter up, configures its VFs, and recovers the
adapter PE.

Probe: enable the function (Command memory + bus master), wait for ADAPTER_STATUS.ready,
then the adapter configuration this driver owns:
- the switch: SWITCH_CTRL loopback + uplink;
- for each VF the platform enabled: VFCFG n MAC (admin: forced on the VF), VLAN (en: a
  forced port VLAN) and anti-spoof, from the `adapter` entry of `query-functions`
  (`vfs: [{vf, mac, vlan, mtu, anti_spoof}]`; without it: MAC = PF MAC + 1 + n, no
  VLAN, no anti-spoof); VF_TXEN / VF_RXEN for every enabled VF;
- ADAPTER_CTRL.pf_reset_done: every VF mailbox shows "PF reset done".
It then serves VF mailbox requests (acknowledges and counts them) and watches
ADAPTER_STATUS (all-ones, confirmed by the platform, starts recovery).

Recovery of the adapter PE (the order the host's timeline shows):
    error_detected(FROZEN): "error-log" (slot-error-detail) -> NEED_RESET
    framework: "reset" (hot; fundamental if the PE does not come back; at most 3 tries),
               "configure" (configure-pe: the platform re-enables SR-IOV; the driver's
               saved Command and MSI-X enable restored)
    slot_reset: wait for ADAPTER_STATUS.ready, restore everything of the probe, write
               pf_reset_done -> "adapter-recovered"
    resume:    open-sriov-allow-unfreeze for every VF PE -> "allow-unfreeze"
    framework: "resume", "recovered"
error_detected(PERM_FAILURE): the driver disconnects ("permanent-failure").
A reset of the adapter PE it did not ask for (the operator's `eeh-reset-pe pe=adapter`)
is a recovery (guest_drivers.recovery): configure-pe (SR-IOV back), the config space,
slot_reset and resume as above; the VF drivers then see their functions reset and
re-initialise them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eeh_abi import nic
from eeh_abi.adapter_setup import AdapterSetup, adapter_setup, pf_mac_of
from eeh_abi.hcall import HcallError
from eeh_abi.papr import ChannelState, ErsResult
from eeh_abi.schema import Call
from eeh_abi.vf_settings import VfSettings, format_mac
from eeh_abi.vocabulary import Kind
from guest_drivers.driver import ALL_ONES32, Driver, DriverError
from guest_drivers.platform.base import FunctionAccess
from guest_drivers.poll import PollConfig
from guest_drivers.recovery import found_unrecovered
from guest_drivers.recovery_types import RecoveryPolicy
from guest_drivers.services import Services

FIRST_VF_OFFSET = 0x80  # the adapter's SR-IOV First VF Offset and VF Stride, for PE
VF_STRIDE = 1  # addresses when the platform does not list them (docs/registers.md)


@dataclass(frozen=True)
class AdapterSettings:
    """The `adapter` entry of the PF's `query-functions` entry."""

    num_vfs: int | None = None
    vf_pes: tuple[int, ...] | None = None
    vfs: Mapping[int, VfSettings] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any] | None) -> AdapterSettings:
        if not entry:
            return cls()
        num = entry.get("num_vfs")
        pes = entry.get("vf_pes")
        vfs: dict[int, VfSettings] = {}
        for item in entry.get("vfs") or []:
            if not isinstance(item, Mapping):
                continue
            n = item.get("vf", item.get("index"))
            if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < nic.MAX_VFS:
                raise DriverError(f"adapter entry: bad VF number in {item!r}")
            try:
                vfs[n] = VfSettings.from_json(item)
            except ValueError as e:
                raise DriverError(f"adapter entry: vf{n}: {e}") from None
        return cls(num if isinstance(num, int) and not isinstance(num, bool) else None,
                   tuple(int(p) for p in pes) if isinstance(pes, list) else None, vfs)


class PfDriver(Driver):
    kind = "pf"
    driver_name = "eeh-pf"
    health_register = nic.ADAPTER_STATUS  # at most 64 VFs: bits 31:24 never all-ones

    def __init__(self, fn: FunctionAccess, services: Services, *,
                 settings: AdapterSettings | None = None, poll: PollConfig | None = None,
                 policy: RecoveryPolicy | None = None, mailbox_s: float = 0.1,
                 ready_s: float = 30.0) -> None:
        super().__init__(fn, services, handlers=True, poll=poll, policy=policy)
        self.settings = settings if settings is not None else AdapterSettings.from_entry(
            fn.info.adapter)
        self.mailbox_s = mailbox_s
        self.ready_s = ready_s
        self.pf_mac = b"\0" * 6
        self.num_vfs = 0
        self.vf_config: dict[int, VfSettings] = {}
        self.mailbox_messages = 0
        self.vflrs = 0
        self.allowed: list[int] = []
        self.recoveries = 0
        self._next_mailbox = 0.0
        self._error_time = 0.0
        self._setup: tuple[tuple[bytes, int], AdapterSetup] | None = None
        # the last adapter setup's writes and their ms, and the last ready wait's ADAPTER_
        # STATUS reads and ms (in the adapter-recovered report: where its time went)
        self.last_setup: dict[str, Any] = {}
        self.last_ready: dict[str, Any] = {}

    # ------------------------------------------------------------------ probe
    def probe(self) -> None:
        fn = self.fn
        self.enable_function()
        status = self._wait_ready()
        if status is None:
            raise DriverError(f"{self.name}: the adapter is not ready (ADAPTER_STATUS)")
        self.pf_mac = pf_mac_of(fn.read32(nic.MAC_LO), fn.read32(nic.MAC_HI))
        self._configure_adapter(status)
        self.note_resets()

    def found_unrecovered(self) -> dict[str, Any] | None:
        """The adapter PE as the platform shows it before the probe, if it is frozen (the
        adapter failed while no adapter driver ran) or still recovering (the driver before
        this one died mid-recovery, the VFs locked out): this driver's probe is then a
        recovery (Driver._main). None when the PE is normal, or permanently failed, or the
        platform cannot say (the probe then goes as it would): the VF driver's rule too
        (guest_drivers.recovery.found_unrecovered)."""
        return found_unrecovered(self.services, self.pe)

    def probe_detail(self) -> dict[str, Any]:
        return {"num_vfs": self.num_vfs, "pf_mac": format_mac(self.pf_mac),
                "vfs": {n: self._vf_json(s) for n, s in sorted(self.vf_config.items())}}

    @staticmethod
    def _vf_json(s: VfSettings) -> dict[str, Any]:
        return {"mac": s.mac, "vlan": s.vlan, "anti_spoof": s.anti_spoof}

    def _wait_ready(self) -> int | None:
        """ADAPTER_STATUS once READY; None after ready_s, when the driver stops or when its
        recovery is interrupted (the adapter froze again while this waits: all-ones)."""
        t0 = time.monotonic()
        delay = 0.001
        reads = 0
        while True:
            status = self.fn.read32(nic.ADAPTER_STATUS)
            reads += 1
            if status != ALL_ONES32 and status & nic.AdapterStatus.READY:
                self.last_ready = {"ready_reads": reads,
                                   "ready_ms": round((time.monotonic() - t0) * 1000, 3)}
                return status
            rec = self.recovery
            if time.monotonic() - t0 > self.ready_s or self._stop.is_set() or (
                    rec is not None and rec.running and rec.interrupted):
                return None
            self.services.flush()  # no report held while it sleeps (a recovery round)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _configure_adapter(self, status: int) -> None:
        """Everything the adapter driver owns, from scratch (probe and after a reset):
        eeh_abi.adapter_setup, the sequence the platform also applies when it recovers
        the adapter without this driver."""
        fn = self.fn
        present = (status & nic.ADAPTER_STATUS_NUM_VFS) >> 16
        num = self.settings.num_vfs if self.settings.num_vfs is not None else present
        if num != present:
            self.report(Kind.VF_COUNT_MISMATCH, configured=num, present=present)
            num = min(num, present)
        self.num_vfs = num
        key = (self.pf_mac, num)
        if self._setup is None or self._setup[0] != key:
            # the same settings after every reset: built once (at 64 VFs a few ms of a
            # TCG guest's Python, before the lockout's release)
            self._setup = (key, adapter_setup(self.pf_mac, num, self.settings.vfs))
        setup = self._setup[1]
        self.vf_config = dict(setup.vfs)
        t0 = time.monotonic()
        write32, write64 = fn.write32, fn.write64
        for w in setup.writes:
            (write64 if w.width == 8 else write32)(w.offset, w.value)
        self.last_setup = {"writes": len(setup.writes),
                           "writes_ms": round((time.monotonic() - t0) * 1000, 3)}

    def vf_pes(self) -> list[int]:
        pes = self.settings.vf_pes
        if pes is not None:
            return list(pes[:self.num_vfs]) if self.num_vfs else list(pes)
        bus = self.addr & ~0xFFFF
        return [bus | ((FIRST_VF_OFFSET + n * VF_STRIDE) << 8) for n in range(self.num_vfs)]

    # ------------------------------------------------------------------ running
    def poll(self) -> bool:
        now = time.monotonic()
        if now < self._next_mailbox:
            return False
        self._next_mailbox = now + self.mailbox_s
        fn = self.fn
        req = fn.read64(nic.MBX_REQ)
        if req == (1 << 64) - 1:
            self.saw_all_ones("MBX_REQ", req)
            return False
        work = False
        if req:
            for n in range(nic.MAX_VFS):
                if req & (1 << n):
                    self._serve_mailbox(n)
                    work = True
        vflr = fn.read64(nic.VFLR)
        if vflr and vflr != (1 << 64) - 1:
            fn.write64(nic.VFLR, vflr)  # RW1C; VFCFG and VF_TXEN/RXEN survive a VF's FLR
            self.vflrs += bin(vflr).count("1")
            work = True
        return work

    def _serve_mailbox(self, n: int) -> None:
        """Read VF n's message and acknowledge it (no requests are defined yet)."""
        fn = self.fn
        words = [fn.read32(nic.pf_mbx_mem(n) + 4 * i) for i in range(nic.MBX_MEM_SIZE // 4)]
        fn.write32(nic.pf_mbx(n), nic.PfMbx.ACK)
        self.mailbox_messages += 1
        self.report(Kind.MAILBOX, vf=n, first_word=words[0])

    # ------------------------------------------------------------------ recovery
    def error_detected(self, state: ChannelState) -> ErsResult:
        if state is ChannelState.PERM_FAILURE:
            return ErsResult.DISCONNECT
        self._error_time = time.monotonic()
        self.recoveries += 1
        try:
            r = self.services.call(Call.SLOT_ERROR_DETAIL, pe=self.pe, function=1)
            log = list(r.get("log", [])) if r.ok else []
            last = log[-1] if log and isinstance(log[-1], Mapping) else {}
            self.report(Kind.ERROR_LOG, status=r.status, entries=len(log),
                        last={k: last.get(k) for k in ("seq", "source", "detail", "function",
                                                       "error_function") if k in last})
        except HcallError as e:
            self.report(Kind.ERROR_LOG, error=repr(e))
        return ErsResult.NEED_RESET

    def mmio_enabled(self) -> ErsResult:
        # not reached (error_detected always asks for a reset), but harmless: reset anyway
        return ErsResult.NEED_RESET

    def slot_reset(self) -> ErsResult:
        if not self.set_up:  # found frozen at probe: the probe is this slot_reset
            try:
                self.probe()
            except DriverError as e:
                self.report(Kind.ADAPTER_NOT_READY, waited_s=self.ready_s, error=str(e))
                return ErsResult.DISCONNECT
            self.set_up = True
            self.report(Kind.ADAPTER_RECOVERED, num_vfs=self.num_vfs, at_probe=True,
                        ms=round((time.monotonic() - self._error_time) * 1000, 3))
            return ErsResult.RECOVERED
        status = self._wait_ready()
        if status is None and self.recovery is not None and self.recovery.interrupted:
            return ErsResult.NEED_RESET  # frozen again: the recovery restarts (or stops)
        if status is None:
            self.report(Kind.ADAPTER_NOT_READY, waited_s=self.ready_s)
            return ErsResult.DISCONNECT
        self._configure_adapter(status)
        # a read after the setup's posted writes: once it returns the model has applied
        # them all, so the release (resume) cannot overtake the VFs' settings
        self.note_resets()
        self.report(Kind.ADAPTER_RECOVERED, num_vfs=self.num_vfs,
                    ms=round((time.monotonic() - self._error_time) * 1000, 3),
                    **self.last_ready, **self.last_setup)
        return ErsResult.RECOVERED

    def resume(self) -> None:
        pes = self.vf_pes()
        if not pes:
            return
        try:
            r = self.services.call(Call.OPEN_SRIOV_ALLOW_UNFREEZE, pe=self.pe, vf_pes=pes)
        except HcallError as e:
            self.report(Kind.ALLOW_UNFREEZE, error=repr(e), vf_pes=pes)
            return
        allowed = r.get("allowed", [])
        self.allowed = list(allowed) if isinstance(allowed, list) else []
        self.report(Kind.ALLOW_UNFREEZE, status=r.status, vf_pes=pes, allowed=self.allowed)

    def counters(self) -> dict[str, Any]:
        out = super().counters()
        out.update(num_vfs=self.num_vfs, mailbox_messages=self.mailbox_messages,
                   vflrs=self.vflrs, recoveries=self.recoveries)
        return out

    def recovery_policy(self) -> RecoveryPolicy:
        return self.policy or RecoveryPolicy()
