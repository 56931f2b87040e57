"""The oracles, checked for every scenario: safety, liveness, isolation, resources.

    violations = check(obs)           # obs: eeh_sriov.campaign.observe.Observation
    [v.to_json() for v in violations] # {"oracle", "rule", "detail", "t", "pe"}
    [n.to_json() for n in notes(obs)] # {"rule", "detail", "t", "pe"}: not violations

Each rule reads recorded facts only (the timeline, the model's books sampled at every
policy decision, the uplink's probes, the end state), so it can be checked again on a
recorded run. The rules (docs/campaign.md, "Oracles"):

safety
  thaw-before-allow-unfreeze  a VF PE frozen by an adapter freeze is not thawed, reset
                              or let out of the lockout before the adapter driver's next
                              allow-unfreeze (the claim's order, hypervisor_shim.claim)
  dma-while-frozen            no frame sent or delivered (DMA) and no interrupt from a
                              function while its PE is not in state 0
  duplicate-frame             no probe's echo reaches the uplink twice
  loss-outside-recovery       a probe is lost only if sent while its VF was down: from its
                              PE's freeze (or its driver's fault) to its driver's recovery,
                              or in flight when it fell (every later probe up to one sent
                              while down lost too, within 1 s before the fall)
  books-unbalanced            every function's own ledger balances at the end
liveness
  settle-bound                within the bound, every PE is healthy or permanently failed
                              and every driver idle
  end-state                   every PE ends in state 0 without flags, or permanently failed
  unexpected-permanent-failure  permanent only where the policy says so for this scenario
                              (3 failed resets, one freeze past max_freezes, model dead)
  expected-permanent-failure  and permanently failed where it must be
  driver-not-idle             every driver ends up and idle, or failed with its PE
  traffic-not-back            every healthy VF echoes after its last recovery
isolation
  pe-disturbed                a PE outside the faults' scope is not frozen, reset or failed
  driver-disturbed            its driver does not enter recovery
  traffic-disturbed           its traffic loses nothing
  adapter-crossed             of several adapters: an adapter no fault reaches shows
                              nothing (no decision of the platform on its PEs, no
                              recovery step of its drivers, none of its probes lost)
resources
  fds, threads                back to the baseline after the teardown

notes (what a run showed that is intended, not a violation)
  receiver-overrun            probes lost while their VF was up, each matched by an RX
                              drop the model counted on that VF for want of a free
                              descriptor in the same interval between two samples of its
                              count: its driver did not harvest its ring (a guest not
                              running); a NIC drops what its driver does not take.
                              Lost probes left unmatched stay loss-outside-recovery
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.campaign import pes
from eeh_sriov.campaign.faults import Applied
from eeh_sriov.campaign.model import FAULT_KINDS
from eeh_sriov.campaign.observe import Observation
from hypervisor_shim.pe.names import pe_of_function
from hypervisor_shim.timeline import Entry

ORACLES = ("safety", "liveness", "isolation", "resources")
LOSS_SLACK_BEFORE_S = 0.25  # probes already in the VF's ring when it froze are lost too
LOSS_SLACK_AFTER_S = 0.05
# A probe sent before its VF fell but still unanswered when it fell (in its ring, its
# driver slow to harvest on a loaded machine) is lost by the fall: shown by every later
# probe up to the first sent while down being lost too (nothing got through after it).
# Only within this long before the fall; older silence is a loss.
IN_FLIGHT_MAX_S = 1.0
# a probe sent this long before a sample of a VF's no-descriptor count may still reach the
# VF's ring after it (the path from the uplink through the model's loop, under load)
OVERRUN_SLACK_S = 0.25
# What lets a VF PE out of a freeze or touches it as a reset does (the policy's entries).
THAWS = frozenset({Kind.MMIO_THAWED, Kind.DMA_THAWED, Kind.PE_THAWED, Kind.RESET_HOT,
                   Kind.RESET_FUNDAMENTAL, Kind.LOCKOUT_LIFTED, Kind.PLATFORM_RESET})
DISTURBS = frozenset({Kind.PE_FROZEN, Kind.RESET_HOT, Kind.RESET_FUNDAMENTAL,
                      Kind.PERMANENT_FAILURE, Kind.FUNCTION_REMOVED, Kind.PLATFORM_RESET})
DRIVER_DISTURBED = frozenset({Kind.ERROR_DETECTED, Kind.RESET, Kind.RESTART,
                              Kind.PERMANENT_FAILURE, Kind.DISCONNECT})
DOWN_ENDS = frozenset({Kind.RECOVERED, Kind.RESUME, Kind.PROBE})
PERMANENT = "permanent"
DMA_WRITE_FUNCTIONS = frozenset({16, 17, 18, 19})  # ibm,errinjct: DMA write errors
RESTARTS = frozenset({"vf-driver-crash", "pf-driver-crash", "channel-closed"})


@dataclass(frozen=True)
class Violation:
    oracle: str
    rule: str
    detail: str
    t: float | None  # seconds since the first fault
    pe: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"oracle": self.oracle, "rule": self.rule, "detail": self.detail,
                "t": self.t, "pe": self.pe}


@dataclass(frozen=True)
class Note:
    """What a run showed that the docs say is intended (docs/campaign.md, "Findings")."""

    rule: str
    detail: str
    t: float | None  # seconds since the first fault
    pe: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "detail": self.detail, "t": self.t, "pe": self.pe}


def check(obs: Observation) -> list[Violation]:
    out: list[Violation] = []
    for fn in (thaw_before_allow_unfreeze, dma_while_frozen, duplicates, loss, books,
               settle, end_state, permanence, drivers, traffic_back, isolation, resources):
        out.extend(fn(obs))
    return out


def _policy(e: Entry) -> bool:
    return e.source == Source.POLICY


# ---------------------------------------------------------------------------- safety
def thaw_before_allow_unfreeze(obs: Observation) -> Iterable[Violation]:
    entries = obs.entries
    for i, e in enumerate(entries):
        # every VF PE frozen by an adapter freeze (side effect), whatever the policy says
        # of its lockout: the order is the claim's, not the policy's own flag
        if not (_policy(e) and e.kind == Kind.PE_FROZEN and e.data.get("side_effect")):
            continue
        vf = e.pe
        adapter_pe = pes.adapter_pe(pes.adapter_of(str(vf)))  # its own adapter's
        for later in entries[i + 1:]:
            if not _policy(later):
                continue
            if later.kind == Kind.ALLOW_UNFREEZE and later.pe == adapter_pe:
                break
            if later.pe == vf and later.kind in THAWS:
                yield Violation("safety", "thaw-before-allow-unfreeze",
                                f"{vf}: {later.kind} after its lockout began "
                                f"({obs.rel(e.t)} s) and before the adapter's allow-unfreeze",
                                obs.rel(later.t), vf)
                break
            if later.pe == vf and later.kind == Kind.PE_FROZEN and later.data.get(
                    "side_effect"):
                break  # a new round: its own window


def dma_while_frozen(obs: Observation) -> Iterable[Violation]:
    names = ("frames sent (DMA read)", "frames delivered (DMA write)", "interrupts")
    seen: set[tuple[str, int]] = set()
    for a, b in zip(obs.books, obs.books[1:], strict=False):
        for fn, before in a.counters.items():
            pe = pe_of_function(fn)
            sa, sb = a.states.get(pe), b.states.get(pe)
            after = b.counters.get(fn)
            if sa is None or sb is None or after is None or sa[0] == 0 or sb[0] == 0:
                continue
            for k, name in enumerate(names):
                if after[k] != before[k] and (fn, k) not in seen:
                    seen.add((fn, k))
                    yield Violation("safety", "dma-while-frozen",
                                    f"{fn}: {name} {before[k]} -> {after[k]} while its PE "
                                    f"was in state {sa[0]}..{sb[0]} ({a.kind} .. {b.kind})",
                                    obs.rel(b.t), pe)


def lost_write_back(obs: Observation, vf: str) -> bool:
    """A DMA write of `vf` failed with an error (ibm,errinjct 16-19): a frame the adapter
    had sent may have lost its descriptor's write-back, and the driver, never told it was
    sent, replays it: delivered at least once, a duplicate the docs accept
    (docs/campaign.md, "Findings")."""
    return any(e.source == Source.MODEL and e.kind == "error-logged" and e.pe == vf
               and e.data.get("error_function") in DMA_WRITE_FUNCTIONS for e in obs.entries)


def duplicates(obs: Observation) -> Iterable[Violation]:
    for vf, tr in obs.traffic.items():
        if tr.duplicates and not lost_write_back(obs, vf):
            yield Violation("safety", "duplicate-frame",
                            f"{vf}: {tr.duplicates} echo(es) on the uplink twice", None, vf)


def down_intervals(obs: Observation, vf: str) -> list[tuple[float, float]]:
    """When `vf` may lose traffic: from its PE's freeze, a reset of it, a fault on its
    driver or owner, to its driver's next recovered/resume/probe (or the end)."""
    starts = [e.t for e in obs.entries if e.pe == vf and _policy(e) and e.kind in (
        Kind.PE_FROZEN, Kind.RESET_HOT, Kind.RESET_FUNDAMENTAL, Kind.FUNCTION_REMOVED,
        Kind.PERMANENT_FAILURE)]
    restarts = [f.t for f in obs.faults if f.error is None and f.kind in RESTARTS and (
        f.target == vf or f.target == _owner_of(obs, vf))]
    # a PE permanently failed or removed is down until its driver probes it again: a
    # "recovered" reported just after is a round that ended as the platform failed the PE
    restarts += [e.t for e in obs.entries if e.pe == vf and _policy(e) and e.kind in (
        Kind.PERMANENT_FAILURE, Kind.FUNCTION_REMOVED)]
    # a fault without a target (the console's) counts as one that may: loss is judged
    # outside every fault's window
    starts += [f.t for f in obs.faults if f.error is None and (
        f.target is None or reaches(obs, f, vf))]
    ends = sorted(e.t for e in obs.entries if e.source == Source.DRIVER and e.pe == vf
                  and e.kind in DOWN_ENDS)
    probes = sorted(e.t for e in obs.entries if e.source == Source.DRIVER and e.pe == vf
                    and e.kind == Kind.PROBE)
    freezes = {e.t for e in obs.entries if e.pe == vf and _policy(e) and e.kind in (
        Kind.PE_FROZEN, Kind.RESET_HOT, Kind.RESET_FUNDAMENTAL)}
    backs = sorted(e.t for e in obs.entries if e.pe == vf and _policy(e) and e.kind in (
        Kind.PE_THAWED, Kind.PE_RESET_DONE))
    out = []
    for s in sorted(starts):
        # a restarted driver is down until its new instance probed (the old one may still
        # report its recovery's last steps); so is a failed or removed PE. A frozen or
        # reset PE is down until its driver's first recovered/resume/probe after the PE is
        # back in state 0: a round ending as a new freeze arrives reports `recovered`
        # before its driver hears of the freeze (it starts again at once)
        after = s if s not in freezes else next((b for b in backs if b > s), float("inf"))
        end = next((t for t in (probes if s in restarts else ends) if t > after),
                   float("inf"))
        out.append((s - LOSS_SLACK_BEFORE_S, end + LOSS_SLACK_AFTER_S))
    return out


