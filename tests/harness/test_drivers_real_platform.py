"""The drivers against the real platform (hypervisor_shim.platform: device model, vfio-user
server, PE policy with the lockout, platform-call server, timeline), in harness mode: the
agent on the host reaches every function over vfio-user and the platform over its
`host` channel. Bring-up and traffic (VLAN, jumbo frames, VF to VF), recovery under
traffic, permanent failure, drivers without handlers, the harness command line, 64 idle
drivers. The order of recovery is read from the platform's own timeline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from eeh_abi import nic
from eeh_abi.hcall import Event
from eeh_abi.schema import Call
from eeh_abi.vf_settings import VfSettings
from guest_drivers.agent import Agent, TrafficLoop
from guest_drivers.driver import DriverState
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry
from tests.support.channels import TapChannel
from tests.support.frames import payload
from tests.support.platform_rig import frame, holding_backend, host_config, running
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
UPLINK_MAC = bytes.fromhex("02aa00000001")
POLL = PollConfig(max_sleep_s=0.01)
NVFS = 8


def config(**kw: object) -> PlatformConfig:
    owners = {"pf": HOST, **{f"vf{n}": HOST for n in range(NVFS)}}
    settings = {1: VfSettings("02:ee:00:00:01:01", 100, 1500, True),
                2: VfSettings("02:ee:00:00:01:02", None, 9000, False)}
    return PlatformConfig(total_vfs=NVFS, enabled_vfs=NVFS, owners=owners,
                          vf_settings=settings, **kw)  # type: ignore[arg-type]


@pytest.fixture
def plat(tmp_path: Path) -> Iterator[Platform]:
    with Platform(config(), tmp_path) as p:
        yield p


def agent_for(p: Platform, **kw: object) -> Agent:
    return Agent(HarnessBackend(str(p.hcall_path(HOST))), poll=POLL, **kw)  # type: ignore[arg-type]


def tx_sent(p: Platform, name: str) -> int:
    """Frames function `name` sent, by the device model's books (on its loop thread)."""
    return p.adapter.function(name).nic.ledger.tx_sent


def index(entries: list[Entry], source: str, kind: str, pe: str) -> int:
    for i, e in enumerate(entries):
        if (e.source, e.kind, e.pe) == (source, kind, pe):
            return i
    raise AssertionError(f"no {source} {kind} for {pe}")


def test_adapter_error_under_traffic_every_driver_recovers_in_order(plat: Platform) -> None:
    # every VF driver meets the lockout before the adapter driver lifts it (on the host
    # the adapter driver may otherwise finish first)
    agent = Agent(holding_backend(plat, [f"vf{n}" for n in range(NVFS)]), poll=POLL)
    try:
        assert agent.start() == ["pf"] + [f"vf{n}" for n in range(NVFS)]
        traffic = TrafficLoop(agent, pps=50)
        traffic.start()
        time.sleep(0.3)
        plat.inject_adapter_error()
        assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered >= 1
                                    for d in agent.drivers.values()), 30), \
            {n: d.state.value for n, d in agent.drivers.items()}
        time.sleep(0.3)
        traffic.stop()
        vfs = agent.vf_drivers()
        for vf in vfs:
            assert vf.wait_tx_done(10), vf.counters()
        tl = list(plat.timeline.entries)
        # the adapter driver: reset, reconfigure, adapter recovered, then allow-unfreeze
        pf_order = [("driver", "error-detected"), ("driver", "reset"), ("driver", "configure"),
                    ("driver", "adapter-recovered"), ("policy", "allow-unfreeze"),
                    ("driver", "allow-unfreeze"), ("driver", "recovered")]
        pos = [index(tl, s, k, "adapter") for s, k in pf_order]
        assert pos == sorted(pos), list(zip(pf_order, pos, strict=True))
        allow = index(tl, "policy", "allow-unfreeze", "adapter")
        for vf in vfs:
            name = vf.name
            # frozen with the adapter: straight to the VF's reset, after the lockout
            vf_order = [("driver", "error-detected"), ("policy", "unfreeze-refused"),
                        ("policy", "lockout-lifted"), ("policy", "reset-hot"),
                        ("policy", "pe-thawed"), ("driver", "reset"),
                        ("driver", "pf-reset-done"), ("driver", "config-restored"),
                        ("driver", "resume"), ("driver", "recovered")]
            pos = [index(tl, s, k, name) for s, k in vf_order]
            assert pos == sorted(pos), (name, list(zip(vf_order, pos, strict=True)))
            assert index(tl, "policy", "reset-hot", name) > allow
            woken = [e.data.get("by") for e in tl
                     if (e.source, e.kind, e.pe) == ("driver", "lockout-lifted", name)]
            assert woken and set(woken) == {"event"}, (name, woken)
        # every driver report carries the guest's clock
        assert all(e.guest_time is not None for e in tl if e.source == "driver")
        # exact books: each frame once on the wire, the drivers' and the model's counts agree
        seen = Counter(payload(f) for f in plat.call(plat.host.uplink.take))
        assert all(n == 1 for n in seen.values())
        for vf in vfs:
            c = vf.counters()["tx"]
            assert c["balanced"] and c["dropped"] == 0 and c["errors"] == 0, (vf.name, c)
            assert plat.call(partial(tx_sent, plat, vf.name)) == c["sent"]
        assert sum(seen.values()) == sum(v.tx.sent for v in vfs) == traffic.sent
        assert traffic.refused == 0
        states = plat.pe_states()
        assert all(s["state"] == 0 and s["flags"] == [] for s in states.values()), states
        # and traffic passes again, through every VF
        for vf in vfs:
            vf.send(frame(vf.mac, tag=f"{vf.name}-after"))
        for vf in vfs:
            assert vf.wait_tx_done(5)
        assert {payload(f) for f in plat.call(plat.host.uplink.take)} == \
            {f"{vf.name}-after" for vf in vfs}
    finally:
        agent.stop()


