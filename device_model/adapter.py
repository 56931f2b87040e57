"""The SR-IOV Ethernet adapter: one PF, TotalVFs VFs, their PEs, the switch, injection.

    adapter = Adapter(AdapterConfig(total_vfs=8), clock=ManualClock())
    adapter.pf, adapter.vf(3)             # transport.PciFunction objects
    adapter.pes.adapter, adapter.pes.vf(3) # PE primitives: freeze, thaw_mmio, thaw_dma, reset
    adapter.inject(pe, 12, addr, mask)    # ibm,errinjct function 12, armed
    adapter.events.add_listener(history)  # structured, timestamped events

The model is single-threaded: drive it from one thread (the server's asyncio loop). The
freeze gate is atomic regardless (see device_model.pe).
"""

from __future__ import annotations

import itertools
import logging
import traceback
from collections.abc import Callable

from device_model.adapter_config import AdapterConfig
from device_model.adapter_regs import bind_pf_registers
from device_model.clock import Clock, ManualClock, Timer
from device_model.errors import InjectionError
from device_model.events import EventBus, EventKind
from device_model.function import Function
from device_model.inject import EFFECTS, Injection, Injector
from device_model.nic import registers as R
from device_model.nic.switch import Switch, Uplink
from device_model.pci import ids
from device_model.pe import ErrorLogEntry, ErrorSource, Pe, PeKind, PeTree
from device_model.pf import PfFunction
from device_model.reset import FunctionReset, ResetKind
from device_model.vf import VfFunction
from eeh_abi.papr import ErrorFunction
from vfio_user.errors import DmaError

__all__ = ["Adapter", "AdapterConfig"]

log = logging.getLogger(__name__)


def _function_reset(pe: Pe, kind: ResetKind) -> FunctionReset:
    if pe.kind is PeKind.VF:
        return FunctionReset.FLR
    return FunctionReset.HOT if kind is ResetKind.HOT else FunctionReset.FUNDAMENTAL


# ADAPTER_ERR bit of an error on the PF (an error on a VF sets VF_ERROR)
_ADAPTER_ERR = {ErrorSource.ADAPTER_FATAL: R.AdapterErr.INTERNAL,
                ErrorSource.DMA_FAULT: R.AdapterErr.DMA_FAULT,
                ErrorSource.INJECTED: R.AdapterErr.INJECTED}


class _PeHooks:
    def __init__(self, adapter: Adapter) -> None:
        self._a = adapter

    def reset_of(self, pe: Pe, kind: ResetKind) -> tuple[str, str]:
        return self._a.function_of(pe).name, _function_reset(pe, kind).value

    def reset_asserted(self, pe: Pe, kind: ResetKind) -> None:
        self._a.function_of(pe).enter_reset(_function_reset(pe, kind), announce=False)

    def reset_done(self, pe: Pe, kind: ResetKind) -> None:
        self._a.function_of(pe).leave_reset(_function_reset(pe, kind))

    def dma_thawed(self, pe: Pe) -> None:
        self._a.function_of(pe).nic.tx_process()

    def after(self, delay: float, fn: Callable[[], None]) -> Timer | None:
        return self._a.after(delay, fn)