def owners(obs: Observation) -> dict[str, str]:
    """Function (platform-wide name) -> its owner, as the platform started."""
    for e in obs.entries:
        if e.source == Source.SHIM and e.kind == Kind.PLATFORM_STARTED:
            return {str(k): str(v) for k, v in e.data.get("owners", {}).items()}
    return {}


def _owner_of(obs: Observation, vf: str) -> str | None:
    return owners(obs).get(vf)


Lost = list[tuple[int, float]]


def lost_while_up(obs: Observation, vf: str) -> tuple[Lost, Lost]:
    """`vf`'s probes lost while it was up: (those no overrun of its ring explains, those
    matched one for one by an RX drop for want of a free descriptor on `vf`, counted by
    the model between the two samples of its count around the probe's send time)."""
    down = down_intervals(obs, vf)
    lost = obs.traffic[vf].lost
    up = sorted(((seq, t) for seq, t in lost if not any(a <= t <= b for a, b in down)
                 and not _in_flight_at_a_fall(seq, t, lost, down)), key=lambda x: x[1])
    series = obs.no_desc(vf)
    # (earliest send time, latest send time, drops left) of each interval whose count grew
    windows = [[a - OVERRUN_SLACK_S, b, nb - na]
               for (a, na), (b, nb) in pairwise(series) if nb > na]
    bad: Lost = []
    overrun: Lost = []
    for seq, t in up:
        w = next((w for w in windows if w[0] <= t <= w[1] and w[2] > 0), None)
        if w is None:
            bad.append((seq, t))
        else:
            w[2] -= 1
            overrun.append((seq, t))
    return bad, overrun


