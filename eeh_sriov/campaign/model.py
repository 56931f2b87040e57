"""A fault campaign's data: scenarios, their triggers and faults (the shared contract).

    s = Scenario.build(first=Fault("adapter-fatal"),
                       follow_ups=((Trigger("reset-hot", "adapter", "policy"),
                                    Fault("vf-error", "other")),), seed=7)
    s.id                           # "s-3f0c..." : a hash of the content, the same every time
    Scenario.from_json(s.to_json()) == s

A scenario is a value: topology, reset timing, traffic on or off, a first fault, follow-up
faults each with its trigger, a seed and a mode. Everything a run does that could differ
between two runs (which VF is "the other VF", when traffic starts relative to the first
fault) is drawn from `random.Random(seed)`, so the same description is the same scenario.

`from_json` is strict: an unknown or missing key, a wrong type, a fault or trigger event
not in the tables below is refused with `ScenarioError` naming the path of the bad value.
The `id` is derived from the canonical JSON of everything else (sorted keys, no spaces):
`"s-" + sha256[:12]`. docs/campaign.md has the table of triggers and faults.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.campaign import pes
from eeh_sriov.campaign.errors import CampaignError
from hypervisor_shim.pe.names import split

Mode = Literal["harness", "vm"]
MODES: tuple[str, ...] = ("harness", "vm")
TIMINGS: tuple[str, ...] = ("fast", "spec")
VERSION = 1


class ScenarioError(CampaignError):
    """A scenario description that cannot be used (names the bad key)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"scenario {where}: {why}")
        self.where = where
        self.why = why


# The timeline events a follow-up fault may wait for: (source, kind). Every step of a
# recovery the platform decides (policy) or a driver reports (driver) is one; a call's
# entry (source "call") is not: the policy's decision it led to is the trigger.
TRIGGER_EVENTS: frozenset[tuple[str, str]] = frozenset({
    *((Source.POLICY, k) for k in (
        Kind.PE_FROZEN, Kind.LOCKOUT_START, Kind.UNFREEZE_REFUSED, Kind.MMIO_THAWED,
        Kind.DMA_THAWED, Kind.PE_THAWED, Kind.RESET_HOT, Kind.RESET_FUNDAMENTAL,
        Kind.RESET_DEACTIVATE, Kind.PE_RESET_DONE, Kind.RESET_FAILED, Kind.CONFIGURED,
        Kind.ALLOW_UNFREEZE, Kind.LOCKOUT_LIFTED, Kind.PERMANENT_FAILURE,
        Kind.PLATFORM_RESET, Kind.FUNCTION_REMOVED, Kind.FUNCTION_ADDED)),
    *((Source.DRIVER, k) for k in (
        Kind.PROBE, Kind.ERROR_DETECTED, Kind.ERROR_LOG, Kind.ALL_ONES_CONFIRMED,
        Kind.MMIO_THAWED, Kind.MMIO_ENABLED, Kind.DMA_THAWED, Kind.UNFREEZE_REFUSED,
        Kind.LOCKOUT_LIFTED, Kind.RESET, Kind.RESET_FAILED, Kind.RESET_RELEASED,
        Kind.CONFIGURE, Kind.ADAPTER_RECOVERED, Kind.ALLOW_UNFREEZE, Kind.SLOT_RESET,
        Kind.PF_RESET_DONE, Kind.CONFIG_RESTORED, Kind.CONFIG_LOST, Kind.RINGS_REARMED,
        Kind.REPLAY, Kind.RESUME, Kind.RECOVERED, Kind.RESTART, Kind.PERMANENT_FAILURE)),
})


@dataclass(frozen=True)
class FaultSpec:
    summary: str
    targets: tuple[str, ...]  # what `target` may be ("adapter", "vf", "same", "other", ...)
    params: Mapping[str, tuple[int, ...]]  # required params and their allowed values
    modes: tuple[str, ...] = MODES
    # the PEs it may disturb: every PE of its adapter, its target's, none, every PE of
    # every adapter
    scope: Literal["adapter", "target", "none", "platform"] = "target"


