"""What each fault kind does to a running harness rig (`model.FAULT_KINDS` says what it is).

    fired = apply(rig, Fault("vf-error", "other"), Context(rng, trigger_pe="vf0"), first=False)

A fault is applied on the campaign's own thread, never on the model's loop (the platform's
blocking calls hop there). Targets resolve here: "same" is the trigger entry's PE (its
function for a driver fault, its owner for a channel), "other" a VF (or owner) other than
the trigger's, drawn from the scenario's random generator.

As a first fault, "reset-fails" arms the failures and then raises the error that needs the
reset (an adapter error for the adapter PE, a VF error for a VF PE); as a follow-up it only
arms them: the recovery under way (or the next one) meets them.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from dataclasses import dataclass
from typing import Any

from eeh_sriov.campaign import pes
from eeh_sriov.campaign.console import ConsoleThread
from eeh_sriov.campaign.errors import CampaignError
from eeh_sriov.campaign.model import Fault
from eeh_sriov.campaign.rig import Rig
from hypervisor_shim.injection import InjectKind
from hypervisor_shim.pe.names import qualify, split


@dataclass(frozen=True)
class Context:
    rng: random.Random
    trigger_pe: str | None = None  # the PE of the entry that fired the trigger


@dataclass(frozen=True)
class Applied:
    """One fault as it was applied: what the trace and the oracles read."""

    t: float
    kind: str
    target: str | None  # resolved: a PE name, function or owner
    label: str
    first: bool
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "source": "campaign", "kind": "fault",
                "data": {"fault": self.kind, "target": self.target, "label": self.label,
                         "first": self.first, "error": self.error}}


def resolve_vf(rig: Rig, fault: Fault, ctx: Context) -> str:
    vfs = [n for n in rig.vf_names()]
    if fault.target == "same":
        if ctx.trigger_pe not in vfs:
            raise CampaignError(f"{fault.label()}: the trigger's PE {ctx.trigger_pe!r} is "
                                "not a VF")
        return ctx.trigger_pe
    if fault.target == "other":
        others = [n for n in vfs if n != ctx.trigger_pe]
        if not others:
            raise CampaignError(f"{fault.label()}: no other VF")
        return ctx.rng.choice(others)
    if fault.target in vfs:
        return fault.target
    raise CampaignError(f"{fault.label()}: no VF {fault.target!r} driven here ({vfs})")


def resolve_adapter(rig: Rig, fault: Fault, ctx: Context) -> str:
    """The adapter an adapter's fault hits (its name, "" for the unnamed one): no target,
    "adapter" or "pf" the first; "same" the trigger's; "nic1" or "nic1.pf" by name."""
    adapters = rig.adapters()
    target = fault.target
    if target == "same":
        if ctx.trigger_pe is None or not pes.is_adapter_pe(ctx.trigger_pe):
            raise CampaignError(f"{fault.label()}: the trigger's PE {ctx.trigger_pe!r} is "
                                "not an adapter's")
        target = ctx.trigger_pe
    if target in (None, "adapter", "pf"):
        return adapters[0]
    adapter = pes.adapter_of(target)
    if adapter not in adapters:
        raise CampaignError(f"{fault.label()}: no adapter {adapter!r} here "
                            f"({', '.join(adapters)})")
    return adapter


def resolve_pe(rig: Rig, fault: Fault, ctx: Context) -> str:
    target = ctx.trigger_pe if fault.target == "same" else fault.target
    if fault.target != "other" and target is not None and (
            split(target)[1] == "pf" or pes.is_adapter_pe(target)):
        return pes.adapter_pe(resolve_adapter(rig, fault, ctx))
    return resolve_vf(rig, fault, ctx)


def resolve_owner(rig: Rig, fault: Fault, ctx: Context) -> str:
    owners = rig.owners()
    trigger = ctx.trigger_pe
    mine = None if trigger is None else rig.cfg.owners.get(
        qualify(pes.adapter_of(trigger), "pf") if pes.is_adapter_pe(trigger) else trigger)
    if fault.target == "same":
        if mine is None:
            raise CampaignError(f"{fault.label()}: the trigger's PE has no owner")
        return mine
    if fault.target == "other":
        others = [o for o in owners if o != mine]
        if not others:
            raise CampaignError(f"{fault.label()}: no other owner")
        return ctx.rng.choice(others)
    if fault.target not in owners:
        raise CampaignError(f"{fault.label()}: no agent for owner {fault.target!r}")
    return str(fault.target)