class Adapter:
    """The adapter: it owns the PEs, functions, switch and injector, and is the host its
    parts see through narrow protocols (`PfHost`, `VfHost`, `AdapterRegsHost`, `PeHooks`
    via `_PeHooks`), so nothing below it imports it."""

    def __init__(self, config: AdapterConfig | None = None, clock: Clock | None = None,
                 uplink: Uplink | None = None) -> None:
        self.config = config = config if config is not None else AdapterConfig()
        self.clock: Clock = clock if clock is not None else ManualClock()
        self.events = EventBus(self.clock)
        self.switch = Switch()
        self.injector: Injector[Function] = Injector(self.events, self._fire)
        self.failed = False
        self.link_up = config.link_up
        self.pf_resetting = True  # power-on: the PF driver must say "reset done"
        self.internal_errors: list[str] = []
        self._seq = itertools.count(1)
        self._enabled_vfs = 0
        t, hooks = config.timing, _PeHooks(self)
        adapter_pe = Pe(address=config.rid(None) << 8, kind=PeKind.ADAPTER, name="adapter",
                        parent=None, clock=self.clock, bus=self.events, hooks=hooks, timing=t,
                        hold=t.hold, settle=t.settle)
        vf_pes = [Pe(address=config.rid(i) << 8, kind=PeKind.VF, name=f"vf{i}",
                     parent=adapter_pe, clock=self.clock, bus=self.events, hooks=hooks,
                     timing=t, hold=t.flr, settle=0.0) for i in range(config.total_vfs)]
        self.pes = PeTree(adapter_pe, vf_pes)
        self.pf = PfFunction(self, adapter_pe, config)
        self.vfs: tuple[VfFunction, ...] = tuple(
            VfFunction(self, i, pe, self.pf, config) for i, pe in enumerate(vf_pes))
        self._by_pe: dict[int, Function] = {f.pe.address: f for f in self.functions()}
        self.switch.ports = [f.nic for f in self.functions()]
        for vf in self.vfs:
            vf.mailbox.bind(vf.bar0, vf.raise_cause, self.pf.bar0, self.pf.raise_cause)
        bind_pf_registers(self)
        for n, f in enumerate(self.functions()):
            f.nic.default_mac = config.mac(n)
            f.nic.reset()
            f.refresh()
        self.pf.bar0.set_field("ADAPTER_STATUS", "total_vfs", config.total_vfs)
        self.apply_switch_ctrl()
        if uplink is not None:
            self.switch.attach_uplink(uplink)

    # ---- lookup
    def vf(self, index: int) -> VfFunction:
        return self.vfs[index]

    def functions(self) -> list[Function]:
        return [self.pf, *self.vfs]

    def function(self, name: str) -> Function:
        for f in self.functions():
            if f.name == name:
                return f
        raise KeyError(name)

    def function_of(self, pe: Pe) -> Function:
        return self._by_pe[pe.address]

    def enabled_vfs(self) -> int:
        return self._enabled_vfs

    def attach_uplink(self, uplink: Uplink) -> None:
        self.switch.attach_uplink(uplink)

    # ---- scheduling and internal faults
    def after(self, delay: float, fn: Callable[[], None]) -> Timer | None:
        """Run `fn` after `delay` seconds on the clock (at once, in this call, if 0).

        A timer's exception is recorded as an internal error, never left to the loop."""
        if delay <= 0:
            fn()
            return None

        def guarded() -> None:
            try:
                fn()
            except Exception:
                self.internal_error(f"timer {getattr(fn, '__qualname__', fn)}")

        return self.clock.call_later(delay, guarded)

    def internal_error(self, what: str) -> None:
        """A bug in the model met a guest access: log it, keep it, keep running."""
        log.exception("device model internal error: %s", what)
        self.internal_errors.append(f"{what}: {traceback.format_exc(limit=4)}")

    # ---- SR-IOV and PF-wide state
    def sync_vfs(self) -> None:
        """VF Enable, NumVFs or VF MSE changed: VFs appear (fresh) or vanish (reset)."""
        for vf in self.vfs:
            was = vf.exists
            vf.refresh()
            if was != vf.exists:
                vf.reset_state(FunctionReset.VF_DISABLE)
        n = self.pf.num_vfs if self.pf.sriov_enabled else 0
        n = min(n, len(self.vfs))
        if n != self._enabled_vfs:
            old, self._enabled_vfs = self._enabled_vfs, n
            kind = EventKind.VFS_ENABLED if n else EventKind.VFS_DISABLED
            self.events.emit(kind, pe=self.pes.adapter.address, function="pf", num_vfs=n,
                             previous=old)
        self.switch.invalidate()

    def pf_was_reset(self, kind: FunctionReset) -> None:
        """The PF's registers were just reset: the adapter behind it goes back to reset too."""
        self.failed = False
        self.switch.reset_counters()
        self.pf.bar0.set_field("ADAPTER_STATUS", "total_vfs", self.config.total_vfs)
        self.apply_switch_ctrl()
        self.pf_resetting = True
        for vf in self.vfs:
            vf.mailbox.clear()
            vf.mailbox.pf_reset_started()
        self.events.emit(EventKind.PF_RESET_IN_PROGRESS, pe=self.pes.adapter.address,
                         function="pf", reset=kind.value)
        if kind is FunctionReset.SOFT:
            for vf in self.vfs:
                vf.reset_state(FunctionReset.SOFT)
        elif kind is FunctionReset.DEVICE:
            pass  # VFs stay as they are (see PfFunction.reset_state); mailboxes say RSTI
        else:
            vf_kind = kind if kind in (FunctionReset.HOT, FunctionReset.FUNDAMENTAL) \
                else FunctionReset.VF_DISABLE
            for vf in self.vfs:
                vf.reset_state(vf_kind)
            self.sync_vfs()
        self.update_switch()

    def pf_reset_done(self) -> None:
        """ADAPTER_CTRL.pf_reset_done: every VF mailbox now shows "PF reset done"."""
        self.pf_resetting = False
        for vf in self.vfs:
            vf.mailbox.pf_reset_done()
        self.events.emit(EventKind.PF_RESET_DONE, pe=self.pes.adapter.address, function="pf")

    def vf_flr_done(self, vf: VfFunction) -> None:
        self.pf.bar0.set_bits("VFLR", 1 << vf.index)
        self.pf.raise_cause(R.Cause.VFLR)

    def apply_switch_ctrl(self) -> None:
        ctrl = self.pf.bar0.stored("SWITCH_CTRL")
        self.switch.loopback = bool(ctrl & R.SwitchCtrl.LOOPBACK)
        self.switch.uplink_enabled = bool(ctrl & R.SwitchCtrl.UPLINK)
        self.update_switch()

    def update_switch(self) -> None:
        self.switch.enabled = not self.failed and not self.pf.in_reset

    # ---- errors
    def record_error(self, fn: Function, *, source: ErrorSource, detail: str, address: int = 0,
                     aer_bit: int = 0, status_bits: int = 0,
                     error_function: int | None = None) -> ErrorLogEntry:
        """Record an error on `fn` (AER, Status, adapter registers, PE log) and freeze its PE."""
        fatal = False
        if aer_bit:
            rid = self.config.rid(getattr(fn, "index", None))
            rec = fn.config.record_uncorrectable(
                aer_bit, (error_function or 0, rid << 16, address >> 32, address & 0xFFFFFFFF))
            fatal = rec.fatal
        if status_bits:
            fn.config.set_bits("status", status_bits)
        pf_regs = self.pf.bar0
        if isinstance(fn, VfFunction):
            pf_regs.set_bits("VF_ERR", 1 << fn.index)
            cause = R.AdapterErr.VF_ERROR
        else:
            cause = _ADAPTER_ERR.get(source, R.AdapterErr.INJECTED)
        pf_regs.set_bits("ADAPTER_ERR", int(cause))
        pf_regs.set("ERR_ADDR", address)
        entry = ErrorLogEntry(next(self._seq), self.clock.now(), fn.pe.address, fn.name, source,
                              detail, address, error_function, aer_bit, fatal,
                              fn.config.aer_snapshot())
        fn.pe.log_error(entry)
        fn.pe.freeze(source.value)
        fn.raise_cause(R.Cause.ERROR)
        if isinstance(fn, VfFunction):
            self.pf.raise_cause(R.Cause.ADAPTER)
        return entry

    def dma_fault(self, fn: Function, err: DmaError, *, write: bool) -> None:
        """The function's DMA hit an unmapped address: the platform aborts it and freezes
        the PE (the device sees a master abort)."""
        self.record_error(fn, source=ErrorSource.DMA_FAULT,
                          detail=f"DMA {'write' if write else 'read'}: {err.reason}",
                          address=err.addr, aer_bit=ids.AerUncorrectable.UNSUPPORTED_REQUEST,
                          status_bits=0 if write else ids.STS_RCV_MASTER_ABORT)

    def inject(self, pe: Pe | int, function: int, address: int = 0, mask: int = 0, *,
               now: bool = False) -> Injection:
        """ibm,errinjct: error function 0-19 on a PE (by object or PE address).

        Armed by default (fires on the next matching access, see device_model.inject);
        `now=True` fires at once on the PE's own function.
        """
        target = pe if isinstance(pe, Pe) else self.pes.get(pe)
        try:
            code = ErrorFunction(function)
        except ValueError:
            raise InjectionError(function, "not an EEH error function (0-19)") from None
        if not (0 <= address < 1 << 64 and 0 <= mask < 1 << 64):
            raise InjectionError(function, "address and mask must be 64-bit unsigned")
        inj = self.injector.new(target.address, code, address, mask)
        if now:
            self._fire(inj, self.function_of(target), address)
        else:
            self.injector.arm(inj)
        return inj

    def _fire(self, inj: Injection, fn: Function, address: int) -> None:
        effect = EFFECTS[inj.function]
        self.events.emit(EventKind.INJECTION_FIRED, pe=inj.pe, function=fn.name, id=inj.id,
                         error_function=int(inj.function), address=address, kind=effect.kind)
        self.record_error(fn, source=ErrorSource.INJECTED,
                          detail=f"errinjct function {int(inj.function)}: {effect.kind}",
                          address=address, aer_bit=effect.aer_bit,
                          status_bits=effect.status_bits, error_function=int(inj.function))

    def inject_adapter_fatal(self, detail: str = "adapter internal error") -> ErrorLogEntry:
        """An internal fatal error: adapter PE (and every VF PE) frozen, adapter failed until
        reset (transmit completes with ADAPTER_FAILED, the switch forwards nothing)."""
        self.failed = True
        self.update_switch()
        entry = self.record_error(self.pf, source=ErrorSource.ADAPTER_FATAL, detail=detail,
                                  aer_bit=ids.AerUncorrectable.INTERNAL)
        self.pf.raise_cause(R.Cause.ADAPTER)
        return entry

    def inject_vf_error(self, index: int, detail: str = "VF internal error") -> ErrorLogEntry:
        """An error local to one VF: only its PE freezes."""
        return self.record_error(self.vf(index), source=ErrorSource.VF_ERROR, detail=detail,
                                 aer_bit=ids.AerUncorrectable.INTERNAL)