def _p(**kw: tuple[int, ...]) -> Mapping[str, tuple[int, ...]]:
    return MappingProxyType(kw)


VF_TARGETS = ("same", "other", "vf")  # "vf" stands for "vfN": any VF by name
# Every fault a scenario may use; `target`: None for "no target" (for an adapter's fault:
# the first adapter), "same" the trigger's PE (its VF, for a VF fault), "other" a VF other
# than the trigger's (drawn from the seed), "adapter", or a PE/function name ("vf0",
# "pf"; of several adapters "nic1" or "nic1.pf" for adapter nic1, "nic1.vf0").
FAULT_KINDS: Mapping[str, FaultSpec] = MappingProxyType({
    "adapter-fatal": FaultSpec("an adapter internal error: every PE of the adapter freezes",
                               ("none", "adapter"), _p(), scope="adapter"),
    "vf-error": FaultSpec("an error local to one VF: its PE alone freezes", VF_TARGETS, _p()),
    "errinjct": FaultSpec("ibm,errinjct function `function` armed on a PE, fired by its next "
                          "matching access", ("adapter", *VF_TARGETS),
                          _p(function=tuple(range(20)))),
    "reset-fails": FaultSpec("the PE's next `times` resets fail (3 = max_reset_failures: "
                             "permanent failure)", ("adapter", *VF_TARGETS),
                             _p(times=(1, 2, 3))),
    "freeze-limit": FaultSpec("max_freezes lowered to the adapter's freezes so far, then an "
                              "adapter error: one past the limit, permanent failure",
                              ("none", "adapter"), _p(), scope="adapter"),
    "pf-driver-crash": FaultSpec("the adapter driver's thread dies; it is started again "
                                 "(probe on a new connection to its function)",
                                 ("none", "adapter"), _p(), scope="adapter"),
    "vf-driver-crash": FaultSpec("a VF driver's thread dies; it is started again",
                                 VF_TARGETS, _p()),
    "channel-closed": FaultSpec("an owner's platform channel closes under its agent; the "
                                "agent starts again on a new connection",
                                ("same", "other", "owner"), _p()),
    "console-client-gone": FaultSpec("an operator console client leaves mid-message",
                                     ("none",), _p(), scope="none"),
    "model-killed": FaultSpec("the device model's thread dies (every PE of every adapter "
                              "permanently failed, as documented)", ("none",), _p(),
                              scope="platform"),
    "guest-killed": FaultSpec("a guest's QEMU is killed", ("same", "other", "owner"), _p(),
                              modes=("vm",)),
})


def _check_target(kind: str, target: str | None) -> None:
    spec = FAULT_KINDS[kind]
    adapter, local = split(target or "")
    named = adapter == "" or pes.is_adapter_name(adapter)  # "vf0", "nic1.vf0"
    if target is None:
        ok = "none" in spec.targets
    elif pes.is_vf(target) and named:
        ok = "vf" in spec.targets
    elif target in ("adapter", "pf") or (adapter and local == "pf" and named):
        ok = "adapter" in spec.targets
    elif target in ("same", "other"):
        ok = target in spec.targets
    elif "adapter" in spec.targets and pes.is_adapter_name(target):
        ok = True  # a named adapter's PE ("nic1"); no kind takes both it and an owner
    else:
        ok = "owner" in spec.targets and target.isidentifier()
    if not ok:
        raise ScenarioError(f"fault {kind!r}", f"target {target!r} not one of "
                            f"{', '.join(spec.targets)}")


