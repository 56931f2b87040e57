"""Error injection: the EEH error functions 0-19 of ibm,errinjct.

An injection targets a PE. Armed (the default), it fires on the next access *by a function
of that PE* of its class whose address matches: `(access & mask) == (address & mask)`, so
mask 0 matches any address. Address spaces: MMIO loads/stores match the bus address
(BAR base from config space + offset into the BAR); config loads/stores match the config
offset; DMA matches the guest address. The adapter decodes no I/O space, so the I/O
functions (2, 3, 8, 9) match MMIO loads/stores like the memory ones. An injection fires
once; `now=True` fires it at once on the PE's own function (the PF for the adapter PE),
at the given address.

When it fires, the access it hit fails the way a frozen PE fails (load all-ones, store
dropped, DMA aborted), the function's AER and Status registers record the error (table
below), the PE's error log gets an entry and the PE freezes (the adapter PE's freeze
propagates to every VF PE).

  functions       kind                AER uncorrectable bit   PCI Status bits
  0 2 4 6 8 10    address parity      ECRC (19)               -
  1 3 5 7 9 11    data parity         Poisoned TLP (12)       Detected Parity
  12 / 16         DMA address parity  ECRC (19)               -
  13 / 17         DMA data parity     Poisoned TLP (12)       Detected Parity, Master Data Parity
  14 / 18         DMA master abort    Unsupported Req (20)    Received Master Abort
  15 / 19         DMA target abort    Completer Abort (15)    Received Target Abort
Severity comes from the function's AER severity register (defaults: all of these non-fatal).
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from device_model.events import EventBus, EventKind
from device_model.pci import ids
from device_model.pci.ids import AerUncorrectable as U
from device_model.pe import Pe
from eeh_abi.papr import ErrorFunction


class Op(enum.Enum):
    """Classes of access an injection can fire on."""

    MMIO_LOAD = "mmio-load"
    MMIO_STORE = "mmio-store"
    CONFIG_LOAD = "config-load"
    CONFIG_STORE = "config-store"
    DMA_READ = "dma-read"
    DMA_WRITE = "dma-write"


@dataclass(frozen=True)
class Effect:
    op: Op
    aer_bit: int
    status_bits: int
    kind: str


_PAR = ids.STS_DETECTED_PARITY
_DMA_PAR = ids.STS_DETECTED_PARITY | ids.STS_MASTER_DATA_PARITY


def _effects() -> dict[ErrorFunction, Effect]:
    f = ErrorFunction
    table = {}
    for addr_fn, data_fn, op in ((f.LOAD_MEM_ADDR, f.LOAD_MEM_DATA, Op.MMIO_LOAD),
                                 (f.LOAD_IO_ADDR, f.LOAD_IO_DATA, Op.MMIO_LOAD),
                                 (f.LOAD_CFG_ADDR, f.LOAD_CFG_DATA, Op.CONFIG_LOAD),
                                 (f.STORE_MEM_ADDR, f.STORE_MEM_DATA, Op.MMIO_STORE),
                                 (f.STORE_IO_ADDR, f.STORE_IO_DATA, Op.MMIO_STORE),
                                 (f.STORE_CFG_ADDR, f.STORE_CFG_DATA, Op.CONFIG_STORE)):
        table[addr_fn] = Effect(op, U.ECRC, 0, "address parity")
        table[data_fn] = Effect(op, U.POISONED_TLP, _PAR, "data parity")
    for base, op in ((f.DMA_READ_ADDR, Op.DMA_READ), (f.DMA_WRITE_ADDR, Op.DMA_WRITE)):
        table[f(base)] = Effect(op, U.ECRC, 0, "DMA address parity")
        table[f(base + 1)] = Effect(op, U.POISONED_TLP, _DMA_PAR, "DMA data parity")
        table[f(base + 2)] = Effect(op, U.UNSUPPORTED_REQUEST, ids.STS_RCV_MASTER_ABORT,
                                    "DMA master abort")
        table[f(base + 3)] = Effect(op, U.COMPLETER_ABORT, ids.STS_RCV_TARGET_ABORT,
                                    "DMA target abort")
    return table


EFFECTS: dict[ErrorFunction, Effect] = _effects()


@dataclass(frozen=True)
class Injection:
    id: int
    pe: int  # PE address
    function: ErrorFunction
    address: int
    mask: int

    @property
    def op(self) -> Op:
        return EFFECTS[self.function].op

    def matches(self, pe: int, op: Op, address: int) -> bool:
        return pe == self.pe and op is self.op and not (address ^ self.address) & self.mask


class Target(Protocol):
    """What an injection fires on: a function, known by its PE."""

    @property
    def pe(self) -> Pe: ...


T = TypeVar("T", bound=Target)


class Injector(Generic[T]):
    """The armed injections of one adapter; `fire(injection, function, address)` applies
    one that matched an access of `function`."""

    def __init__(self, bus: EventBus, fire: Callable[[Injection, T, int], None]) -> None:
        self.armed: list[Injection] = []
        self._bus = bus
        self._fire = fire
        self._ids = itertools.count(1)

    def new(self, pe: int, function: ErrorFunction, address: int, mask: int) -> Injection:
        return Injection(next(self._ids), pe, function, address, mask)

    def arm(self, inj: Injection) -> None:
        self.armed.append(inj)
        self._bus.emit(EventKind.INJECTION_ARMED, pe=inj.pe, id=inj.id,
                       error_function=int(inj.function), address=inj.address, mask=inj.mask)

    def cancel(self, pe: int | None = None) -> int:
        """Disarm every injection (of one PE); returns how many."""
        gone = [i for i in self.armed if pe is None or i.pe == pe]
        self.armed = [i for i in self.armed if i not in gone]
        for inj in gone:
            self._bus.emit(EventKind.INJECTION_CANCELLED, pe=inj.pe, id=inj.id)
        return len(gone)

    def check(self, fn: T, op: Op, address: int) -> bool:
        """Fire the first armed injection this access matches; True if one fired."""
        pe = fn.pe.address
        for k, inj in enumerate(self.armed):
            if inj.matches(pe, op, address):
                del self.armed[k]
                self._fire(inj, fn, address)
                return True
        return False