def apply(rig: Rig, fault: Fault, ctx: Context, *, first: bool) -> Applied:
    """Apply `fault` now; what was done (with the error if it could not be)."""
    t = time.monotonic()
    target: str | None = None
    try:
        target = _act(rig, fault, ctx, first)
    except Exception as e:  # a fault the platform refused is a result, not a crash
        return Applied(t, fault.kind, target, fault.label(), first, f"{type(e).__name__}: {e}")
    return Applied(t, fault.kind, target, fault.label(), first)


def _error(rig: Rig, pe: str, why: str) -> None:
    """The error that freezes `pe`: an adapter error for an adapter PE, else a VF error."""
    adapter = pes.adapter_of(pe)
    if pes.is_adapter_pe(pe):
        rig.plat.inject_adapter_error(why, adapter=adapter)
    else:
        rig.plat.inject_vf_error(pes.vf_index(pe), why, adapter=adapter)


def _act(rig: Rig, fault: Fault, ctx: Context, first: bool) -> str | None:
    """Apply `fault`; its resolved target: an adapter fault's adapter PE ("adapter",
    "nic1"), a PE, a function or an owner; None for a fault of no PE or of every one."""
    plat = rig.plat
    k = fault.kind
    why = f"campaign: {fault.label()}"
    if k in ("adapter-fatal", "freeze-limit", "pf-driver-crash"):
        adapter = resolve_adapter(rig, fault, ctx)
        if k == "pf-driver-crash":
            rig.restart_driver(qualify(adapter, "pf"))
            return qualify(adapter, "pf")
        pe = pes.adapter_pe(adapter)
        if k == "freeze-limit":
            tree = plat.trees[adapter]
            count = plat.call(lambda: tree.policy.adapter_record.freezes.count)
            asyncio.run(plat.set_policy(max_freezes=count, adapter=pe))
        _error(rig, pe, why)
        return pe
    if k == "vf-error":
        vf = resolve_vf(rig, fault, ctx)
        _error(rig, vf, why)
        return vf
    if k == "errinjct":
        pe = resolve_pe(rig, fault, ctx)
        asyncio.run(plat.inject(pe, InjectKind.ERRINJCT, function=int(fault.params["function"]),
                                detail=why))
        return pe
    if k == "reset-fails":
        pe = resolve_pe(rig, fault, ctx)
        plat.fail_resets(pe, int(fault.params["times"]))
        if first:
            _error(rig, pe, why)
        return pe
    if k == "vf-driver-crash":
        vf = resolve_vf(rig, fault, ctx)
        rig.restart_driver(vf)
        return vf
    if k == "channel-closed":
        owner = resolve_owner(rig, fault, ctx)
        rig.restart_agent(owner)
        return owner
    if k == "console-client-gone":
        _console_client_gone(rig)
        return None
    if k == "model-killed":
        _kill_model(rig)
        return None
    if k == "guest-killed":
        owner = resolve_owner(rig, fault, ctx)
        rig.kill_guest(owner)
        return owner
    raise CampaignError(f"fault {k!r} is not available in harness mode")


def _console_client_gone(rig: Rig) -> None:
    """A QMP client of the platform's console asks for the PEs and leaves in the middle
    of its next command (the console is started on first use, stopped with the rig)."""
    con = ConsoleThread(rig.plat)
    rig.closers.append(con.close)
    s = socket.socket(socket.AF_UNIX)
    try:
        s.settimeout(5)
        s.connect(str(con.console.platform_path))
        s.recv(4096)  # the greeting
        s.sendall(b'{"execute": "qmp_capabilities"}')
        s.recv(4096)
        s.sendall(b'{"execute": "query-pes"}{"execute": "query-pe-err')
    finally:
        s.close()


def _kill_model(rig: Rig) -> None:
    """Something run on the model's loop raises what asyncio does not catch: its thread
    dies (docs/reliability.md, "When the device model dies")."""
    def die() -> None:
        raise SystemExit("campaign: the device model's thread dies")

    rig.plat.host.loop.call_soon_threadsafe(die)
    deadline = time.monotonic() + 5
    while rig.plat.model_failure is None and time.monotonic() < deadline:
        time.sleep(0.005)
    if rig.plat.model_failure is None:
        raise CampaignError("the device model's thread did not die")