@dataclass(frozen=True)
class Trigger:
    event: str  # a timeline kind: (source, event) in TRIGGER_EVENTS
    pe: str | None = None  # the entry's PE ("adapter", "vf1", "nic1", "nic1.vf0"); None: any
    source: str | None = None  # "policy" or "driver"; None: either
    nth: int = 1  # the nth matching entry after the first fault
    delay_ms: int = 0  # then this long before the fault

    def __post_init__(self) -> None:
        sources = [self.source] if self.source is not None else [Source.POLICY,
                                                                   Source.DRIVER]
        if not any((s, self.event) in TRIGGER_EVENTS for s in sources):
            raise ScenarioError("trigger", f"event {self.source or '*'}/{self.event} is not "
                                "a trigger event (model.TRIGGER_EVENTS)")
        if not 1 <= self.nth <= 1000 or not 0 <= self.delay_ms <= 60_000:
            raise ScenarioError("trigger", "nth is 1..1000 and delay_ms 0..60000")

    def matches(self, source: str, kind: str, pe: str | None) -> bool:
        return kind == self.event and (self.source is None or source == self.source) \
            and (self.pe is None or pe == self.pe)

    def label(self) -> str:
        s = f"{self.source + '/' if self.source else ''}{self.event}"
        s += f"@{self.pe}" if self.pe else ""
        s += f"#{self.nth}" if self.nth != 1 else ""
        return s + (f"+{self.delay_ms}ms" if self.delay_ms else "")

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event, "pe": self.pe, "source": self.source, "nth": self.nth,
                "delay_ms": self.delay_ms}


@dataclass(frozen=True)
class Fault:
    kind: str
    target: str | None = None
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ScenarioError("fault", f"no fault kind {self.kind!r} "
                                f"({', '.join(FAULT_KINDS)})")
        _check_target(self.kind, self.target)
        spec = FAULT_KINDS[self.kind]
        if set(self.params) != set(spec.params):
            raise ScenarioError(f"fault {self.kind!r}", f"params {sorted(self.params)} must "
                                f"be exactly {sorted(spec.params)}")
        for k, allowed in spec.params.items():
            v = self.params[k]
            if type(v) is not int or v not in allowed:
                raise ScenarioError(f"fault {self.kind!r}", f"param {k}={v!r} not one of "
                                    f"{allowed[0]}..{allowed[-1]}")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def label(self) -> str:
        s = self.kind + (f":{self.target}" if self.target else "")
        return s + "".join(f",{k}={v}" for k, v in sorted(self.params.items()))

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "params": dict(self.params)}

    def __hash__(self) -> int:
        return hash((self.kind, self.target, tuple(sorted(self.params.items()))))


@dataclass(frozen=True)
class Scenario:
    id: str
    topology: str
    timing: str
    traffic: bool
    first: Fault
    follow_ups: tuple[tuple[Trigger, Fault], ...]
    seed: int
    mode: Mode = "harness"

    @classmethod
    def build(cls, first: Fault, follow_ups: tuple[tuple[Trigger, Fault], ...] = (), *,
              seed: int = 0, topology: str = "default", timing: str = "fast",
              traffic: bool = True, mode: Mode = "harness") -> Scenario:
        """A scenario with its id computed from the rest."""
        body = _body(topology, timing, traffic, first, follow_ups, seed, mode)
        return cls(scenario_id(body), topology, timing, traffic, first, tuple(follow_ups),
                   seed, mode)

    def __post_init__(self) -> None:
        if self.timing not in TIMINGS:
            raise ScenarioError("timing", f"{self.timing!r} not one of {TIMINGS}")
        if self.mode not in MODES:
            raise ScenarioError("mode", f"{self.mode!r} not one of {MODES}")
        for f in (self.first, *(f for _, f in self.follow_ups)):
            if self.mode not in FAULT_KINDS[f.kind].modes:
                raise ScenarioError(f"fault {f.kind!r}", f"not available in {self.mode} mode")
        if self.first.target in ("same", "other"):
            raise ScenarioError("first", "the first fault has no trigger: name its target")
        if not 0 <= self.seed < 2**63:
            raise ScenarioError("seed", "0 <= seed < 2**63")
        body = _body(self.topology, self.timing, self.traffic, self.first, self.follow_ups,
                     self.seed, self.mode)
        if self.id != scenario_id(body):
            raise ScenarioError("id", f"{self.id!r} does not match the content (it is "
                                f"{scenario_id(body)!r})")

    def label(self) -> str:
        return " ; ".join([self.first.label()] + [f"{f.label()} at {t.label()}"
                                                  for t, f in self.follow_ups])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, **_body(self.topology, self.timing, self.traffic, self.first,
                                       self.follow_ups, self.seed, self.mode)}

    @classmethod
    def from_json(cls, obj: Any) -> Scenario:
        o = _obj(obj, "scenario", {"id", "topology", "timing", "traffic", "first",
                                   "follow_ups", "seed", "mode", "version"})
        if _typed(o, "version", int, "scenario") != VERSION:
            raise ScenarioError("version", f"{o['version']!r} (this is version {VERSION})")
        ups = o["follow_ups"]
        if not isinstance(ups, list):
            raise ScenarioError("follow_ups", "must be a list")
        follow = []
        for i, pair in enumerate(ups):
            if not isinstance(pair, list) or len(pair) != 2:
                raise ScenarioError(f"follow_ups[{i}]", "must be [trigger, fault]")
            follow.append((_trigger(pair[0], f"follow_ups[{i}][0]"),
                           _fault(pair[1], f"follow_ups[{i}][1]")))
        mode = _typed(o, "mode", str, "scenario")
        if mode not in MODES:
            raise ScenarioError("mode", f"{mode!r} not one of {MODES}")
        return cls(_typed(o, "id", str, "scenario"), _typed(o, "topology", str, "scenario"),
                   _typed(o, "timing", str, "scenario"), _typed(o, "traffic", bool, "scenario"),
                   _fault(o["first"], "first"), tuple(follow), _typed(o, "seed", int, "scenario"),
                   "vm" if mode == "vm" else "harness")