def test_vf_error_recovers_that_vf_alone(plat: Platform) -> None:
    agent = agent_for(plat, vfs=2)
    try:
        agent.start()
        vf0 = agent.drivers["vf0"]
        plat.inject_vf_error(0)
        assert wait_for(lambda: vf0.recovery is not None and vf0.recovery.recovered == 1, 15)
        tl = list(plat.timeline.entries)
        steps = [e.kind for e in tl if e.source == "driver" and e.pe == "vf0"]
        want = ["error-detected", "mmio-thawed", "rings-rearmed", "mmio-enabled", "dma-thawed",
                "replay", "resume", "recovered"]
        assert [s for s in steps if s in want] == want
        assert not [e for e in tl if e.source == "driver" and e.pe == "adapter"
                    and e.kind == "error-detected"]
        assert agent.drivers["vf1"].recovery.rounds == 0  # type: ignore[union-attr]
        vf0.send(UPLINK_MAC + vf0.mac + b"\x88\xb5" + b"after".ljust(46, b"."))  # type: ignore[attr-defined]
        assert wait_for(lambda: [payload(f) for f in plat.call(plat.host.uplink.take)]
                        == ["after"], 5)
    finally:
        agent.stop()


def test_permanent_failure_disconnects_the_vf_driver(tmp_path: Path) -> None:
    with Platform(config(policy=PolicyConfig(max_freezes=0)), tmp_path) as p:
        agent = agent_for(p, vfs=1)
        try:
            agent.start()
            vf0 = agent.drivers["vf0"]
            p.inject_vf_error(0)
            assert wait_for(lambda: vf0.state is DriverState.FAILED, 15)
            kinds = [e.kind for e in p.timeline.entries
                     if e.source == "driver" and e.pe == "vf0"]
            assert kinds[-1] == "permanent-failure"
            assert vf0.counters()["tx"]["balanced"]
            assert agent.drivers["pf"].state is DriverState.UP
        finally:
            agent.stop()


def test_harness_cli_against_the_platform(plat: Platform) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "guest_drivers.harness", "--hcall", str(plat.hcall_path(HOST)),
         "--vfs", "3", "--traffic", "20", "--duration", "1.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "drivers ready: pf vf0 vf1 vf2" in lines
    assert "drivers stopped" in lines
    summary = next(line for line in lines if line.startswith("summary: "))
    assert '"traffic": {' in summary
    assert plat.call(plat.host.uplink.take), "the traffic loop sent nothing"
    probes = [e for e in plat.timeline.entries if e.source == "driver" and e.kind == "probe"]
    assert sorted(str(e.pe) for e in probes) == ["adapter", "vf0", "vf1", "vf2"]


