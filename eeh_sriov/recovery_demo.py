"""The recovery story end to end in real guests: `make demo` tells it, `make vm-test` checks it.

    result = await Story(StoryConfig(topology, kind="adapter"), assets, run_dir).run()
    result.ok, result.steps, result.summary

1. The topology comes up (System): the platform, one QEMU per guest running the drivers'
   agent (with test traffic: every VF probes the uplink and the VFs of other guests in
   its VLAN), the consoles. Progress every few seconds while guests boot.
2. The drivers are ready when every function reported `probe`. Host traffic starts:
   numbered probes from the uplink to every VF, echoed back (loss and duplicates counted
   exactly); a baseline echo from every VF is required.
3. The error is injected through the platform's QMP console, as an operator does:
   `eeh-inject` of an adapter fatal error ("adapter"), of a VF-only error ("vf"), or,
   after `eeh-set-policy max-freezes=0`, an adapter error that is the PE's last
   ("permanent").
4. Each step is told as it happens (time since injection); then the result is checked:
   - adapter: the claim's 11 steps in order (hypervisor_shim.claim); of a topology of
     several adapters, the error is the first adapter's (nic0), its claim is checked, and
     the other adapters are untouched: none of their PEs decided on, none of their
     drivers recovering, none of their probes lost;
   - vf: that VF recovered, no other PE froze, traffic back on every VF;
   - permanent: every driver reported the permanent failure, every PE reads state 5
     with hint 0.
5. Artifacts: events.jsonl (the timeline), summary.json, timeline.md, uplink.pcap (of
   several adapters uplink-nic0.pcap, uplink-nic1.pcap, ...), and per guest console.log,
   qmp.jsonl, machine.json.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from eeh_abi.vocabulary import Kind, Source
from eeh_sriov.report import versions, write_summary, write_timeline_md
from eeh_sriov.system import System, settle_heap
from eeh_sriov.topology import Topology
from eeh_sriov.traffic import (
    Target,
    UplinkTraffic,
    guest_traffic_command,
    vf_names,
    vf_targets,
    write_pcaps,
)
from hypervisor_shim.claim import Step, check_claim, first_failure
from hypervisor_shim.errors import ShimError
from hypervisor_shim.pe.names import pe_name, qualify, split
from hypervisor_shim.platform_api import PeInfo
from hypervisor_shim.readiness import DriversNotReady, wait_drivers_ready_async
from hypervisor_shim.timeline import Entry
from qemu_launcher.assets import GuestAssets

KINDS = ("adapter", "vf", "permanent")
# what a successful run of each kind shows (the demo's last line)
OUTCOME = {"adapter": "every VF passes traffic again",
           "vf": "the VF recovered alone and passes traffic again",
           "permanent": "every PE permanently failed, every driver told, no traffic passes"}
IN_FLIGHT_S = 0.5  # frames already in flight when a permanent failure is pushed
DEAD_WATCH_S = 2.0  # how long traffic must stay dead after it
LIVE_STEPS = {
    *((Source.POLICY, k) for k in (
        Kind.PE_FROZEN, Kind.UNFREEZE_REFUSED, Kind.ALLOW_UNFREEZE, Kind.LOCKOUT_LIFTED,
        Kind.PE_THAWED, Kind.PERMANENT_FAILURE, Kind.FUNCTION_REMOVED, Kind.FUNCTION_ADDED)),
    *((Source.DRIVER, k) for k in (
        Kind.ERROR_DETECTED, Kind.ADAPTER_RECOVERED, Kind.RESET, Kind.RECOVERED,
        Kind.PERMANENT_FAILURE)),
    (Source.TRAFFIC, Kind.TRAFFIC_BACK),
    (Source.CONSOLE, Kind.INJECT),
}


class StoryError(ShimError):
    """The story could not be told (drivers never ready, no baseline traffic)."""


@dataclass(frozen=True)
class StoryConfig:
    topology: Topology
    kind: str = "adapter"  # one of KINDS
    vf: str = "vf0"  # the VF of a VF-only error
    rate_hz: float = 25.0  # host probes per VF per second
    guest_pps: float = 10.0  # each VF's own probes per second
    accel: str = "tcg"
    ready_timeout: float = 180.0
    recovery_timeout: float = 60.0
    lockout: bool = True  # False only to show that the claim check catches it
    before_s: float = 1.0  # traffic before the injection
    after_s: float = 1.0  # traffic after the recovery, before the books are closed


@dataclass
class StoryResult:
    ok: bool
    kind: str
    steps: list[Step]
    summary: dict[str, Any]
    run_dir: Path
    failure: str = ""
    lines: list[str] = field(default_factory=list)


def check_story(topo: Topology, kind: str, vf: str) -> None:
    """What the demo refuses before anything is set up or boots (StoryError)."""
    if kind not in KINDS:
        raise StoryError(f"unknown story kind {kind!r} (one of {', '.join(KINDS)})")
    if topo.adapters and kind == "permanent":
        raise StoryError(f"topology {topo.source} has several adapters; the permanent "
                         "failure is one adapter's story: use `python -m eeh_sriov up` "
                         "with it (console: eeh-set-policy adapter=nic0 max-freezes=0, "
                         "eeh-inject pe=nic0 kind=adapter-fatal)")
    # a VF-only error goes to a VF a guest holds
    held = list(vf_names(topo))
    if kind == "vf" and vf not in held:
        raise StoryError(f"--vf {vf}: not a VF a guest of {topo.source} "
                         f"holds ({', '.join(held) or 'none'})")


class Story:
    def __init__(self, cfg: StoryConfig, assets: GuestAssets, run_dir: Path,
                 say: Callable[[str], None] = print) -> None:
        check_story(cfg.topology, cfg.kind, cfg.vf)
        self.cfg = cfg
        self.assets = assets
        self.run_dir = run_dir
        self._say = say
        self.lines: list[str] = []
        self.t_inject: float | None = None
        self._shown_pes: set[str] = set()
        self.system: System | None = None

    def say(self, text: str) -> None:
        self.lines.append(text)
        self._say(text)

    # ------------------------------------------------------------------ set-up
    def vf_names(self) -> dict[str, str]:
        """VF -> owner, for the VFs the guests hold (of several adapters, the first's:
        the adapter whose story it is)."""
        return {fn: o for fn, o in vf_names(self.cfg.topology).items()
                if split(fn)[0] == self.adapter}

    @property
    def adapter(self) -> str:
        """The adapter whose story it is ("" for the only, unnamed one): its VF's for a
        VF-only error, else the first."""
        if self.cfg.kind == "vf":
            return split(self.cfg.vf)[0]
        return self.cfg.topology.adapter.name

    def others(self) -> dict[str, str]:
        """VF -> owner, for the VFs of the other adapters (none of one adapter)."""
        return {fn: o for fn, o in vf_names(self.cfg.topology).items()
                if split(fn)[0] != self.adapter}

    def targets(self) -> dict[str, Target]:
        return vf_targets(self.cfg.topology)

    def guest_command(self, guest: str) -> str:
        """The agent, with traffic to the VFs of other guests in the same VLAN."""
        return guest_traffic_command(self.cfg.topology, guest, self.cfg.guest_pps)

    # ------------------------------------------------------------------ the run
    async def run(self) -> StoryResult:
        cfg, topo = self.cfg, self.cfg.topology
        pcfg = topo.platform_config(host_cpus=())
        pcfg = dataclasses.replace(pcfg, policy=dataclasses.replace(pcfg.policy,
                                                                    lockout=cfg.lockout))
        t_start = time.monotonic()
        held = ", ".join(g.name + ": " + " ".join(g.functions) for g in topo.guests)
        self.say(f"booting {len(topo.guests)} guests ({held}); reset timing "
                 f"{topo.adapter.timing}")
        progress = asyncio.ensure_future(self._progress(t_start))
        system = self.system = System(topo, self.run_dir, self.assets, accel=cfg.accel,
                                      guest_command=lambda g: self.guest_command(g.name),
                                      platform_config=pcfg)
        try:
            async with system:
                up = system.platform.uplink_name
                self.say(f"guests up after {time.monotonic() - t_start:.1f} s; waiting for "
                         "the drivers" + (f" (uplink: tcpdump -i {up})" if up != "queue"
                                          else ""))
                await self._wait_ready(system, t_start)
                progress.cancel()
                return await self._with_traffic(system)
        finally:
            progress.cancel()

    async def _progress(self, t0: float) -> None:
        while True:
            await asyncio.sleep(5)
            self.say(f"  ... {time.monotonic() - t0:.0f} s")

    async def _wait_ready(self, system: System, t0: float) -> None:
        wanted = self.cfg.topology.guest_pes

        def guest_stopped() -> str | None:
            for name, vm in system.machines.items():
                if vm.proc is not None and vm.proc.returncode is not None:
                    return (f"guest {name} stopped before its drivers were ready; "
                            f"see {vm.paths.run_dir}/console.log")
            return None

        try:
            await wait_drivers_ready_async(system.platform.timeline, wanted,
                                           self.cfg.ready_timeout, interval=0.2,
                                           check=guest_stopped)
        except DriversNotReady as e:
            raise StoryError(str(e)) from None
        system.platform.timeline.record(Source.SHIM, Kind.DRIVERS_READY,
                                        data={"s": round(time.monotonic() - t0, 3)})
        settle_heap()
        self.say(f"drivers ready after {time.monotonic() - t0:.1f} s "
                 f"({system.how_booted()}): {' '.join(sorted(wanted))}")

    async def _with_traffic(self, system: System) -> StoryResult:
        plat = system.platform
        with UplinkTraffic(plat, self.targets(), rate_hz=self.cfg.rate_hz) as traffic:
            for name in traffic.targets:
                if await asyncio.to_thread(traffic.wait_echo_after, name, 0.0, 30) is None:
                    raise StoryError(f"no baseline traffic through {name}")
            self.say("traffic flows through every VF (host probes via the uplink, "
                     "VF-to-VF across guests); injecting through the platform console")
            self._shown_pes = {p.pe for p in await plat.query_pes()}
            await asyncio.sleep(self.cfg.before_s)  # traffic before the error
            plat.timeline.add_listener(self._live)
            try:
                await self._inject(system)
                steps = await self._wait_outcome(system, traffic)
            finally:
                plat.timeline.remove_listener(self._live)
            await asyncio.sleep(self.cfg.after_s)  # traffic after the recovery
            traffic.pause()
            await asyncio.sleep(1.0)
            stats = traffic.stats(in_flight_s=0.5)
            pcaps = await asyncio.to_thread(write_pcaps, traffic, self.run_dir)
        if self.others():
            steps.append(self._untouched(system, stats))
        return self._finish(system, steps, stats, pcaps)

    def _untouched(self, system: System, stats: dict[str, dict[str, int]]) -> Step:
        """Of several adapters, the others saw nothing of the error: no decision of the
        platform on their PEs, no step of their drivers, none of their probes lost."""
        assert self.t_inject is not None
        others = {split(vf)[0] for vf in self.others()}
        touched = sorted({e.pe for e in system.platform.timeline.snapshot()
                          if e.t >= self.t_inject and e.pe is not None
                          and e.source in (Source.POLICY, Source.DRIVER)
                          and (e.pe in others or split(e.pe)[0] in others)})
        lost = sorted(vf for vf in self.others() if stats.get(vf, {}).get("lost"))
        why = "; ".join(x for x in (f"steps on {touched}" if touched else "",
                                    f"probes lost on {lost}" if lost else "") if x)
        return Step("others-untouched", f"{', '.join(sorted(others))} untouched (no PE "
                    "frozen, no driver recovering, no probe lost)", not why, None,
                    "platform", why)

    def _live(self, e: Entry) -> None:
        if (e.source, e.kind) not in LIVE_STEPS or self.t_inject is None:
            return
        if e.pe is not None and e.pe not in self._shown_pes:
            return  # PEs of VFs that are neither enabled nor held by a guest
        who = e.owner or ("platform" if e.source == Source.POLICY else e.source)
        extra = ""
        if e.kind == Kind.PE_FROZEN:
            extra = " (side-effect, locked out)" if e.data.get("locked_out") else ""
        self.say(f"  {(e.t - self.t_inject) * 1000:8.1f} ms  {e.kind:<18} "
                 f"{e.pe or '':<8} {who}{extra}")

    async def _inject(self, system: System) -> None:
        client = QMPClient("story")
        await client.connect(str(system.console.platform_path))
        try:
            if self.cfg.kind == "permanent":
                await client.execute("eeh-set-policy", {"max-freezes": 0})
            self.t_inject = time.monotonic()
            if self.cfg.kind == "vf":
                await client.execute("eeh-inject", {"pe": self.cfg.vf, "kind": "vf-error"})
            else:
                await client.execute("eeh-inject", {"pe": pe_name(self.adapter, None),
                                                    "kind": "adapter-fatal"})
        finally:
            await client.disconnect()

    def _recovered_after(self, entries: list[Entry], names: set[str]) -> dict[str, float]:
        assert self.t_inject is not None
        out: dict[str, float] = {}
        for e in entries:
            if e.source == Source.DRIVER and e.kind == Kind.RECOVERED and e.t > self.t_inject \
                    and e.pe in names and e.pe not in out:
                out[e.pe] = e.t
        return out

    async def _wait_outcome(self, system: System, traffic: UplinkTraffic) -> list[Step]:
        plat = system.platform
        assert self.t_inject is not None
        t0 = self.t_inject
        vfs = self.vf_names()
        deadline = time.monotonic() + self.cfg.recovery_timeout
        if self.cfg.kind == "permanent":
            names = {"adapter", *vfs}
            while time.monotonic() < deadline:
                got = {e.pe for e in plat.timeline.snapshot() if e.source == Source.DRIVER
                       and e.kind == Kind.PERMANENT_FAILURE and e.t > t0}
                if names <= got:
                    break
                await asyncio.sleep(0.2)
            steps = self._permanent_steps(system, names, await plat.query_pes())
            return [*steps, await self._traffic_dead(system, traffic)]
        adapter_pe = pe_name(self.adapter, None)
        wanted = {self.cfg.vf} if self.cfg.kind == "vf" else {adapter_pe, *vfs}
        while time.monotonic() < deadline:
            if wanted <= set(self._recovered_after(plat.timeline.snapshot(), wanted)):
                break
            await asyncio.sleep(0.1)
        recovered = self._recovered_after(plat.timeline.snapshot(), set(vfs))
        for name in vfs:  # the story's adapter's (the others' traffic never stopped)
            after = recovered.get(name, t0)
            t = await asyncio.to_thread(traffic.wait_echo_after, name, after,
                                        max(1.0, deadline - time.monotonic()))
            if t is not None:
                plat.timeline.record(Source.TRAFFIC, Kind.TRAFFIC_BACK, pe=name, t=t)
        entries = plat.timeline.snapshot()
        if self.cfg.kind == "vf":
            return self._vf_steps(entries, vfs)
        return check_claim(entries, pf_owner=self.cfg.topology.owner_of(
            qualify(self.adapter, "pf")) or "", vfs=vfs, since=t0 - 0.001,
            adapter_pe=adapter_pe)

    def _vf_steps(self, entries: list[Entry], vfs: dict[str, str]) -> list[Step]:
        assert self.t_inject is not None
        t0, vf = self.t_inject, self.cfg.vf
        after = [e for e in entries if e.t >= t0]
        frozen = [e for e in after if e.source == Source.POLICY and e.kind == Kind.PE_FROZEN]
        steps = [Step("vf-frozen", f"{vf} PE frozen", any(e.pe == vf for e in frozen),
                      next((e.t for e in frozen if e.pe == vf), None), "platform")]
        others = sorted({e.pe for e in frozen if e.pe != vf and e.pe is not None})
        steps.append(Step("not-escalated", "no other PE froze", not others, None,
                          "platform", f"also frozen: {others}" if others else ""))
        rec = next((e for e in after if e.source == Source.DRIVER and e.kind == Kind.RECOVERED
                    and e.pe == vf), None)
        steps.append(Step("vf-recovered", f"{vf} recovered", rec is not None,
                          rec.t if rec else None, vfs.get(vf, "?")))
        back = {e.pe: e.t for e in after
                if e.source == Source.TRAFFIC and e.kind == Kind.TRAFFIC_BACK}
        missing = sorted(set(vfs) - set(back))
        steps.append(Step("traffic-back", "traffic on every VF", not missing,
                          max(back.values(), default=None), "traffic",
                          f"no traffic through {missing}" if missing else ""))
        ledger = rec.data.get("ledger") if rec else None
        steps.append(Step("accounting", "accounting balanced",
                          isinstance(ledger, dict) and bool(ledger.get("balanced")),
                          rec.t if rec else None, vfs.get(vf, "?")))
        return steps

    async def _traffic_dead(self, system: System, traffic: UplinkTraffic) -> Step:
        """After a permanent failure no frame may pass any VF: watch DEAD_WATCH_S past the
        last push (frames in flight at that moment get IN_FLIGHT_S)."""
        assert self.t_inject is not None
        pushed = [e.t for e in system.platform.timeline.snapshot() if e.t >= self.t_inject
                  and e.source == Source.POLICY and e.kind == Kind.PERMANENT_FAILURE]
        since = max(pushed, default=time.monotonic()) + IN_FLIGHT_S
        await asyncio.sleep(max(0.0, since + DEAD_WATCH_S - time.monotonic()))
        alive = sorted(name for name in traffic.targets
                       if traffic.wait_echo_after(name, since, 0) is not None)
        return Step("traffic-dead", "no traffic through any VF afterwards", not alive,
                    time.monotonic(), "traffic",
                    f"echoes after the permanent failure from {alive}" if alive else "")

    def _permanent_steps(self, system: System, names: set[str],
                         pes: list[PeInfo]) -> list[Step]:
        assert self.t_inject is not None
        entries = [e for e in system.platform.timeline.snapshot() if e.t >= self.t_inject]
        pushed = {e.pe for e in entries if e.source == Source.POLICY
                  and e.kind == Kind.PERMANENT_FAILURE}
        reported = {e.pe: e.t for e in entries if e.source == Source.DRIVER
                    and e.kind == Kind.PERMANENT_FAILURE}
        pushed_at = max((e.t for e in entries if e.source == Source.POLICY
                         and e.kind == Kind.PERMANENT_FAILURE), default=None)
        states = {p.pe: (p.state, p.retry_ms) for p in pes}
        bad_state = sorted(n for n in names if states.get(n) != (5, 0))
        return [
            Step("pushed", "permanent failure pushed to every PE's owner", names <= pushed,
                 pushed_at, "platform", f"missing {sorted(names - pushed)}"),
            Step("reported", "every driver reported it", names <= set(reported),
                 max(reported.values(), default=None), "drivers",
                 f"missing {sorted(names - set(reported))}"),
            Step("state", "every PE reads state 5 with hint 0", not bad_state,
                 time.monotonic(), "platform", f"other state: {bad_state}"),
        ]

    # ------------------------------------------------------------------ the end
    def _finish(self, system: System, steps: list[Step], stats: dict[str, dict[str, int]],
                pcaps: dict[str, int]) -> StoryResult:
        assert self.t_inject is not None
        t0 = self.t_inject
        entries = system.platform.timeline.snapshot()
        title = {"adapter": "Adapter error", "vf": f"VF-only error on {self.cfg.vf}",
                 "permanent": "Permanent failure"}[self.cfg.kind]
        write_timeline_md(self.run_dir / "timeline.md", title, steps, entries, t0)
        guest_traffic = {e.owner: e.data for e in entries
                         if e.source == Source.DRIVER and e.kind == Kind.TRAFFIC}
        ledgers = {e.pe: e.data.get("ledger") for e in entries
                   if e.source == Source.DRIVER and e.kind == Kind.RECOVERED and e.t > t0}
        counters = {n: {"uplink_probes": st, "driver_ledger": ledgers.get(n)}
                    for n, st in stats.items()}
        ready = next((e.data.get("s") for e in entries if e.kind == Kind.DRIVERS_READY), None)
        extra = {"kind": self.cfg.kind, "topology": self.cfg.topology.source,
                 "accel": self.cfg.accel, "timing": self.cfg.topology.adapter.timing,
                 "drivers_ready_s": ready, "uplink_pcap_frames": sum(pcaps.values()),
                 "uplink_pcaps": pcaps,
                 "guest_traffic": guest_traffic,
                 "guests": {n: vm.summary for n, vm in system.machines.items()},
                 "versions": versions({"qemu": self.assets.qemu.describe()})}
        if self.cfg.kind != "adapter":  # its first traffic-back, whatever the other steps
            back = [s.t for s in steps if s.key == "traffic-back" and s.t is not None]
            extra["recovery_ms"] = round((back[0] - t0) * 1000, 3) if back else None
        summary = write_summary(self.run_dir / "summary.json", steps=steps, t0=t0,
                                counters=counters, extra=extra)
        failed = first_failure(steps)
        self.say("")
        self.say(f"{'step':<56} {'since injection':>16}  who")
        for s in steps:
            when = f"{(s.t - t0) * 1000:.1f} ms" if s.t is not None else "-"
            mark = "" if s.ok else f"  FAILED: {s.detail}"
            self.say(f"{s.title:<56} {when:>16}  {s.who}{mark}")
        for name, st in stats.items():
            self.say(f"  {name}: probes {st['sent']} sent, {st['echoed']} echoed, "
                     f"{st['lost']} lost (while frozen), {st['duplicates']} duplicated")
        return StoryResult(failed is None, self.cfg.kind, steps, summary, self.run_dir,
                           "" if failed is None else
                           f"step {failed.key!r} ({failed.title}) failed: {failed.detail}",
                           self.lines)
