"""When the drivers are ready: every wanted PE's driver has reported `probe`.

    wanted = {pe_of(f) for f in ("pf", "vf0")}          # {"adapter", "vf0"}
    r = readiness(plat.timeline.snapshot(), wanted)
    r.ready, r.missing, r.at                            # bool, ["vf0"], None
    r = wait_drivers_ready(plat.timeline, wanted, timeout=180)       # from a thread
    r = await wait_drivers_ready_async(plat.timeline, wanted, 180)   # from an event loop

The one definition, read from the timeline (a driver's report: source "driver", kind
"probe", on the PE of its function), for every caller that waits for the drivers: the
recovery demo, the pytest plugin, the benches. A driver that probes again (removed and
added back) is ready from its first probe on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.errors import ShimError
from hypervisor_shim.timeline import Entry, Timeline

ADAPTER_PE = "adapter"  # the PE of the PF (its driver reports on it)


def pe_of(function: str) -> str:
    """The PE a function's driver reports on: "adapter" for "pf", else the VF's own."""
    return ADAPTER_PE if function == "pf" else function


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
    """The drivers of `missing` did not probe: out of time, or `reason`."""

    def __init__(self, missing: list[str], reason: str) -> None:
        super().__init__(f"drivers not ready ({reason}); missing: {', '.join(missing)}")
        self.missing = missing
        self.reason = reason


# Returns why waiting on is pointless (a guest or process gone), or None to go on.
Check = Callable[[], str | None]


def _step(timeline: Timeline, wanted: frozenset[str], deadline: float, timeout: float,
          check: Check | None) -> Readiness | None:
    r = readiness(timeline.snapshot(), wanted)
    if r.ready:
        return r
    reason = check() if check is not None else None
    if reason is not None:
        raise DriversNotReady(r.missing, reason)
    if time.monotonic() > deadline:
        raise DriversNotReady(r.missing, f"not after {timeout:g} s")
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
