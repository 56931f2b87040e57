"""The claim, checked from the timeline: every step happened, in order, for every VF.

    steps = check_claim(timeline.entries, pf_owner="svc", vfs={"vf0": "g1", "vf1": "g2"})
    failed = [s for s in steps if not s.ok]      # each names the step that did not happen

Steps (each must happen after the ones it depends on; per-VF steps hold for every VF):
  1 adapter-frozen      the adapter PE froze (the policy's pe-frozen, not a side-effect)
  2 vfs-frozen          every VF PE froze as a side-effect of it
  3 drivers-informed    the adapter driver and every VF driver reported error-detected
  4 vfs-locked-out      every VF driver's unfreeze attempt was refused (at least once)
                        after its PE froze and before its lockout was lifted
  5 adapter-recovered   the adapter driver reported the adapter recovered
  6 allow-unfreeze      the adapter driver called open-sriov-allow-unfreeze, after 5
  7 vfs-thawed          every VF PE came back to state 0 after its lockout was lifted
  8 vfs-recovered       every VF driver reported recovered, after its PE thawed
  9 traffic-back        traffic passed through every VF after it recovered
 10 accounting          every VF driver's ledger balanced (reported with "recovered")
 11 config-restored     every VF's MAC, VLAN and MTU are what they were before
Steps 9-11 need facts from outside the policy (traffic, drivers' reports); a step whose
evidence is missing fails with the reason, it is never skipped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from eeh_abi.vocabulary import Kind, Source
from hypervisor_shim.errors import ShimError
from hypervisor_shim.timeline import Entry


@dataclass(frozen=True)
class Step:
    key: str
    title: str
    ok: bool
    t: float | None  # host time the step completed (the last VF's, for per-VF steps)
    who: str
    detail: str = ""

    def line(self, t0: float) -> str:
        when = f"{(self.t - t0) * 1000:9.1f} ms" if self.t is not None else "       - ms"
        mark = "ok  " if self.ok else "FAIL"
        return f"{mark} {when}  {self.title:<58} {self.who}" + \
            (f"  ({self.detail})" if self.detail and not self.ok else "")


class ClaimFailed(ShimError):
    """A step of the claim did not happen (or not in order)."""

    def __init__(self, step: Step, where: str = "") -> None:
        super().__init__(f"claim step {step.key!r} failed: {step.title}: {step.detail}"
                         + (f"; artifacts: {where}" if where else ""))
        self.step = step
        self.where = where


TITLES = {
    "adapter-frozen": "adapter PE frozen",
    "vfs-frozen": "every VF PE frozen",
    "drivers-informed": "adapter driver and every VF driver informed",
    "vfs-locked-out": "VF unfreeze attempts locked out",
    "adapter-recovered": "adapter recovery complete",
    "allow-unfreeze": "allow-unfreeze for the VF PEs",
    "vfs-thawed": "VF PEs thawed",
    "vfs-recovered": "VF recovery",
    "traffic-back": "traffic back on every VF",
    "accounting": "accounting balanced",
    "config-restored": "VF configuration restored",
}


class _Index:
    """The entries by (source, kind) and by (source, kind, pe), each list in time order:
    a lookup looks only at its own kind (a 64-VF timeline has thousands of entries)."""

    def __init__(self, entries: Iterable[Entry]) -> None:
        self._by: dict[tuple[str, ...], list[Entry]] = {}
        for e in entries:
            self._by.setdefault((e.source, e.kind), []).append(e)
            if e.pe is not None:
                self._by.setdefault((e.source, e.kind, e.pe), []).append(e)

    def first(self, after: float, source: str, kind: str, pe: str | None = None,
              **match: Any) -> Entry | None:
        key = (source, kind) if pe is None else (source, kind, pe)
        for e in self._by.get(key, ()):
            if e.t < after:
                continue
            if all((e.data.get(k[5:]) if k.startswith("data_") else getattr(e, k)) == v
                   for k, v in match.items()):
                return e
        return None


def injection_time(entries: Iterable[Entry]) -> float | None:
    for e in entries:
        if (e.source, e.kind) in ((Source.CONSOLE, Kind.INJECT), (Source.SHIM, Kind.INJECT),
                                  ("model", "injection-fired")) or \
                (e.source == Source.MODEL and e.kind == "error-logged"):
            return e.t
    return None


def check_claim(entries: Iterable[Entry], *, pf_owner: str, vfs: Mapping[str, str],
                since: float = 0.0, config_before: Mapping[str, Any] | None = None,
                adapter_pe: str = "adapter") -> list[Step]:
    """`vfs`: VF name -> owner (its driver's channel). `since`: ignore earlier entries
    (a previous recovery). `config_before`: VF name -> {mac, vlan, mtu} before the error.
    `adapter_pe`: the adapter PE's name ("nic1" of several adapters: check the claim per
    adapter, `vfs` that adapter's VFs)."""
    _first = _Index(e for e in entries if e.t >= since).first
    steps: list[Step] = []

    def add(key: str, ok: bool, t: float | None, who: str, detail: str = "") -> Step:
        s = Step(key, TITLES[key], ok, t, who, detail)
        steps.append(s)
        return s

    fz = _first(since, source="policy", kind="pe-frozen", pe=adapter_pe,
                data_side_effect=False)
    a = add("adapter-frozen", fz is not None, fz.t if fz else None, "platform",
            "" if fz else "no pe-frozen of the adapter PE")
    t_frozen = fz.t if fz else since

    frozen_at: dict[str, float] = {}
    missing = []
    for vf in vfs:
        e = _first(t_frozen, source="policy", kind="pe-frozen", pe=vf,
                   data_side_effect=True)
        if e is None:
            missing.append(vf)
        else:
            frozen_at[vf] = e.t
    add("vfs-frozen", a.ok and not missing, max(frozen_at.values(), default=None),
        "platform", f"not frozen: {missing}" if missing else "")

    informed: dict[str, float] = {}
    late = []
    pf_e = _first(t_frozen, source="driver", kind="error-detected", owner=pf_owner,
                  pe=adapter_pe)
    if pf_e is None:
        late.append("adapter driver")
    for vf, owner in vfs.items():
        e = _first(frozen_at.get(vf, t_frozen), source="driver", kind="error-detected",
                   owner=owner, pe=vf)
        if e is None:
            late.append(vf)
        else:
            informed[vf] = e.t
    ts = list(informed.values()) + ([pf_e.t] if pf_e else [])
    add("drivers-informed", not late, max(ts, default=None), "drivers",
        f"no error-detected from {late}" if late else "")

    lifted: dict[str, float] = {}
    for vf in vfs:
        e = _first(t_frozen, source="policy", kind="lockout-lifted", pe=vf)
        if e is not None:
            lifted[vf] = e.t
    not_refused = []
    refused_t = []
    for vf in vfs:
        e = _first(frozen_at.get(vf, t_frozen), source="policy", kind="unfreeze-refused",
                   pe=vf)
        if e is None or (vf in lifted and e.t > lifted[vf]):
            not_refused.append(vf)
        else:
            refused_t.append(e.t)
    late = [vf for vf in not_refused if vf in lifted and not any(
        (e := _first(t_frozen, source="policy", kind=k, pe=vf)) is not None
        and e.t < lifted[vf] for k in ("pe-thawed", "reset-hot"))]
    add("vfs-locked-out", not not_refused, max(refused_t, default=None), "platform",
        (f"no refused unfreeze for {not_refused}" + (
            f"; {late}: first unfreeze attempt after the lockout was lifted (the adapter "
            "was back before the VF driver tried: not shown, not violated; 'spec' reset "
            "timing shows it)" if late else "")) if not_refused else "")

    rec = _first(t_frozen, source="driver", kind="adapter-recovered", owner=pf_owner,
                 pe=adapter_pe)
    add("adapter-recovered", rec is not None, rec.t if rec else None, "adapter driver",
        "" if rec else "the adapter driver never reported adapter-recovered")

    allow = _first(rec.t if rec else t_frozen, source="policy", kind="allow-unfreeze",
                   pe=adapter_pe)
    add("allow-unfreeze", rec is not None and allow is not None, allow.t if allow else None,
        "adapter driver",
        "" if allow and rec else "no allow-unfreeze after the adapter recovered")
    t_allow = allow.t if allow else float("inf")

    thawed: dict[str, float] = {}
    bad = []
    for vf in vfs:
        e = _first(lifted.get(vf, t_allow), source="policy", kind="pe-thawed", pe=vf)
        early = _first(t_frozen, source="policy", kind="pe-thawed", pe=vf)
        if e is None or vf not in lifted or (early is not None and early.t < lifted[vf]):
            bad.append(vf)
        else:
            thawed[vf] = e.t
    add("vfs-thawed", not bad, max(thawed.values(), default=None), "VF drivers",
        f"not thawed after allow-unfreeze: {bad}" if bad else "")

    recovered: dict[str, Entry] = {}
    bad = []
    for vf, owner in vfs.items():
        e = _first(thawed.get(vf, float("inf")), source="driver", kind="recovered",
                   owner=owner, pe=vf)
        if e is None:
            bad.append(vf)
        else:
            recovered[vf] = e
    add("vfs-recovered", not bad, max((e.t for e in recovered.values()), default=None),
        "VF drivers", f"no recovered after thaw from {bad}" if bad else "")

    back: list[float] = []
    bad = []
    for vf in vfs:
        e = _first(recovered[vf].t if vf in recovered else float("inf"),
                   source="traffic", kind="traffic-back", pe=vf)
        if e is None:
            bad.append(vf)
        else:
            back.append(e.t)
    add("traffic-back", not bad, max(back, default=None), "traffic",
        f"no traffic after recovery through {bad}" if bad else "")

    bad = []
    for vf in vfs:
        ledger = recovered[vf].data.get("ledger") if vf in recovered else None
        if not isinstance(ledger, dict) or not ledger.get("balanced"):
            bad.append(vf)
    add("accounting", not bad, max((e.t for e in recovered.values()), default=None),
        "VF drivers", f"ledger not balanced (or not reported) for {bad}" if bad else "")

    bad = []
    for vf in vfs:
        now = recovered[vf].data.get("config") if vf in recovered else None
        before = (config_before or {}).get(vf)
        if before is None:
            before = recovered[vf].data.get("config_before") if vf in recovered else None
        if not isinstance(now, dict) or not isinstance(before, dict) or any(
                now.get(k) != before.get(k) for k in ("mac", "vlan", "mtu")):
            bad.append(vf)
    add("config-restored", not bad, max((e.t for e in recovered.values()), default=None),
        "VF drivers", f"MAC/VLAN/MTU differ (or not reported) for {bad}" if bad else "")
    return steps


def first_failure(steps: Iterable[Step]) -> Step | None:
    for s in steps:
        if not s.ok:
            return s
    return None