def test_agent_runs_until_sigterm_and_prints_its_summary(plat: Platform) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-m", "guest_drivers.harness", "--hcall", str(plat.hcall_path(HOST)),
         "--vfs", "1"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and not line.startswith("drivers ready"):
            line = proc.stdout.readline()
        assert line.strip() == "drivers ready: pf vf0"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "drivers stopped" in out.splitlines()
    summary = json.loads(next(ln for ln in out.splitlines()
                              if ln.startswith("summary: "))[len("summary: "):])
    assert set(summary["drivers"]) == {"pf", "vf0"}
    assert summary["drivers"]["vf0"]["tx"]["balanced"]


@pytest.mark.parametrize("error", ["vf", "adapter"])
def test_vf_drivers_without_handlers_are_removed_and_added_back(plat: Platform,
                                                                error: str) -> None:
    agent = agent_for(plat, handlers=False, vfs=2)
    try:
        assert agent.start() == ["pf", "vf0", "vf1"]
        vf0 = agent.drivers["vf0"]
        if error == "vf":
            plat.inject_vf_error(0)
            gone = ["vf0"]
        else:
            plat.inject_adapter_error()
            gone = ["vf0", "vf1"]
        def probed_twice(name: str) -> bool:  # by the driver, and on the platform's books
            return agent.drivers[name].probes == 2 and agent.drivers[name].state is \
                DriverState.UP and sum(1 for e in plat.timeline.snapshot() if (
                    e.source, e.kind, e.pe) == ("driver", "probe", name)) == 2
        assert wait_for(lambda: all(probed_twice(n) for n in gone), 20), agent.hotplug_log
        # the agent logs a hot-plug after handling it: wait for both of each function
        assert wait_for(lambda: len(agent.hotplug_log) >= 2 * len(gone), 10)
        for name in gone:
            assert [h[1:4] for h in agent.hotplug_log if h[2] == name] == [
                ("removed", name, "detached"), ("added", name, "probed")], agent.hotplug_log
        tl = list(plat.timeline.entries)
        for name in gone:
            order = [("policy", "function-removed"), ("policy", "platform-reset"),
                     ("policy", "function-added")]
            pos = [index(tl, s, k, name) for s, k in order]
            assert pos == sorted(pos), (name, list(zip(order, pos, strict=True)))
            # the platform does not wait for the driver's detach before its reset (after
            # a VF-only error it resets at once); the driver detaches, then probes again
            detach = index(tl, "driver", "detach", name)
            probes = [i for i, e in enumerate(tl) if (e.source, e.kind, e.pe)
                      == ("driver", "probe", name)]
            assert len(probes) == 2 and pos[0] < detach < probes[1] and probes[1] > pos[-1]
            assert not [e for e in tl if e.source == "driver" and e.pe == name
                        and e.kind == "error-detected"]  # no handlers: no recovery steps
        if error == "adapter":
            # the VFs came back only after the adapter driver recovered the adapter
            assert index(tl, "policy", "allow-unfreeze", "adapter") < \
                index(tl, "policy", "platform-reset", "vf0")
        vf0.send(UPLINK_MAC + vf0.mac + b"\x88\xb5" + b"back".ljust(46, b"."))  # type: ignore[attr-defined]
        assert wait_for(lambda: "back" in [payload(f) for f in
                                           plat.call(plat.host.uplink.take)], 5)
        assert all(d.counters()["tx"]["balanced"] for d in agent.vf_drivers())
    finally:
        agent.stop()


def test_pf_and_eight_vfs_come_up_and_pass_traffic(plat: Platform) -> None:
    agent = agent_for(plat)
    try:
        names = agent.start()
        assert names == ["pf"] + [f"vf{n}" for n in range(8)]
        vfs = agent.vf_drivers()
        vf0, vf1, vf2 = vfs[0], vfs[1], vfs[2]
        assert vf2.mtu == 9000 and vf2.buf_size >= 9018  # from the platform's VF config
        assert plat.call(lambda: plat.adapter.vf(2).bar0.stored("MTU")) == 9000
        for vf in vfs:
            assert vf.send(frame(vf.mac, tag=f"{vf.name}-up"))
        for vf in vfs:
            assert vf.wait_tx_done(5)
        uplink = plat.host.uplink
        assert sorted(payload(f) for f in plat.call(uplink.take)) == \
            sorted(f"{v.name}-up" for v in vfs)
        # uplink -> VF (untagged), and into VLAN 100 for vf1
        plat.call(lambda: uplink.inject(frame(UPLINK_MAC, vf0.mac, "to-vf0")))
        tagged = vf1.mac + UPLINK_MAC + b"\x81\x00" + (100).to_bytes(2, "big") + b"\x88\xb5" \
            + b"to-vf1".ljust(46, b".")
        plat.call(lambda: uplink.inject(tagged))
        assert [payload(f) for f in vf0.recv(timeout=5)] == ["to-vf0"]
        assert [payload(f) for f in vf1.recv(timeout=5)] == ["to-vf1"]
        # VF to VF inside the adapter
        vf0.send(frame(vf0.mac, vfs[3].mac, "v2v"))
        assert [payload(f) for f in vfs[3].recv(timeout=5)] == ["v2v"]
        # a jumbo frame through vf2 (MTU 9000)
        big = UPLINK_MAC + vf2.mac + b"\x88\xb5" + bytes(9000)
        assert vf2.send(big) and vf2.wait_tx_done(5)
        assert [len(f) for f in plat.call(uplink.take)] == [len(big)]
        for vf in vfs:
            assert vf.ledger_balanced()
    finally:
        agent.stop()