def _body(topology: str, timing: str, traffic: bool, first: Fault,
          follow_ups: tuple[tuple[Trigger, Fault], ...], seed: int, mode: str
          ) -> dict[str, Any]:
    return {"topology": topology, "timing": timing, "traffic": traffic,
            "first": first.to_json(),
            "follow_ups": [[t.to_json(), f.to_json()] for t, f in follow_ups],
            "seed": seed, "mode": mode, "version": VERSION}


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def scenario_id(body: Mapping[str, Any]) -> str:
    return "s-" + hashlib.sha256(canonical(dict(body)).encode()).hexdigest()[:12]


def _obj(obj: Any, where: str, keys: set[str], optional: frozenset[str] = frozenset()
         ) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ScenarioError(where, f"must be an object, not {type(obj).__name__}")
    unknown = set(obj) - keys
    if unknown:
        raise ScenarioError(where, f"unknown key(s) {sorted(unknown)} (known: {sorted(keys)})")
    missing = keys - optional - set(obj)
    if missing:
        raise ScenarioError(where, f"missing key(s) {sorted(missing)}")
    return obj


def _typed(o: Mapping[str, Any], key: str, typ: type, where: str) -> Any:
    v = o[key]
    if type(v) is not typ:
        raise ScenarioError(f"{where}.{key}", f"must be {typ.__name__}, not "
                            f"{type(v).__name__}")
    return v


def _opt_str(o: Mapping[str, Any], key: str, where: str) -> str | None:
    v = o[key]
    if v is not None and not isinstance(v, str):
        raise ScenarioError(f"{where}.{key}", "must be a string or null")
    return v


def _trigger(obj: Any, where: str) -> Trigger:
    o = _obj(obj, where, {"event", "pe", "source", "nth", "delay_ms"})
    try:
        return Trigger(_typed(o, "event", str, where), _opt_str(o, "pe", where),
                       _opt_str(o, "source", where), _typed(o, "nth", int, where),
                       _typed(o, "delay_ms", int, where))
    except ScenarioError as e:
        raise ScenarioError(where, e.why) from None


def _fault(obj: Any, where: str) -> Fault:
    o = _obj(obj, where, {"kind", "target", "params"})
    if not isinstance(o["params"], dict):
        raise ScenarioError(f"{where}.params", "must be an object")
    try:
        return Fault(_typed(o, "kind", str, where), _opt_str(o, "target", where),
                     dict(o["params"]))
    except ScenarioError as e:
        raise ScenarioError(where, e.why) from None