def _in_flight_at_a_fall(seq: int, t: float, lost: Iterable[tuple[int, float]],
                         down: list[tuple[float, float]]) -> bool:
    """Probe `seq` (sent at `t`, while up) was still in flight when its VF fell: a down
    interval starts within IN_FLIGHT_MAX_S after it, and every probe from `seq` up to the
    first one sent inside that interval was lost (none of them got an echo)."""
    gone = dict(lost)
    for a, b in down:
        if not t < a <= t + IN_FLIGHT_MAX_S:
            continue
        first_down = min((k for k, tk in gone.items() if a <= tk <= b and k > seq),
                         default=None)
        if first_down is not None and all(k in gone for k in range(seq, first_down)):
            return True
    return False


def loss(obs: Observation) -> Iterable[Violation]:
    for vf in obs.traffic:
        bad = lost_while_up(obs, vf)[0]
        if bad:
            yield Violation("safety", "loss-outside-recovery",
                            f"{vf}: {len(bad)} probe(s) lost while it was up, first seq "
                            f"{bad[0][0]} sent at {obs.rel(bad[0][1])} s", obs.rel(bad[0][1]),
                            vf)


def notes(obs: Observation) -> list[Note]:
    out = []
    for vf in obs.traffic:
        overrun = lost_while_up(obs, vf)[1]
        if overrun:
            out.append(Note("receiver-overrun",
                            f"{vf}: {len(overrun)} probe(s) lost while it was up, each "
                            "matched by an RX drop for want of a free descriptor (its "
                            "driver did not harvest its ring), first seq "
                            f"{overrun[0][0]} sent at {obs.rel(overrun[0][1])} s",
                            obs.rel(overrun[0][1]), vf))
    return out


