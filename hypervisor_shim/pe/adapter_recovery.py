"""The platform recovers the adapter PE itself: what its lost driver would have done.

Started by the driver watch (pe.driver_watch) under `on_adapter_driver_lost =
"platform-recover"` (and as the fallback of "restart-guest" where no guest can be
restarted). On the model's loop thread, driven by the policy's notices:

1. the adapter PE is reset (hot), as the adapter driver's recovery would; a reset the
   model completes without bringing the PE back (`pe-reset-done` with `failed`) is tried
   again, and the policy's `max_reset_failures` rule ends it (permanent failure) as for
   any driver;
2. once the reset is done (state 0): configure-pe (SR-IOV back, `configured`), the PF's
   Command register (memory decoding, bus mastering), and the adapter configuration the
   adapter driver owns, from the topology's VF settings (`eeh_abi.adapter_setup`: switch,
   each VF's MAC/VLAN/anti-spoof, TX/RX enables, "PF reset done" in every VF mailbox);
3. open-sriov-allow-unfreeze for every VF PE: each locked-out VF's `lockout-lifted` is
   pushed and its driver finishes its own recovery; the adapter PE is no longer
   recovering (`platform-recovered`, with the milliseconds since step 1).

Every step is a policy notice: the timeline and the console show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from device_model import ResetKind
from eeh_abi import nic
from eeh_abi.adapter_setup import adapter_setup, pf_mac_of
from eeh_abi.papr import Status
from eeh_abi.vf_settings import VfSettings
from eeh_abi.vocabulary import Kind
from hypervisor_shim.pe.policy import Notice, PeFlag, PePolicy
from vfio_user.contract import RegionIndex


@dataclass
class PlatformRecovery:
    policy: PePolicy
    vf_settings: Mapping[int, VfSettings]
    clock: Callable[[], float]
    active: bool = False
    t0: float = 0.0
    resets: int = 0

    def start(self) -> None:
        """Reset the adapter PE now; the rest follows its pe-reset-done (`__call__`)."""
        rec = self.policy.adapter_record
        if PeFlag.PERMANENT in rec.flags:
            return
        self.active = True
        self.t0 = self.clock()
        self.resets = 0
        self._reset()

    def _reset(self) -> None:
        rec = self.policy.adapter_record
        self.resets += 1
        self.policy.emit(Kind.PLATFORM_RESET, rec, {"reset": "hot", "attempt": self.resets})
        status = rec.pe.reset(ResetKind.HOT)
        if int(status) != 0:
            self.active = False
            self.policy.emit(Kind.PLATFORM_RESET_FAILED, rec, {"status": int(status)})

    def __call__(self, n: Notice) -> None:
        """A policy notice (registered with the platform's notice listeners)."""
        rec = self.policy.adapter_record
        if not self.active or n.address != rec.address:
            return
        if n.kind == Kind.PERMANENT_FAILURE:
            self.active = False
        elif n.kind == Kind.PE_RESET_DONE:
            # after the policy has finished with this notice (its own isolation refresh)
            loop = asyncio.get_running_loop()
            loop.call_soon(self._again if n.data.get("failed") else self._finish)

    def _again(self) -> None:
        if self.active and PeFlag.PERMANENT not in self.policy.adapter_record.flags:
            self._reset()

    def _finish(self) -> None:
        if not self.active:
            return
        self.active = False
        policy = self.policy
        rec = policy.adapter_record
        configured = policy.configure_pe(rec)
        if configured.status != Status.SUCCESS:
            policy.emit(Kind.PLATFORM_RESET_FAILED, rec, {"status": int(configured.status),
                                                          "why": configured.why})
            return
        pf = policy.adapter.pf
        cmd = int.from_bytes(pf.region_read(RegionIndex.CONFIG, nic.CFG_COMMAND, 2), "little")
        cmd |= int(nic.Command.MEMORY | nic.Command.BUS_MASTER)
        pf.region_write(RegionIndex.CONFIG, nic.CFG_COMMAND, cmd.to_bytes(2, "little"))

        def read32(offset: int) -> int:
            return int.from_bytes(pf.region_read(RegionIndex.BAR0, offset, 4), "little")
        pf_mac = pf_mac_of(read32(nic.MAC_LO), read32(nic.MAC_HI))
        setup = adapter_setup(pf_mac, policy.adapter.enabled_vfs(), self.vf_settings)
        for w in setup.writes:
            pf.region_write(RegionIndex.BAR0, w.offset, w.value.to_bytes(w.width, "little"))
        vf_pes = [r.address for r in policy.vf_records() if policy.present(r)]
        result = policy.allow_unfreeze(rec, vf_pes)
        policy.recovered(rec)
        allowed = result.ret.get("allowed", [])
        policy.emit(Kind.PLATFORM_RECOVERED, rec, {
            "status": int(result.status), "allowed": allowed, "resets": self.resets,
            "ms": round((self.clock() - self.t0) * 1000, 3)})
