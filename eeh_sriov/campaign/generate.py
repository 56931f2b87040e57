"""Exhaustive mode: every fault at every event of a clean recovery.

    events = trigger_points(clean_timeline)          # [(source, kind, pe), ...] sorted
    scenarios, excluded = exhaustive(events, topology="default")

The clean scenario is an adapter error and nothing else. Each distinct (source, kind, PE)
of its timeline after the error that is a trigger event (`model.TRIGGER_EVENTS`) is a point
E; each fault variant F that makes sense at E makes one scenario "adapter error, then F at
the first E". Coverage = pairs run / pairs possible, where the possible pairs are these.

So that every worker and every shard generates the same list, the points come from a
recorded clean timeline shipped with the package (`reference/<topology>.triggers.jsonl`,
written by `python -m eeh_sriov campaign reference`), not from a run of the moment: which
steps a clean run shows can vary with timing (a VF driver's unfreeze attempt may come
before or after the adapter is back).

What is not generated, and why (`excluded` lists each pair with its reason):
- guest-killed: VM mode only;
- a "same"-target VF fault (vf-error, vf-driver-crash) at an event of the adapter PE: the
  adapter has no VF of its own ("other" covers it);
- a channel or PE fault at an event without a PE (none in a clean run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from eeh_sriov.campaign import pes
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.model import TRIGGER_EVENTS, Fault, Mode, Scenario, Trigger
from eeh_sriov.campaign.rig import campaign_topology
from hypervisor_shim.pe.names import qualify
from hypervisor_shim.timeline import Entry

REFERENCE = Path(__file__).parent / "reference"
FIRST = Fault("adapter-fatal")
Point = tuple[str, str, str | None]  # (source, kind, pe)


def fault_variants(pe: str | None) -> list[tuple[Fault, str | None]]:
    """The faults at an event of PE `pe`: (fault, None) when it makes sense there,
    (fault, why not) when it does not."""
    vf = pe is not None and pes.is_vf(pe)
    same_vf = None if vf else "the adapter has no VF of its own (\"other\" covers it)"
    no_pe = None if pe is not None else "the event names no PE"
    return [
        (Fault("adapter-fatal"), None),
        (Fault("vf-error", "same"), same_vf),
        (Fault("vf-error", "other"), None),
        (Fault("errinjct", "same", {"function": 1}), no_pe),  # MMIO load data parity
        (Fault("errinjct", "same", {"function": 17}), no_pe),  # DMA write data parity
        *((Fault("reset-fails", "same", {"times": n}), no_pe) for n in (1, 2, 3)),
        (Fault("freeze-limit"), None),
        (Fault("pf-driver-crash"), None),
        (Fault("vf-driver-crash", "same"), same_vf),
        (Fault("vf-driver-crash", "other"), None),
        (Fault("channel-closed", "same"), no_pe),
        (Fault("console-client-gone"), None),
        (Fault("model-killed"), None),
        (Fault("guest-killed", "same"), "VM mode only"),
    ]


def trigger_points(entries: Iterable[Entry], since: float = 0.0) -> list[Point]:
    """The distinct trigger points of a timeline from `since` on, sorted."""
    points = {(e.source, e.kind, e.pe) for e in entries
              if e.t >= since and (e.source, e.kind) in TRIGGER_EVENTS}
    return sorted(points, key=_point_key)


def _point_key(p: Point) -> tuple[str, str, str]:
    return p[0], p[1], p[2] or ""


def seed_of(*parts: str) -> int:
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:15], 16)


def exhaustive(points: Sequence[Point], *, topology: str = "default", timing: str = "fast",
               traffic: bool = True) -> tuple[list[Scenario], list[tuple[str, str, str]]]:
    """Every (point, fault) pair that makes sense, as scenarios in a fixed order; and the
    pairs left out: (trigger label, fault label, why)."""
    out: list[Scenario] = []
    excluded = []
    for source, kind, pe in sorted(set(points), key=_point_key):
        trig = Trigger(kind, pe, source)
        for fault, why in fault_variants(pe):
            if why is not None:
                excluded.append((trig.label(), fault.label(), why))
                continue
            out.append(Scenario.build(FIRST, ((trig, fault),), topology=topology,
                                      timing=timing, traffic=traffic,
                                      seed=seed_of(topology, trig.label(), fault.label())))
    return out, excluded


def clean_scenario(topology: str = "default", timing: str = "fast") -> Scenario:
    return Scenario.build(FIRST, topology=topology, timing=timing, seed=0)


def reference_path(topology: str, timing: str = "fast") -> Path:
    return REFERENCE / f"{Path(topology).stem}-{timing}.triggers.jsonl"


def write_reference(path: Path, points: Sequence[Point]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"source": s, "kind": k, "pe": p}) + "\n"
                            for s, k, p in points))


def read_reference(path: Path) -> list[Point]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise CampaignError(f"no reference timeline {path} ({e.strerror}): write it with "
                            "`python -m eeh_sriov campaign reference`") from None
    out: list[Point] = []
    for n, line in enumerate(lines, 1):
        try:
            o = json.loads(line)
            point = (str(o["source"]), str(o["kind"]), o["pe"])
        except (ValueError, KeyError, TypeError):
            raise CampaignError(f"{path}:{n}: not a trigger point") from None
        if (point[0], point[1]) not in TRIGGER_EVENTS or not (
                point[2] is None or isinstance(point[2], str)):
            raise CampaignError(f"{path}:{n}: {point} is not a trigger event")
        out.append(point)
    return out


def campaign(topology: str = "default", timing: str = "fast", *,
             exhaustive_mode: bool = True) -> list[Scenario]:
    """The scenarios of `campaign run`: exhaustive from the shipped reference, or the
    hand-picked matrix (docs/reliability.md; of several adapters, `adapters_matrix`)."""
    topo = campaign_topology(topology)  # one error line for a topology no campaign can run
    if exhaustive_mode:
        if len(topo.adapters) > 1:
            raise CampaignError(f"topology {topology}: {len(topo.adapters)} adapters; the "
                                "exhaustive campaign is one adapter's (a topology of several "
                                "runs the matrix: its faults on either adapter)")
        return exhaustive(read_reference(reference_path(topology, timing)),
                          topology=topology, timing=timing)[0]
    if len(topo.adapters) > 1:
        return adapters_matrix(topology, timing, [a.name for a in topo.adapters])
    return matrix(topology, timing)


def _builder(topology: str, timing: str, mode: Mode = "harness"
             ) -> Callable[..., Scenario]:
    def s(first: Fault, *ups: tuple[Trigger, Fault], traffic: bool = True) -> Scenario:
        return Scenario.build(first, tuple(ups), topology=topology, timing=timing,
                              traffic=traffic, mode=mode,
                              seed=seed_of(topology, first.label(),
                                           *(f.label() for _, f in ups)))
    return s


def adapters_matrix(topology: str, timing: str, adapters: Sequence[str], *,
                    mode: Mode = "harness") -> list[Scenario]:
    """A topology of several adapters: faults on its first two adapters (A, B), at
    events of either, each judged by the isolation oracle (an adapter no fault reaches
    shows nothing: docs/campaign.md). Each adapter needs VFs 0 and 1 driven. In VM mode
    the harness-only faults (driver crashes, the model's death) are left out."""
    a, b = adapters[0], adapters[1]

    def vf(adapter: str, n: int) -> str:
        return qualify(adapter, f"vf{n}")

    def fatal(adapter: str) -> Fault:
        return Fault("adapter-fatal", adapter)
    s = _builder(topology, timing, mode)
    pol, drv = "policy", "driver"
    out = [
        s(fatal(a)), s(fatal(b)), s(Fault("vf-error", vf(b, 0))),
        # B fails while A recovers, at A's steps and A's VFs' steps
        s(fatal(a), (Trigger("reset-hot", a, pol), fatal(b))),
        s(fatal(a), (Trigger("lockout-start", a, pol), fatal(b))),
        s(fatal(a), (Trigger("allow-unfreeze", a, pol), fatal(b))),
        s(fatal(a), (Trigger("recovered", vf(a, 1), drv), fatal(b))),
        # and A at B's
        s(fatal(b), (Trigger("error-detected", b, drv), fatal(a))),
        s(fatal(b), (Trigger("slot-reset", vf(b, 0), drv), fatal(a))),
        # a VF of B during A's lockout; the same VF's error again during its own recovery
        s(fatal(a), (Trigger("unfreeze-refused", vf(a, 1), pol),
                     Fault("vf-error", vf(b, 1)))),
        s(Fault("vf-error", vf(b, 0)), (Trigger("error-detected", vf(b, 0), drv),
                                        Fault("vf-error", "same"))),
        s(fatal(a), (Trigger("lockout-lifted", vf(a, 0), pol), Fault("vf-error", "other"))),
        # errinjct armed on B's PE and on a VF of B during A's recovery
        s(fatal(a), (Trigger("error-detected", a, drv),
                     Fault("errinjct", b, {"function": 1}))),
        s(fatal(a), (Trigger("configured", a, pol),
                     Fault("errinjct", vf(b, 0), {"function": 17}))),
        # B's resets fail: permanent failure of B (3) or of its VF; A untouched
        s(Fault("reset-fails", b, {"times": 3})),
        s(Fault("reset-fails", b, {"times": 1}), (Trigger("pe-frozen", b, pol),
                                                  fatal(a))),
        s(Fault("reset-fails", vf(b, 0), {"times": 3})),
        s(Fault("freeze-limit", b)),
        s(fatal(a), (Trigger("reset-hot", a, pol), Fault("freeze-limit", b))),
        s(fatal(a), (Trigger("reset-hot", a, pol), Fault("console-client-gone"))),
    ]
    if mode == "harness":
        out += [
            s(Fault("pf-driver-crash", a)),
            s(fatal(a), (Trigger("slot-reset", vf(a, 0), drv), Fault("vf-driver-crash",
                                                                     vf(b, 0)))),
            s(fatal(b), (Trigger("reset-hot", b, pol), Fault("pf-driver-crash", a))),
            s(Fault("model-killed")),
        ]
    return out


def matrix(topology: str = "default", timing: str = "fast") -> list[Scenario]:
    """docs/reliability.md's fault matrix, as scenarios (plus a VF-first isolation case)."""
    s = _builder(topology, timing)
    pol = "policy"
    return [
        s(FIRST), s(FIRST, traffic=False), s(Fault("vf-error", "vf1")),
        s(FIRST, (Trigger("pe-frozen", "vf0", pol, delay_ms=1), Fault("adapter-fatal"))),
        s(FIRST, (Trigger("reset-hot", "adapter", pol), Fault("adapter-fatal"))),
        s(FIRST, (Trigger("lockout-lifted", "vf1", pol), Fault("adapter-fatal"))),
        *(s(Fault("reset-fails", "adapter", {"times": n})) for n in (1, 2, 3)),
        s(Fault("freeze-limit")), s(Fault("model-killed")),
        s(FIRST, (Trigger("reset-hot", "adapter", pol), Fault("console-client-gone"))),
        s(FIRST, (Trigger("reset-hot", "adapter", pol), Fault("channel-closed", "g1"))),
        s(Fault("vf-driver-crash", "vf0")), s(Fault("pf-driver-crash")),
    ]
