"""When the drivers are ready: every wanted PE's driver has reported `probe`.

    wanted = {pe_of(f) for f in ("pf", "vf0")}          # {"adapter", "vf0"}
    r = readiness(plat.timeline.snapshot(), wanted)
    r.ready, r.missing, r.at                            # bool, ["vf0"], None
    r = wait_drivers_ready(plat.timeline, wanted, timeout=180)       # from a thread
    r = await wait_drivers_ready_async(plat.timeline, wanted, 180)   # from an event loop
    r = await wait_drivers_ready_async(..., check=guests_gone(system.machines))

The one definition, read from the timeline (a driver's report: source "driver", kind
"probe", on the PE of its function), for every caller that waits for the drivers: the
recovery demo, the pytest plugin, the benches. A driver that probes again (removed and
added back) is ready from its first probe on.

A wait that cannot succeed any more ends at once: `check` is asked at every step, and
`guests_gone(machines)` is the check for guests that are gone (a guest's command exited,
so the guest powered off, or its QEMU exited): DriversNotReady names the guest, why, its
artifacts and its last console lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe.names import ADAPTER_PE, pe_of_function
from hypervisor_shim.timeline import Entry, Timeline


def pe_of(function: str) -> str:
    """The PE a function's driver reports on: "adapter" for "pf" ("nic1" for "nic1.pf"),
    else the VF's own ("vf3", "nic1.vf3"): hypervisor_shim.pe.names."""
    return pe_of_function(function)


__all__ = ["ADAPTER_PE", "DriversNotReady", "Readiness", "Stopped", "guests_gone", "pe_of",
           "readiness", "wait_drivers_ready", "wait_drivers_ready_async"]


@dataclass(frozen=True)
class Readiness:
    wanted: frozenset[str]
    probes: Mapping[str, Entry]  # PE -> the first probe its driver reported

    @property
    def missing(self) -> list[str]:
        """The wanted PEs whose drivers have not probed, sorted."""
        return sorted(self.wanted - self.probes.keys())

    @property
    def ready(self) -> bool:
        return not self.missing

    @property
    def at(self) -> float | None:
        """When the last of the wanted drivers probed (timeline time), if all have."""
        if not self.ready:
            return None
        return max((self.probes[pe].t for pe in self.wanted), default=None)


def readiness(entries: Iterable[Entry], wanted: Iterable[str]) -> Readiness:
    """How far the drivers of the `wanted` PEs are, from timeline entries in order."""
    probes: dict[str, Entry] = {}
    for e in entries:
        if e.source == Source.DRIVER and e.kind == Kind.PROBE and e.pe is not None:
            probes.setdefault(e.pe, e)
    return Readiness(frozenset(wanted), probes)


class DriversNotReady(ShimError):
    """The drivers of `missing` did not probe: out of time, or `reason` (with the lines
    that show it, `detail`: e.g. a dead guest's last console lines)."""

    def __init__(self, missing: list[str], reason: str, detail: tuple[str, ...] = (), *,
                 timed_out: bool = False) -> None:
        super().__init__("\n".join([f"drivers not ready ({reason}); missing: "
                                    f"{', '.join(missing)}", *detail]))
        self.missing = missing
        self.reason = reason
        self.detail = detail
        self.timed_out = timed_out  # else `check` stopped the wait


@dataclass(frozen=True)
class Stopped:
    """Why waiting on is pointless, and what shows it."""

    reason: str
    detail: tuple[str, ...] = ()


# Returns why waiting on is pointless (a guest or process gone), or None to go on.
Check = Callable[[], str | Stopped | None]

TAIL_LINES = 20  # console lines shown for a guest that is gone


class Console(Protocol):
    def tail(self, n: int = ...) -> list[str]: ...


class Guest(Protocol):
    """What guests_gone needs of a guest (qemu_launcher.machine.Machine has it)."""

    @property
    def console(self) -> Console: ...

    def gone(self) -> str | None: ...

    @property
    def artifacts(self) -> Path: ...


def guests_gone(guests: Mapping[str, Guest], tail: int = TAIL_LINES) -> Check:
    """A check that stops the wait when any of `guests` is gone, naming it, why (its
    command's or QEMU's exit status), its artifacts and its last `tail` console lines.
    Call it where the guests' own loop runs (it reads their consoles)."""

    def check() -> Stopped | None:
        for name, guest in guests.items():
            why = guest.gone()
            if why is not None:
                lines = guest.console.tail(tail)
                return Stopped(f"guest {name} is gone: {why}; artifacts: {guest.artifacts}",
                               (f"last {len(lines)} console lines of {name} "
                                f"({guest.artifacts / 'console.log'}):",
                                *(f"  | {line}" for line in lines)))
        return None
    return check


def _step(timeline: Timeline, wanted: frozenset[str], deadline: float, timeout: float,
          check: Check | None) -> Readiness | None:
    r = readiness(timeline.snapshot(), wanted)
    if r.ready:
        return r
    why = check() if check is not None else None
    if isinstance(why, Stopped):
        raise DriversNotReady(r.missing, why.reason, why.detail)
    if why is not None:
        raise DriversNotReady(r.missing, why)
    if time.monotonic() > deadline:
        raise DriversNotReady(r.missing, f"not after {timeout:g} s", timed_out=True)
    return None


def wait_drivers_ready(timeline: Timeline, wanted: Iterable[str], timeout: float, *,
                       interval: float = 0.05, check: Check | None = None) -> Readiness:
    """Block until every wanted driver probed; DriversNotReady on timeout or when `check`
    says why not."""
    want, deadline = frozenset(wanted), time.monotonic() + timeout
    while (r := _step(timeline, want, deadline, timeout, check)) is None:
        time.sleep(interval)
    return r


async def wait_drivers_ready_async(timeline: Timeline, wanted: Iterable[str], timeout: float,
                                   *, interval: float = 0.05,
                                   check: Check | None = None) -> Readiness:
    """`wait_drivers_ready` for an event loop (it sleeps without blocking the loop)."""
    want, deadline = frozenset(wanted), time.monotonic() + timeout
    while (r := _step(timeline, want, deadline, timeout, check)) is None:
        await asyncio.sleep(interval)
    return r