def test_sixty_four_vf_drivers_in_one_process_sleep_when_idle() -> None:
    with running(host_config(nvfs=64)) as rig:
        poll = PollConfig()  # the agent's defaults
        agent = rig.agent(poll=poll)
        t0 = time.monotonic()
        names = agent.start()
        up = time.monotonic() - t0
        assert len(names) == 65
        vfs = agent.vf_drivers()
        for vf in vfs:
            vf.send(frame(vf.mac, tag=vf.name))
        for vf in vfs:
            assert vf.wait_tx_done(10)
        assert len(rig.uplink()) == 64
        time.sleep(0.5)
        wall0, cpu0 = time.monotonic(), time.process_time()
        time.sleep(3.0)
        cpu = time.process_time() - cpu0
        wall = time.monotonic() - wall0
        print(f"\n65 drivers up in {up:.1f} s; idle CPU of the process (drivers + device "
              f"model + platform, poll max sleep {poll.max_sleep_s * 1000:.0f} ms, "
              f"health 1/s): {cpu / wall * 100:.1f}% of one CPU")
        assert cpu / wall < 0.6
        assert nic.MAX_VFS == 64


def test_a_freeze_pushed_while_a_recovery_finishes_starts_a_new_one(plat: Platform) -> None:
    """A VF error, recovered; its PE freezes again just after the driver's last check of
    that round (at its "resume" report) and the pe-frozen event reaches the driver before
    the round returns. The driver must start a new recovery for that event, at once."""
    vf0 = 0x18000
    fired: list[float] = []

    def tap(t: TapChannel) -> None:
        inner = t.inner

        def again_at_resume(call: str, args: dict[str, object]) -> None:
            if call != Call.REPORT or (args.get("step"), args.get("pe")) != ("resume", vf0) \
                    or fired:
                return
            seen = threading.Event()

            def marker(ev: Event) -> None:  # subscribed last: after the driver's handler
                if (ev.name, ev.pe) == ("pe-frozen", vf0):
                    seen.set()
            inner.subscribe(marker)
            fired.append(time.monotonic())
            plat.inject_vf_error(0, "again, as the recovery finishes")
            assert seen.wait(10)
            inner.unsubscribe(marker)
        t.before.append(again_at_resume)

    backend = HarnessBackend(str(plat.hcall_path(HOST)))
    channel = TapChannel(backend.channel)
    tap(channel)
    backend.channel = channel  # type: ignore[assignment]
    agent = Agent(backend, poll=POLL, vfs=1)
    try:
        agent.start()
        vf = agent.drivers["vf0"]
        plat.inject_vf_error(0, "first")
        assert wait_for(lambda: bool(fired), 10)
        # the second recovery starts for the pushed event, well before a health check
        assert wait_for(lambda: vf.recovery is not None and vf.recovery.recovered == 2, 10)
        detected = [e for e in plat.timeline.snapshot() if (e.source, e.kind, e.pe) == (
            "driver", "error-detected", "vf0")]
        # the first round may start from the pushed event or from a health check's
        # all-ones read, whichever the driver meets first; the second, from the event
        assert len(detected) == 2 and detected[1].data.get("trigger") == "pe-frozen", \
            [(round(e.t - fired[0], 3), e.data.get("trigger")) for e in detected]
        assert detected[1].t - fired[0] < 0.5
    finally:
        agent.stop()