def books(obs: Observation) -> Iterable[Violation]:
    bad = sorted(fn for fn, ok in obs.model_books.items() if not ok)
    if bad:
        yield Violation("safety", "books-unbalanced",
                        f"the model's ledger does not balance for {bad}", None, None)


# ---------------------------------------------------------------------------- liveness
def settle(obs: Observation) -> Iterable[Violation]:
    if obs.unsettled:
        yield Violation("liveness", "settle-bound",
                        f"not settled within {obs.bound_s} s: {'; '.join(obs.unsettled)}",
                        None, None)


def end_state(obs: Observation) -> Iterable[Violation]:
    for pe, (state, flags) in obs.pe_end.items():
        if PERMANENT not in flags and (state != 0 or flags):
            yield Violation("liveness", "end-state",
                            f"{pe} ends in state {state} with flags {list(flags)}", None, pe)


def _applied(obs: Observation, kind: str) -> list[str | None]:
    return [f.target for f in obs.faults if f.kind == kind and f.error is None]


def may_fail(obs: Observation, pe: str) -> bool:
    """The policy's documented reasons for a permanent failure, in this scenario (of
    several adapters, the reasons of `pe`'s adapter)."""
    if _applied(obs, "model-killed") or any(
            reaches(obs, f, pe) for f in obs.faults
            if f.kind == "freeze-limit" and f.error is None):
        return True
    fails = sum(int(f.params["times"]) for f in (obs.scenario.first, *(
        f for _, f in obs.scenario.follow_ups)) if f.kind == "reset-fails")
    targets = set(_applied(obs, "reset-fails"))
    return fails >= obs.max_reset_failures and (
        pes.adapter_pe(pes.adapter_of(pe)) in targets or pe in targets)


