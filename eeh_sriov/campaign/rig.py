"""One topology in harness mode, for a scenario: the real platform (device model, vfio-user
server, PE policy with the lockout, platform-call server, timeline) and the real drivers
(`guest_drivers.agent.Agent`, one per owner as in its guests, each on its own channel),
with the host's uplink traffic (`eeh_sriov.traffic`).

    with HarnessRig(topology_config("default", "fast"), run_dir, traffic=True) as rig:
        rig.plat.inject_adapter_error()
        rig.settled()                 # every PE healthy or permanent, every driver idle
        rig.books                     # what the model's counters and the PEs were at each
                                      # decision of the policy (sampled on the model's loop)

`books` is how the oracles see the device model without touching it from another thread:
a timeline listener samples, on the model's loop thread and at every policy entry, each
function's DMA and interrupt counters and each PE's state and flags.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device_model import ResetTiming
from device_model.function import Function
from eeh_abi.vocabulary import Source
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.pes import is_vf, order
from eeh_sriov.topology import DEFAULT_TOPOLOGY, Topology, load_topology
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.driver import Driver, DriverState
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import PeFlag
from hypervisor_shim.pe.names import pe_of_function, qualify, split
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry

log = logging.getLogger(__name__)
POLL = PollConfig(max_sleep_s=0.01)
TOPOLOGIES = DEFAULT_TOPOLOGY.parent
QUIET_S = 0.15  # no policy decision nor driver step this long: the recovery is over
PROBES_HZ = 100.0  # the host's probes per VF per second ...
MAX_PROBES_S = 1600.0  # ... and at most this many a second in all (2 x 64 VFs: 12.5/s)


def probe_rate(vfs: int) -> float:
    """The host's probes per VF per second for `vfs` VFs (the traffic thread is Python:
    its frames grow with the VFs)."""
    return min(PROBES_HZ, MAX_PROBES_S / max(vfs, 1))


def topology_path(name: str) -> Path:
    """A shipped topology by name ("default", "harness-8vf") or a .toml path."""
    path = Path(name) if name.endswith(".toml") else TOPOLOGIES / f"{name}.toml"
    if not path.is_file():
        shipped = ", ".join(sorted(p.stem for p in TOPOLOGIES.glob("*.toml")))
        raise CampaignError(f"no topology {name!r} (shipped: {shipped}; or a .toml path)")
    return path


def campaign_topology(name: str) -> Topology:
    """A topology a campaign can run, parsed: a bad file is one error line before any
    scenario. Of one adapter or several (each VF's traffic through its own adapter's
    uplink; the triggers and faults name adapter-qualified PEs)."""
    return load_topology(topology_path(name))


def topology_config(name: str, timing: str) -> PlatformConfig:
    """The platform config of a topology for harness mode: its functions, owners, VF
    settings and policy; reset timing `timing`; the uplink a queue; no CPU pinning."""
    topo = load_topology(topology_path(name))
    return topo.platform_config(timing=ResetTiming.SPEC if timing == "spec"
                                else ResetTiming.FAST, uplink="queue", host_cpus=())


@dataclass(frozen=True)
class Sample:
    """At a policy entry (its index in the timeline): per function (frames sent: DMA
    reads, frames delivered: DMA writes, interrupts delivered) and per PE (state, flags);
    per function its RX drops for want of a free descriptor so far (an overrun: the
    driver did not harvest its ring; empty in observations recorded before it was
    sampled)."""

    index: int
    t: float
    kind: str
    pe: str | None
    counters: dict[str, tuple[int, int, int]]
    states: dict[str, tuple[int, tuple[str, ...]]]
    no_desc: dict[str, int] = field(default_factory=dict)


class Rig:
    """What the faults and the runner need of a running topology, in either mode: the
    platform, its config, the owners, the books, settling. HarnessRig runs the drivers in
    this process; eeh_sriov.campaign.vm.VmRig in real guests."""

    quiet_s = QUIET_S

    def __init__(self, cfg: PlatformConfig, plat: Platform) -> None:
        self.cfg = cfg
        self.plat = plat
        self.traffic: UplinkTraffic | None = None
        self.books: list[Sample] = []
        self._index = 0
        self._lock = threading.Lock()
        self.closers: list[Callable[[], None]] = []  # what faults started (a console)

    def owners(self) -> list[str]:
        """The owners (guests or agents) a fault may name, sorted."""
        raise NotImplementedError

    def adapters(self) -> list[str]:
        """The adapters' names in order ("" for the only, unnamed one)."""
        return list(self.plat.trees)

    def vf_names(self) -> list[str]:
        """The VFs driven, in index order."""
        raise NotImplementedError

    def restart_driver(self, function: str) -> None:
        raise CampaignError(f"a driver crash of {function} needs harness mode")

    def restart_agent(self, owner: str) -> None:
        raise CampaignError(f"a closed channel of {owner} needs harness mode")

    def kill_guest(self, owner: str) -> None:
        raise CampaignError(f"killing guest {owner} needs VM mode")

    def drivers_state(self) -> dict[str, tuple[str, bool]]:
        """Each driver's (state, recovery pending or running)."""
        raise NotImplementedError

    def pe_of(self, function: str) -> str:
        return pe_of_function(function)

    # ------------------------------------------------------------------ the books
    def sample(self, e: Entry) -> None:
        """Timeline listener: on the model's loop thread for policy entries (the policy
        records them there), so the model is read where it may be."""
        with self._lock:
            index = self._index
            self._index += 1
        if e.source != Source.POLICY or not self.plat.host.server.loop.is_running():
            return
        try:
            functions = self.model_functions()
            counters = {n: (f.nic.ledger.tx_sent, f.nic.ledger.rx_delivered,
                            f.irq_delivered) for n, f in functions.items()}
            no_desc = {n: f.nic.ledger.rx_no_desc for n, f in functions.items()}
            states = {}
            for tree in self.plat.trees.values():
                for rec in tree.policy.records.values():
                    if tree.policy.present(rec):
                        st = tree.policy.state(rec)
                        states[rec.name] = (int(st.state), tuple(st.flags.names()))
        except Exception:  # the model is going down: no sample
            log.debug("campaign sample failed", exc_info=True)
            return
        self.books.append(Sample(index, e.t, e.kind, e.pe, counters, states, no_desc))

    def no_desc_now(self) -> tuple[float, dict[str, int]] | None:
        """Each function's RX drops for want of a free descriptor, read on the model's
        loop, and when (the books' last word: drops after the last policy entry); None
        when the model is dead."""
        plat = self.plat
        if plat.model_failure is not None:
            return None
        counts: dict[str, int] = plat.call(
            lambda: {n: f.nic.ledger.rx_no_desc for n, f in self.model_functions().items()})
        return time.monotonic(), counts

    def model_functions(self) -> dict[str, Function]:
        """Every function of every adapter by its platform-wide name ("vf3", "nic1.vf3");
        on the model's loop only."""
        return {qualify(a, f.name): f for a, adapter in self.plat.host.adapters.items()
                for f in adapter.functions()}

    def pe_states(self) -> dict[str, tuple[int, tuple[str, ...]]]:
        return {name: (int(s["state"]), tuple(s["flags"]))
                for name, s in self.plat.pe_states().items()}

    # ------------------------------------------------------------------ settling
    def unsettled(self) -> list[str]:
        """What is still moving: PEs neither healthy nor permanently failed, drivers not
        idle, recent decisions or steps. Empty: the recovery is over."""
        why = []
        permanent = set()
        for pe, (state, flags) in self.pe_states().items():
            if PeFlag.PERMANENT.names()[0] in flags:
                permanent.add(pe)
            elif state != 0 or flags:
                why.append(f"{pe}: state {state} {list(flags)}")
        for name, (dstate, busy) in self.drivers_state().items():
            if dstate == DriverState.UP.value and not busy:
                continue
            if dstate == DriverState.FAILED.value and self.pe_of(name) in permanent:
                continue
            why.append(f"driver {name}: {dstate}" + (", recovery under way" if busy else ""))
        last = [e.t for e in self.plat.timeline.snapshot()[-50:]
                if e.source in (Source.POLICY, Source.DRIVER)]
        if last and time.monotonic() - max(last) < self.quiet_s:
            why.append("recent steps")
        return why

    def settled(self, bound_s: float, busy: Callable[[], bool] = lambda: False
                ) -> list[str]:
        """Wait until nothing moves (`busy`: faults still due) or `bound_s` passed; what
        still moved at the end (empty: settled)."""
        deadline = time.monotonic() + bound_s
        while True:
            why = self.unsettled() + (["faults still due"] if busy() else [])
            if not why or time.monotonic() >= deadline:
                return why
            time.sleep(0.02)



