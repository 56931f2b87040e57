"""The console's `PlatformApi` on the real platform: PE policy, device model, timeline.

Requests run on the device model's loop thread (`Platform.call`, awaited from the
console's loop through a worker thread). Platform events become QMP events:

  policy notices about a PE's state   -> EEH_PE_STATE_CHANGED {pe, state, flags, cause}
  lockout-lifted                      -> EEH_LOCKOUT_LIFTED {pe, owner}
  permanent-failure                   -> EEH_PE_PERMANENT_FAILURE {pe, freeze-count}
  other decisions and driver reports  -> EEH_RECOVERY_STEP {who, step, pe, detail}
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from device_model import ResetKind
from device_model.errors import DeviceModelError
from hypervisor_shim.console.backend import (
    EVENT_LOCKOUT_LIFTED,
    EVENT_PE_PERMANENT_FAILURE,
    EVENT_PE_STATE_CHANGED,
    EVENT_RECOVERY_STEP,
    PlatformApiError,
    PlatformListener,
)
from hypervisor_shim.pe import Notice, PeRecord, PolicyError
from hypervisor_shim.platform import Platform
from hypervisor_shim.timeline import Entry

T = TypeVar("T")

STATE_NOTICES = frozenset({"pe-frozen", "pe-thawed", "mmio-thawed", "dma-thawed",
                           "pe-reset-done", "reset-hot", "reset-fundamental",
                           "reset-deactivate", "permanent-cleared", "lockout-lifted",
                           "permanent-failure"})


class PlatformConsoleApi:
    """`hypervisor_shim.console.backend.PlatformApi` for a running `Platform`."""

    def __init__(self, plat: Platform) -> None:
        self.plat = plat
        self._listeners: list[PlatformListener] = []
        self._lock = threading.Lock()
        plat.notice_listeners.append(self._on_notice)
        plat.timeline.add_listener(self._on_entry)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(self.plat.call, fn)

    def _rec(self, pe: str) -> PeRecord:
        rec = self.plat.policy.by_name(pe)
        if rec is None:
            names = ", ".join(r.name for r in self.plat.policy.records.values())
            raise PlatformApiError(f"no PE named {pe!r} (PEs: {names})")
        return rec

    # ------------------------------------------------------------------ requests
    async def query_pes(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            out = []
            for rec in self.plat.present_records():
                st = self.plat.policy.state(rec)
                out.append({"pe": rec.name, "address": rec.address, "state": int(st.state),
                            "retry_ms": st.retry_ms, "owner": rec.owner,
                            "freeze_count": rec.freezes.total, "flags": st.flags.names()})
            return out
        return await self._run(read)

    def _alive(self) -> None:
        if self.plat.model_failure is not None:
            raise PlatformApiError(f"the device model is down ({self.plat.model_failure})")

    async def inject(self, pe: str, kind: str, function: int | None, address: int,
                     mask: int) -> dict[str, Any]:
        self._alive()

        def act() -> dict[str, Any]:
            rec = self._rec(pe)
            adapter = self.plat.adapter
            try:
                if kind == "adapter-fatal":
                    if rec.pe is not adapter.pes.adapter:
                        raise PlatformApiError("adapter-fatal is injected on the adapter PE")
                    entry = adapter.inject_adapter_fatal("console: adapter fatal error")
                    return {"pe": pe, "kind": kind, "log-seq": entry.seq}
                if kind == "vf-error":
                    fn = adapter.function_of(rec.pe)
                    index = getattr(fn, "index", None)
                    if index is None:
                        raise PlatformApiError("vf-error is injected on a VF PE")
                    entry = adapter.inject_vf_error(index, "console: VF error")
                    return {"pe": pe, "kind": kind, "log-seq": entry.seq}
                if kind == "errinjct" and function is not None:
                    inj = adapter.inject(rec.pe, function, address, mask)
                    return {"pe": pe, "kind": kind, "function": function, "id": inj.id,
                            "armed": True}
            except DeviceModelError as e:
                raise PlatformApiError(str(e)) from None
            raise PlatformApiError(f"cannot inject {kind!r} with function {function!r}")
        self.plat.timeline.record("console", "inject", pe=pe,
                                  data={"kind": kind, "function": function})
        return await self._run(act)

    async def reset_pe(self, pe: str, kind: str) -> dict[str, Any]:
        self._alive()

        def act() -> dict[str, Any]:
            rec = self._rec(pe)
            status = rec.pe.reset(ResetKind.HOT if kind == "hot" else ResetKind.FUNDAMENTAL)
            if int(status) != 0:
                raise PlatformApiError(f"reset of {pe} refused: status {int(status)} "
                                       f"({status.name})")
            self.plat.policy.clear_permanent(rec)
            return {"pe": pe, "kind": kind, "status": 0}
        self.plat.timeline.record("console", "reset-pe", pe=pe, data={"kind": kind})
        return await self._run(act)

    async def error_log(self, pe: str) -> list[dict[str, Any]]:
        return await self._run(lambda: [e.to_json() for e in self._rec(pe).pe.error_log()])

    async def set_policy(self, max_freezes: int | None,
                         window_s: float | None) -> dict[str, Any]:
        def act() -> dict[str, Any]:
            changes: dict[str, Any] = {}
            if max_freezes is not None:
                changes["max_freezes"] = max_freezes
            if window_s is not None:
                changes["window_s"] = window_s
            try:
                self.plat.policy.set_config(**changes)
            except PolicyError as e:
                raise PlatformApiError(str(e)) from None
            return self._policy()
        return await self._run(act)

    async def query_policy(self) -> dict[str, Any]:
        return await self._run(self._policy)

    def _policy(self) -> dict[str, Any]:
        c = self.plat.policy.config
        return {"max-freezes": c.max_freezes, "window-s": c.window_s,
                "retry-hint-ms": c.retry_hint_ms, "lockout": c.lockout,
                "errinjct": c.errinjct}

    # ------------------------------------------------------------------ events
    def add_listener(self, callback: PlatformListener) -> None:
        with self._lock:
            self._listeners.append(callback)

    def _emit(self, name: str, data: dict[str, Any]) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for cb in listeners:
            try:
                cb(name, data)
            except Exception:
                pass

    def _on_notice(self, n: Notice) -> None:  # on the model's thread
        rec = self.plat.policy.record(n.address) if n.address is not None else None
        if n.kind == "lockout-lifted" and rec is not None:
            self._emit(EVENT_LOCKOUT_LIFTED, {"pe": rec.name, "owner": rec.owner})
        if n.kind == "permanent-failure" and rec is not None:
            self._emit(EVENT_PE_PERMANENT_FAILURE,
                       {"pe": rec.name, "freeze-count": n.data.get("freeze_count")})
        if n.kind in STATE_NOTICES and rec is not None:
            st = self.plat.policy.state(rec)
            self._emit(EVENT_PE_STATE_CHANGED, {"pe": rec.name, "state": int(st.state),
                                                "flags": st.flags.names(), "cause": n.kind})
        elif n.kind not in STATE_NOTICES:
            self._emit(EVENT_RECOVERY_STEP, {"who": "platform", "step": n.kind,
                                             "pe": n.pe, "detail": dict(n.data)})

    def _on_entry(self, e: Entry) -> None:
        if e.source == "driver":
            self._emit(EVENT_RECOVERY_STEP, {"who": e.owner, "step": e.kind, "pe": e.pe,
                                             "detail": e.data})