def _past_the_limit(obs: Observation) -> set[str]:
    """The adapter PEs a freeze-limit fault's adapter error froze anew. An error on a PE
    that is still frozen is not a new freeze (nothing is counted): the limit is not
    passed."""
    return {e.pe for f in obs.faults if f.kind == "freeze-limit" and f.error is None
            for e in obs.entries if _policy(e) and e.kind == Kind.PE_FROZEN
            and e.pe == (f.target or "adapter") and e.t >= f.t}


def must_fail(obs: Observation) -> set[str]:
    """The adapter PEs that must end permanently failed."""
    out = _past_the_limit(obs)
    if _applied(obs, "model-killed"):
        out |= {pe for pe in obs.pe_end if pes.is_adapter_pe(pe)}
    first = obs.scenario.first
    applied = next((f for f in obs.faults if f.first and f.error is None), None)
    if first.kind == "reset-fails" and int(first.params["times"]) >= obs.max_reset_failures \
            and applied is not None and applied.target is not None \
            and pes.is_adapter_pe(applied.target):
        out.add(applied.target)
    return out


def permanence(obs: Observation) -> Iterable[Violation]:
    permanent = sorted(pe for pe, (_, flags) in obs.pe_end.items() if PERMANENT in flags)
    for pe in permanent:
        if not may_fail(obs, pe):
            yield Violation("liveness", "unexpected-permanent-failure",
                            f"{pe} is permanently failed; no fault of this scenario is a "
                            "documented reason", None, pe)
    for pe in sorted(must_fail(obs) - set(permanent)):
        yield Violation("liveness", "expected-permanent-failure",
                        f"the adapter PE{'' if pe == 'adapter' else ' ' + pe} should be "
                        "permanently failed and is not", None, pe)


def drivers(obs: Observation) -> Iterable[Violation]:
    permanent = {pe for pe, (_, flags) in obs.pe_end.items() if PERMANENT in flags}
    for name, state in obs.drivers_end.items():
        pe = pe_of_function(name)
        if state == "up" or (state.startswith("failed") and pe in permanent):
            continue
        yield Violation("liveness", "driver-not-idle", f"driver {name} ends {state!r}"
                        + (" with its PE healthy" if pe not in permanent else ""), None, pe)


def killed(obs: Observation) -> set[str]:
    """The VFs of guests the scenario killed (VM mode): no driver is left to echo for
    them (the platform took them back)."""
    owners = {f.target for f in obs.faults if f.kind == "guest-killed" and f.error is None}
    return {vf for vf in obs.traffic if _owner_of(obs, vf) in owners} if owners else set()


def traffic_back(obs: Observation) -> Iterable[Violation]:
    gone = killed(obs)
    for vf, tr in obs.traffic.items():
        state, flags = obs.pe_end.get(vf, (0, ()))
        if state != 0 or flags or vf in gone:
            continue
        ends = [e.t for e in obs.entries if e.source == Source.DRIVER and e.pe == vf
                and e.kind in DOWN_ENDS]
        last = max(ends, default=obs.t0)
        if tr.last_echo is None or tr.last_echo <= last:
            yield Violation("liveness", "traffic-not-back",
                            f"{vf}: no echo after its last recovery ({obs.rel(last)} s)",
                            obs.rel(last), vf)


# ---------------------------------------------------------------------------- isolation
@dataclass(frozen=True)
class Reach:
    """What faults may disturb: every PE of `adapters`, and `pes`; `every`: everything."""

    adapters: frozenset[str] = frozenset()
    pes: frozenset[str] = frozenset()
    every: bool = False

    def __contains__(self, pe: object) -> bool:
        return self.every or pe in self.pes or (
            isinstance(pe, str) and pes.adapter_of(pe) in self.adapters)

    def __or__(self, other: Reach) -> Reach:
        return Reach(self.adapters | other.adapters, self.pes | other.pes,
                     self.every or other.every)

    def touches(self, adapter: str) -> bool:
        """Some PE of `adapter` may be disturbed."""
        return self.every or adapter in self.adapters or any(
            pes.adapter_of(pe) == adapter for pe in self.pes)