class HarnessRig(Rig):
    def __init__(self, cfg: PlatformConfig, run_dir: Path, *, traffic: bool = True) -> None:
        super().__init__(cfg, Platform(cfg, run_dir))
        self.run_dir = run_dir
        self.want_traffic = traffic
        self.agents: dict[str, Agent] = {}
        self.old_agents: list[Agent] = []  # replaced by a restart; stopped at the end

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> HarnessRig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.plat.timeline.add_listener(self.sample)
        self.plat.start()
        try:
            pf_owners = {o for fn, o in self.cfg.owners.items() if split(fn)[1] == "pf"}
            for owner in sorted(self.cfg.owner_names, key=lambda o: o not in pf_owners):
                self.agents[owner] = self.new_agent(owner)  # the adapters' owners first
            if self.want_traffic:
                targets = {vf.name: Target(vf.mac, vf.vlan)
                           for a in self.agents.values() for vf in a.vf_drivers()}
                # each VF through its own adapter's uplink (UplinkTraffic routes by name)
                self.traffic = UplinkTraffic(self.plat, targets,
                                             rate_hz=probe_rate(len(targets))).__enter__()
                for name in targets:
                    if self.traffic.wait_echo_after(name, 0.0, 10) is None:
                        raise CampaignError(f"no traffic through {name} before the fault")
        except BaseException:
            self.stop()
            raise

    def owners(self) -> list[str]:
        return sorted(self.agents)

    def vf_names(self) -> list[str]:
        return sorted((n for n in self.drivers() if is_vf(n)), key=order)

    def drivers_state(self) -> dict[str, tuple[str, bool]]:
        out = {}
        for name, d in self.drivers().items():
            rec = d.recovery
            out[name] = (d.state.value, rec is not None and (rec.pending or rec.running))
        return out

    def new_agent(self, owner: str) -> Agent:
        agent = Agent(HarnessBackend(str(self.plat.hcall_path(owner))), poll=POLL)
        try:
            agent.start(probe_timeout=10)
        except BaseException:
            agent.backend.close()
            raise
        return agent

    def stop(self) -> None:
        """Traffic, drivers, what faults started, the platform; then the channels (their
        reader threads see the end of the stream at once once the platform is down)."""
        if self.traffic is not None:
            self.traffic.stop()
        agents = list(self.agents.values()) + self.old_agents
        for a in sorted(agents, key=lambda a: any(d.kind == "pf" for d in a.drivers.values())):
            with contextlib.suppress(Exception):
                a.stop()
        while self.closers:
            with contextlib.suppress(Exception):
                self.closers.pop()()
        self.plat.stop()
        for a in agents:
            with contextlib.suppress(Exception):
                a.backend.close()
        self.plat.timeline.remove_listener(self.sample)

    # ------------------------------------------------------------------ the drivers
    def drivers(self) -> dict[str, Driver]:
        return {n: d for a in self.agents.values() for n, d in a.drivers.items()}

    def agent_of(self, function: str) -> Agent:
        owner = self.cfg.owners.get(function)
        if owner is None or owner not in self.agents:
            raise CampaignError(f"no agent drives {function!r}")
        return self.agents[owner]

    def restart_driver(self, function: str) -> None:
        """The driver of `function` dies and a new one probes it (Agent.restart_driver).
        Blocking; not on the model's loop."""
        self.agent_of(function).restart_driver(function)

    def restart_agent(self, owner: str) -> None:
        """`owner`'s channel closes under its agent; the agent starts again on a new one."""
        old = self.agents[owner]
        old.backend.channel.close()
        old.stop()
        self.old_agents.append(old)
        self.agents[owner] = self.new_agent(owner)

    def config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.cfg.policy)
