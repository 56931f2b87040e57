"""The operator's console over the real platform, read off the wire with a raw client:
the platform socket, the PE commands and their wire format (README "Console"), their
argument checks (refused before the platform is asked), the platform's refusals, and
the platform's events. The QMP protocol itself (framing, negotiation, ids, hostile
input, passthrough) is tests/unit/qmp/."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from eeh_console_rig import ADAPTER, VF0, VF1, console_entries, run_console, sock_dir, until

from eeh_abi.hcall import Channel
from hypervisor_shim.console import Console, pe_command_names
from hypervisor_shim.platform import Platform
from tests.unit.qmp.qmp_fakes import GuestRig, RawClient

__all__ = ["sock_dir"]  # the fixture, imported

PE_NAMES = ["query-pes", "eeh-inject", "eeh-reset-pe", "query-pe-error-log",
            "eeh-set-policy", "query-eeh-policy", "query-eeh-timeline"]
POLICY = {"max-freezes": 5, "window-s": 3600.0, "retry-hint-ms": 1000, "lockout": True,
          "errinjct": False}


def error(reply: dict[str, Any]) -> tuple[str, str]:
    assert set(reply) <= {"error", "id"}, reply
    return reply["error"]["class"], reply["error"]["desc"]


def pe(name: str, address: int, owner: str, state: int = 0, freezes: int = 0,
       flags: tuple[str, ...] = (), retry_ms: int = 0) -> dict[str, Any]:
    return {"pe": name, "address": address, "state": state, "retry_ms": retry_ms,
            "owner": owner, "freeze_count": freezes, "flags": list(flags)}


FRESH = [pe("adapter", ADAPTER, "svc"), pe("vf0", VF0, "g1"), pe("vf1", VF1, "g2")]


def test_platform_socket(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        c = await RawClient.connect(console.platform_path, negotiate=False)
        assert c.greeting == {"QMP": {"version": {"qemu": {"major": 0, "minor": 1,
                                                           "micro": 0},
                                                  "package": "eeh-sriov platform console"},
                                      "capabilities": []}}
        await c.command("qmp_capabilities")
        names = [x["name"] for x in (await c.command("query-commands"))["return"]]
        expected = ["qmp_capabilities", "query-commands", "query-version",
                    *(n for p in PE_NAMES for n in (f"__org.eeh-sriov_{p}", p)),
                    "human-monitor-command"]  # the platform socket's own small HMP
        assert names == expected == ["qmp_capabilities", "query-commands", "query-version",
                                     *pe_command_names(), "human-monitor-command"]
        r = await c.command("query-version")
        assert r["return"]["qemu"] == {"major": 0, "minor": 1, "micro": 0}
        for cmd in ("query-status", "quit"):
            assert error(await c.command(cmd)) == (
                "CommandNotFound", f"The command {cmd} has not been found")
        hmp = await c.command("human-monitor-command", {"command-line": "info policy"})
        assert "max-freezes: 5" in hmp["return"]
        assert error(await c.command("human-monitor-command", {})) == (
            "GenericError", "Parameter 'command-line' is missing")
        await c.close()

    run_console(sock_dir, body)


def test_pe_commands_their_aliases_and_wire_format(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        c = await RawClient.connect(console.platform_path)
        pes = (await c.command("query-pes"))["return"]
        assert pes == FRESH
        assert [list(p) for p in pes] == [list(FRESH[0])] * 3  # the README's key order
        assert (await c.command("__org.eeh-sriov_query-pes"))["return"] == pes

        r = (await c.command("eeh-inject", {"pe": "vf1", "function": "DMA_read-master-abort",
                                            "address": "0x1000", "mask": 0xFFFF}))["return"]
        assert list(r) == ["pe", "kind", "function", "id", "armed"]
        assert (r["pe"], r["kind"], r["function"], r["armed"]) == ("vf1", "errinjct", 14, True)
        armed = plat.call(lambda: [(i.id, i.pe, int(i.function), i.address, i.mask)
                                   for i in plat.adapter.injector.armed])
        assert armed == [(r["id"], VF1, 14, 0x1000, 0xFFFF)]
        assert c.events == []  # armed, not fired: nothing froze

        r = await c.command("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
        assert r == {"return": {"pe": "adapter", "kind": "adapter-fatal", "log-seq": 1}}
        # the events it caused came before the reply
        assert [(e["event"], e["data"]["pe"], e["data"]["state"]) for e in c.events[:3]] == [
            ("EEH_PE_STATE_CHANGED", "adapter", 2), ("EEH_PE_STATE_CHANGED", "vf0", 5),
            ("EEH_PE_STATE_CHANGED", "vf1", 5)]
        log = (await c.command("query-pe-error-log", {"pe": "adapter"}))["return"]
        assert [(e["seq"], e["pe"], e["function"], e["source"], e["detail"]) for e in log] == \
            [(1, ADAPTER, "pf", "adapter-fatal", "console: adapter fatal error")]
        r = await c.command("__org.eeh-sriov_eeh-inject", {"pe": "vf0", "kind": "vf-error"})
        assert r["return"] == {"pe": "vf0", "kind": "vf-error", "log-seq": 2}
        assert [e.data for e in console_entries(plat)] == [
            {"kind": "errinjct", "function": 14}, {"kind": "adapter-fatal", "function": None},
            {"kind": "vf-error", "function": None}]

        r = await c.command("eeh-reset-pe", {"pe": "vf0"})
        assert r == {"return": {"pe": "vf0", "kind": "hot", "status": 0}}
        r = await c.command("__org.eeh-sriov_eeh-reset-pe",
                            {"pe": "adapter", "kind": "fundamental"})
        assert r == {"return": {"pe": "adapter", "kind": "fundamental", "status": 0}}

        assert (await c.command("query-eeh-policy"))["return"] == POLICY
        r = await c.command("eeh-set-policy", {"max-freezes": 5000})
        assert r["return"] == {**POLICY, "max-freezes": 5000}
        r = await c.command("__org.eeh-sriov_eeh-set-policy", {"window-s": 60})
        assert r["return"] == {**POLICY, "max-freezes": 5000, "window-s": 60.0}
        assert (await c.command("__org.eeh-sriov_query-eeh-policy"))["return"] == \
            {**POLICY, "max-freezes": 5000, "window-s": 60.0}
        assert plat.call(lambda: (plat.policy.config.max_freezes,
                                  plat.policy.config.window_s)) == (5000, 60.0)
        await c.close()

    run_console(sock_dir, body)


BAD_ARGUMENTS = [
    ("eeh-inject", {}, "Parameter 'pe' is missing"),
    ("eeh-inject", {"pe": 3, "function": 1}, "Invalid parameter type for 'pe', expected: string"),
    ("eeh-inject", {"pe": "vf0"}, "Parameter 'function' is missing"),
    ("eeh-inject", {"pe": "vf0", "function": 20},
     "Parameter 'function' does not accept value '20'"),
    ("eeh-inject", {"pe": "vf0", "function": -1},
     "Parameter 'function' does not accept value '-1'"),
    ("eeh-inject", {"pe": "vf0", "function": "dma-sideways"},
     "Parameter 'function' does not accept value 'dma-sideways'"),
    ("eeh-inject", {"pe": "vf0", "function": True},
     "Invalid parameter type for 'function', expected: integer or error function name"),
    ("eeh-inject", {"pe": "vf0", "function": 1.5},
     "Invalid parameter type for 'function', expected: integer or error function name"),
    ("eeh-inject", {"pe": "vf0", "kind": "meteor"},
     "Parameter 'kind' does not accept value 'meteor'"),
    ("eeh-inject", {"pe": "vf0", "kind": "vf-error", "function": 3},
     "Parameter 'function' applies to kind 'errinjct' only, not 'vf-error'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": -1},
     "Parameter 'address' does not accept value '-1'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "mask": 1 << 64},
     f"Parameter 'mask' does not accept value '{1 << 64}'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": "0xZZ"},
     "Parameter 'address' does not accept value '0xZZ'"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "address": [1]},
     "Invalid parameter type for 'address', expected: uint64"),
    ("eeh-inject", {"pe": "vf0", "function": 1, "colour": "red"},
     "Parameter 'colour' is unexpected"),
    ("eeh-reset-pe", {"pe": "vf0", "kind": "warm"},
     "Parameter 'kind' does not accept value 'warm'"),
    ("eeh-reset-pe", {"pe": None}, "Invalid parameter type for 'pe', expected: string"),
    ("eeh-reset-pe", {"pe": "vf0", "force": True}, "Parameter 'force' is unexpected"),
    ("query-pe-error-log", {}, "Parameter 'pe' is missing"),
    ("query-pes", {"pe": "vf0"}, "Parameter 'pe' is unexpected"),
    ("query-eeh-policy", {"all": True}, "Parameter 'all' is unexpected"),
    ("eeh-set-policy", {"max-freezes": "5"},
     "Invalid parameter type for 'max-freezes', expected: integer"),
    ("eeh-set-policy", {"max-freezes": -1}, "Parameter 'max-freezes' does not accept value '-1'"),
    ("eeh-set-policy", {"window-s": 0}, "Parameter 'window-s' does not accept value '0'"),
    ("eeh-set-policy", {"window-s": False},
     "Invalid parameter type for 'window-s', expected: number"),
    ("eeh-set-policy", {"max_freezes": 3}, "Parameter 'max_freezes' is unexpected"),
]


def test_bad_arguments_are_refused_before_the_platform_is_asked(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        c = await RawClient.connect(console.platform_path)
        for cmd, args, desc in BAD_ARGUMENTS:
            for name in (cmd, f"__org.eeh-sriov_{cmd}"):
                r = await c.command(name, args, id=name)
                assert error(r) == ("GenericError", desc), (name, args)
                assert r["id"] == name
        assert console_entries(plat) == []
        assert (await c.command("query-pes"))["return"] == FRESH
        assert (await c.command("query-eeh-policy"))["return"] == POLICY
        await c.close()

    run_console(sock_dir, body)


# Valid arguments for each PE command, to which the test adds one it does not take.
VALID = {"query-pes": {}, "eeh-inject": {"pe": "vf0", "kind": "vf-error"},
         "eeh-reset-pe": {"pe": "vf0", "kind": "hot"}, "query-pe-error-log": {"pe": "vf0"},
         "eeh-set-policy": {"max-freezes": 7}, "query-eeh-policy": {},
         "query-eeh-timeline": {"last": 5}}


@pytest.mark.parametrize("name", pe_command_names())
def test_every_pe_command_refuses_an_argument_it_does_not_take(sock_dir: Path,
                                                               name: str) -> None:
    """Refused, and nothing done: no console request reached the platform, no PE moved
    (a reset of vf0 would show as the model's reset events), the policy unchanged."""
    assert set(VALID) == set(PE_NAMES)

    async def body(console: Console, plat: Platform) -> None:
        c = await RawClient.connect(console.platform_path)
        short = name.removeprefix("__org.eeh-sriov_")
        r = await c.command(name, {**VALID[short], "zz": 1})
        assert error(r) == ("GenericError", "Parameter 'zz' is unexpected")
        await asyncio.sleep(0.05)  # a reset would have started by now
        assert console_entries(plat) == []
        assert [e.kind for e in plat.timeline.snapshot() if e.source == "model"] == []
        assert (await c.command("query-pes"))["return"] == FRESH
        assert (await c.command("query-eeh-policy"))["return"] == POLICY
        # the same command without the extra argument is carried out
        assert "return" in await c.command(name, VALID[short])
        await c.close()

    run_console(sock_dir, body)


def test_the_platforms_refusals_and_bugs(sock_dir: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def body(console: Console, plat: Platform) -> None:
        c = await RawClient.connect(console.platform_path)
        refusals = [
            ("eeh-inject", {"pe": "vf7", "kind": "vf-error"},
             "no PE named 'vf7' (PEs: adapter, vf0, vf1)"),
            ("eeh-inject", {"pe": "vf0", "kind": "adapter-fatal"},
             "adapter-fatal is injected on the adapter PE"),
            ("eeh-inject", {"pe": "adapter", "kind": "vf-error"},
             "vf-error is injected on a VF PE"),
            ("eeh-reset-pe", {"pe": "vf0", "kind": "fundamental"},
             "reset of vf0 refused: status -8 (NOT_SUPPORTED) (a fundamental reset is for "
             "an adapter PE; a VF PE takes a hot reset, an FLR)"),
            ("query-pe-error-log", {"pe": "nope"}, "no PE named 'nope' (PEs: adapter, vf0, vf1)"),
        ]
        for cmd, args, desc in refusals:
            assert error(await c.command(cmd, args)) == ("GenericError", desc), cmd
        # the policy's own limit, in its own words (hypervisor_shim.pe.PolicyConfig)
        cls, desc = error(await c.command("eeh-set-policy", {"max-freezes": 2_000_000}))
        assert cls == "GenericError" and desc.startswith("policy max_freezes: "), desc
        assert (await c.command("query-pes"))["return"] == FRESH
        # a bug of the platform is an internal error, and the console goes on

        async def broken() -> None:
            raise RuntimeError("oops")
        monkeypatch.setattr(plat, "query_pes", broken)
        r = await c.command("query-pes")
        assert error(r) == ("GenericError", "internal error in query-pes: RuntimeError: oops")
        monkeypatch.undo()
        assert (await c.command("query-pes"))["return"] == FRESH
        await c.close()

    run_console(sock_dir, body)


def test_platform_events_reach_every_socket(sock_dir: Path) -> None:
    """What the real platform reports, as QMP events, on the platform socket and on a
    guest's: a freeze and its lockout, a driver's step, the lockout lifted, a permanent
    failure."""
    async def body(console: Console, plat: Platform) -> None:
        async with GuestRig(console, sock_dir, name="g1") as g:
            op = await RawClient.connect(console.platform_path)
            guest = await RawClient.connect(g.path)
            await op.command("eeh-inject", {"pe": "adapter", "kind": "adapter-fatal"})
            frozen = [
                {"event": "EEH_PE_STATE_CHANGED", "data": {
                    "pe": "adapter", "state": 2, "flags": ["isolated", "recovering"],
                    "cause": "pe-frozen"}},
                {"event": "EEH_PE_STATE_CHANGED", "data": {
                    "pe": "vf0", "state": 5, "cause": "pe-frozen",
                    "flags": ["isolated", "recovering", "locked-out"]}},
                {"event": "EEH_PE_STATE_CHANGED", "data": {
                    "pe": "vf1", "state": 5, "cause": "pe-frozen",
                    "flags": ["isolated", "recovering", "locked-out"]}},
                {"event": "EEH_RECOVERY_STEP", "data": {
                    "who": "platform", "step": "lockout-start", "pe": "adapter",
                    "detail": {"vf_pes": [VF0, VF1]}}}]
            for c in (op, guest):
                got = [await c.event() for _ in frozen]
                assert [{k: e[k] for k in ("event", "data")} for e in got] == frozen

            svc = Channel.unix(str(plat.hcall_path("svc")), timeout=5)
            try:
                r = await asyncio.to_thread(svc.call, "report", step="slot-reset", pe=ADAPTER)
                assert r.status == 0
                for c in (op, guest):
                    e = await c.event()
                    assert (e["event"], e["data"]["who"], e["data"]["step"], e["data"]["pe"]) \
                        == ("EEH_RECOVERY_STEP", "svc", "slot-reset", "adapter")
                # the adapter reset and back in state 0, its driver lifts vf0's lockout
                await op.command("eeh-reset-pe", {"pe": "adapter"})

                async def adapter_normal() -> bool:
                    pes = (await op.command("query-pes"))["return"]
                    return bool(pes[0]["state"] == 0)
                await until(adapter_normal)
                op.events.clear()
                r = await asyncio.to_thread(svc.call, "open-sriov-allow-unfreeze",
                                            pe=ADAPTER, vf_pes=[VF0])
                assert r.status == 0, r
            finally:
                svc.close()
            lifted = {"event": "EEH_LOCKOUT_LIFTED", "data": {"pe": "vf0", "owner": "g1"}}
            for c in (op, guest):
                events = []
                while lifted["event"] not in [e["event"] for e in events]:
                    events.append(await c.event())
                e = events[-1]
                assert {k: e[k] for k in ("event", "data")} == lifted
            for c in (op, guest):
                await c.close()

    run_console(sock_dir, body)


def test_permanent_failure_event(sock_dir: Path) -> None:
    async def body(console: Console, plat: Platform) -> None:
        op = await RawClient.connect(console.platform_path)
        await op.command("eeh-set-policy", {"max-freezes": 0})  # one freeze is too many
        await op.command("eeh-inject", {"pe": "vf1", "kind": "vf-error"})
        perm = [e for e in op.events if e["event"] == "EEH_PE_PERMANENT_FAILURE"]
        assert [e["data"] for e in perm] == [{"pe": "vf1", "freeze-count": 1}]
        last = [e["data"] for e in op.events if e["event"] == "EEH_PE_STATE_CHANGED"][-1]
        assert last == {"pe": "vf1", "state": 5, "cause": "permanent-failure",
                        "flags": ["isolated", "recovering", "permanent"]}
        await op.close()

    run_console(sock_dir, body)