def reach(obs: Observation, f: Applied) -> Reach:
    """The PEs fault `f` may disturb: an adapter's fault (or one on its PE or PF) every PE
    of that adapter, the device model's death every PE, a VF's fault its VF, an owner's
    every PE of its functions (all of an adapter's, if it holds its PF)."""
    spec = FAULT_KINDS[f.kind]
    if spec.scope == "platform":
        return Reach(every=True)
    if spec.scope == "none":
        return Reach()
    target = f.target
    if "owner" in spec.targets:  # resolved: an owner (None: not applied)
        fns = [fn for fn, o in owners(obs).items() if o == target]
        return Reach(frozenset(pes.adapter_of(fn) for fn in fns if not pes.is_vf(fn)),
                     frozenset(fn for fn in fns if pes.is_vf(fn)))
    if target is None:  # an adapter's fault with no target: the first adapter's; else
        # a fault that was not applied (it reaches nothing)
        return Reach(frozenset({_adapters(obs)[0]})) if spec.scope == "adapter" else Reach()
    if spec.scope == "adapter" or not pes.is_vf(target):
        return Reach(frozenset({pes.adapter_of(target)}))
    return Reach(pes=frozenset({target}))


def reaches(obs: Observation, f: Applied, pe: str) -> bool:
    return pe in reach(obs, f)


def _adapters(obs: Observation) -> list[str]:
    """The adapters' names in order ("" for the only, unnamed one)."""
    for e in obs.entries:
        if e.source == Source.SHIM and e.kind == Kind.PLATFORM_STARTED:
            return [str(a) for a in e.data.get("adapters", {})] or [""]
    return [""]


def scope(obs: Observation) -> Reach:
    """The PEs the scenario's faults may disturb."""
    out = Reach()
    for f in obs.faults:
        out = out | reach(obs, f)
    return out


def isolation(obs: Observation) -> Iterable[Violation]:
    touched = scope(obs)
    if touched.every:
        return
    crossed: set[str] = set()  # PEs of an adapter no fault reaches, said once each
    seen: set[str] = set()
    for e in obs.entries:
        if e.t < obs.t0 or e.pe is None or e.pe in touched:
            continue
        adapter = pes.adapter_of(e.pe)
        if not touched.touches(adapter) and e.source in (Source.POLICY, Source.DRIVER):
            if e.pe not in crossed:
                crossed.add(e.pe)
                yield Violation("isolation", "adapter-crossed",
                                f"{e.pe}: {e.source} {e.kind} though no fault of this "
                                f"scenario reaches adapter {adapter or 'adapter'} (faults "
                                f"reach {_named(touched)})", obs.rel(e.t), e.pe)
            continue
        if e.pe in seen:
            continue
        if _policy(e) and e.kind in DISTURBS:
            yield Violation("isolation", "pe-disturbed",
                            f"{e.pe}: {e.kind} though no fault of this scenario reaches it "
                            f"(faults reach {_named(touched)})", obs.rel(e.t), e.pe)
            seen.add(e.pe)  # once per PE
        elif e.source == Source.DRIVER and e.kind in DRIVER_DISTURBED:
            yield Violation("isolation", "driver-disturbed",
                            f"{e.pe}'s driver reports {e.kind} though no fault reaches it",
                            obs.rel(e.t), e.pe)
            seen.add(e.pe)
    for vf, tr in obs.traffic.items():
        if vf in touched or vf in crossed or vf in seen or not tr.lost:
            continue
        rule = "traffic-disturbed" if touched.touches(pes.adapter_of(vf)) else \
            "adapter-crossed"
        yield Violation("isolation", rule,
                        f"{vf}: {len(tr.lost)} probe(s) lost though no fault reaches it",
                        obs.rel(tr.lost[0][1]), vf)


def _named(r: Reach) -> list[str]:
    return sorted({*(f"every PE of {a or 'adapter'}" for a in r.adapters), *r.pes})


# ---------------------------------------------------------------------------- resources
def resources(obs: Observation) -> Iterable[Violation]:
    for what in ("fds", "threads"):
        r = obs.resources.get(what)
        if not isinstance(r, dict):
            continue
        if r["after"] > r["before"]:
            yield Violation("resources", what,
                            f"{what}: {r['before']} before, {r['after']} after the teardown "
                            f"(extra: {r.get('extra', [])})", None, None)
