"""The drivers in harness mode: the real device model behind the real vfio-user server,
the drivers reaching it with the vfio-user client (guest_drivers.platform.harness), and a
small platform (tests/unit/drivers/drivers_fakes.ModelPlatform) speaking the platform calls
over a unix socket. To be switched to hypervisor_shim's platform when it lands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from eeh_abi import nic
from guest_drivers.agent import Agent, TrafficLoop
from guest_drivers.driver import DriverState
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from guest_drivers.vf import VfDriver
from hypervisor_shim.adapter_host import AdapterHost, AdapterHostConfig
from tests.support.frames import payload
from tests.unit.drivers.drivers_fakes import (
    HOST,
    HcallSocketServer,
    ModelPlatform,
    short_tmp,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
UPLINK_MAC = bytes.fromhex("02aa00000001")
POLL = PollConfig(max_sleep_s=0.01)
VF_SETTINGS = {1: {"mac": "02:ee:00:00:01:01", "vlan": 100, "mtu": 1500, "anti_spoof": True},
               2: {"mac": "02:ee:00:00:01:02", "vlan": None, "mtu": 9000,
                   "anti_spoof": False}}


@dataclass
class Rig:
    host: AdapterHost
    plat: ModelPlatform
    server: HcallSocketServer

    @property
    def hcall(self) -> str:
        return str(self.server.paths[HOST])

    def agent(self, poll: PollConfig = POLL, **kw: object) -> Agent:
        backend = HarnessBackend(self.hcall)
        return Agent(backend, poll=poll, **kw)  # type: ignore[arg-type]

    def uplink(self) -> list[bytes]:
        return self.host.call(self.host.uplink.take)


def make_rig(total: int, enabled: int) -> Iterator[Rig]:
    sock_dir = short_tmp("hc")
    try:
        with AdapterHost(AdapterHostConfig(total_vfs=total, enabled_vfs=enabled,
                                           host_cpus=())) as host:
            plat = ModelPlatform(host.adapter, host.call, sockets=host.server.paths,
                                 vf_settings={k: v for k, v in VF_SETTINGS.items()
                                              if k < enabled})
            server = HcallSocketServer(plat, sock_dir)
            try:
                yield Rig(host, plat, server)
            finally:
                server.close()
    finally:
        shutil.rmtree(sock_dir, ignore_errors=True)


@pytest.fixture
def rig() -> Iterator[Rig]:
    yield from make_rig(8, 8)


def frame(src: bytes, dst: bytes = UPLINK_MAC, tag: str = "x") -> bytes:
    return dst + src + b"\x88\xb5" + tag.encode().ljust(46, b".")


def test_pf_and_eight_vfs_come_up_and_pass_traffic(rig: Rig) -> None:
    agent = rig.agent()
    try:
        names = agent.start()
        assert names == ["pf"] + [f"vf{n}" for n in range(8)]
        vfs = agent.vf_drivers()
        vf0, vf1, vf2 = vfs[0], vfs[1], vfs[2]
        assert vf2.mtu == 9000 and vf2.buf_size >= 9018  # from the platform's VF config
        assert rig.host.call(lambda: rig.host.adapter.vf(2).bar0.stored("MTU")) == 9000
        for vf in vfs:
            assert vf.send(frame(vf.mac, tag=f"{vf.name}-up"))
        for vf in vfs:
            assert vf.wait_tx_done(5)
        assert sorted(payload(f) for f in rig.uplink()) == sorted(f"{v.name}-up" for v in vfs)
        # uplink -> VF (untagged), and into VLAN 100 for vf1
        rig.host.call(lambda: rig.host.uplink.inject(frame(UPLINK_MAC, vf0.mac, "to-vf0")))
        tagged = vf1.mac + UPLINK_MAC + b"\x81\x00" + (100).to_bytes(2, "big") + b"\x88\xb5" \
            + b"to-vf1".ljust(46, b".")
        rig.host.call(lambda: rig.host.uplink.inject(tagged))
        assert [payload(f) for f in vf0.recv(timeout=5)] == ["to-vf0"]
        assert [payload(f) for f in vf1.recv(timeout=5)] == ["to-vf1"]
        # VF to VF inside the adapter
        vf0.send(frame(vf0.mac, vfs[3].mac, "v2v"))
        assert [payload(f) for f in vfs[3].recv(timeout=5)] == ["v2v"]
        # a jumbo frame through vf2 (MTU 9000)
        big = UPLINK_MAC + vf2.mac + b"\x88\xb5" + bytes(9000)
        assert vf2.send(big) and vf2.wait_tx_done(5)
        assert [len(f) for f in rig.uplink()] == [len(big)]
        for vf in vfs:
            assert vf.ledger_balanced()
    finally:
        agent.stop()


def test_adapter_error_under_traffic_recovers_every_driver_in_order(rig: Rig) -> None:
    agent = rig.agent()
    try:
        agent.start()
        traffic = TrafficLoop(agent, pps=100)
        traffic.start()
        time.sleep(0.3)
        rig.host.call(lambda: rig.host.adapter.inject_adapter_fatal("test: adapter error"))
        time.sleep(0.2)
        assert wait_for(lambda: all(d.recovery is not None and d.recovery.recovered >= 1
                                    for d in agent.drivers.values()), 30), \
            {n: d.state.value for n, d in agent.drivers.items()}
        time.sleep(0.3)
        traffic.stop()
        vfs = agent.vf_drivers()
        for vf in vfs:
            assert vf.wait_tx_done(10), vf.counters()
        reports = [(a["step"], a.get("pe")) for _, _, a in rig.plat.reports]
        pf_pe = 0x10000
        pf_steps = [s for s, pe in reports if pe == pf_pe]
        want_pf = ["error-log", "error-detected", "reset", "configure", "adapter-recovered",
                   "slot-reset", "allow-unfreeze", "resume", "recovered"]
        assert [s for s in pf_steps if s in want_pf] == want_pf
        # the platform's order (the reports of two drivers may cross on the way)
        handled = [(c, a.get("pe"), a.get("option"), st) for _, c, a, st in rig.plat.handled]
        allow = handled.index(("open-sriov-allow-unfreeze", pf_pe, None, 0))
        for vf in vfs:
            pe = vf.pe
            # frozen with the adapter: straight to the VF's reset, after the lockout
            assert handled.index(("set-slot-reset", pe, None, 0)) > allow, vf.name
            steps = [s for s, p in reports if p == pe]
            assert "mmio-thawed" not in steps, steps
            assert steps.index("error-detected") < steps.index("unfreeze-refused") \
                < steps.index("lockout-lifted") < steps.index("reset") \
                < steps.index("pf-reset-done") < steps.index("config-restored") \
                < steps.index("resume") < steps.index("recovered"), steps
            by = {d["by"] for d in rig.plat.report_details("lockout-lifted", pe)}
            assert by <= {"event"}, (vf.name, by)
        # exact books: every frame sent once (no loss, no duplicate), matching the model
        seen = Counter(payload(f) for f in rig.uplink())
        assert all(n == 1 for n in seen.values()), [k for k, n in seen.items() if n > 1]
        total_sent = 0
        for vf in vfs:
            c = vf.counters()["tx"]
            assert c["balanced"] and c["dropped"] == 0 and c["errors"] == 0, (vf.name, c)
            total_sent += c["sent"]
            model_sent = rig.host.call(lambda vf=vf: rig.host.adapter.function(
                vf.name).nic.ledger.tx_sent)
            assert model_sent == c["sent"], vf.name
        assert sum(seen.values()) == total_sent == traffic.sent
        assert traffic.refused == 0
        # and traffic passes again
        for vf in vfs:
            vf.send(frame(vf.mac, tag=f"{vf.name}-after"))
        for vf in vfs:
            assert vf.wait_tx_done(5)
        after = {payload(f) for f in rig.uplink()}
        assert after == {f"{vf.name}-after" for vf in vfs}
    finally:
        agent.stop()


def test_vf_without_handlers_is_detached_and_probed_again_over_vfio_user(rig: Rig) -> None:
    agent = rig.agent(handlers=False, vfs=2)
    try:
        assert agent.start() == ["pf", "vf0", "vf1"]
        vf = agent.drivers["vf0"]
        assert isinstance(vf, VfDriver)
        rig.host.call(lambda: rig.host.adapter.inject_vf_error(0))
        # the probe count moves before the agent logs the hot-plug it handled: wait for both
        assert wait_for(lambda: vf.probes == 2 and vf.state is DriverState.UP
                        and len(agent.hotplug_log) >= 2, 15), agent.hotplug_log
        assert [h[1:4] for h in agent.hotplug_log] == [("removed", "vf0", "detached"),
                                                       ("added", "vf0", "probed")]
        vf.send(frame(vf.mac, tag="back"))
        assert vf.wait_tx_done(5)
        assert [payload(f) for f in rig.uplink()] == ["back"]
        steps = rig.plat.steps(vf.pe)
        assert steps == ["probe", "detach", "probe"]
    finally:
        agent.stop()


def test_harness_command_line_runs_the_agent_until_its_duration(rig: Rig) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "guest_drivers.harness", "--hcall", rig.hcall, "--vfs", "2",
         "--traffic", "20", "--duration", "1.5"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "drivers ready: pf vf0 vf1" in lines
    assert "drivers stopped" in lines
    summary = next(line for line in lines if line.startswith("summary: "))
    assert '"traffic": {' in summary
    assert rig.uplink(), "the traffic loop sent nothing"


def test_sixty_four_vf_drivers_in_one_process_sleep_when_idle() -> None:
    for r in make_rig(64, 64):
        poll = PollConfig()  # the agent's defaults
        agent = r.agent(poll)
        try:
            t0 = time.monotonic()
            names = agent.start()
            up = time.monotonic() - t0
            assert len(names) == 65
            vfs = agent.vf_drivers()
            for vf in vfs:
                vf.send(frame(vf.mac, tag=vf.name))
            for vf in vfs:
                assert vf.wait_tx_done(10)
            assert len(r.uplink()) == 64
            time.sleep(0.5)
            wall0, cpu0 = time.monotonic(), time.process_time()
            time.sleep(3.0)
            cpu = time.process_time() - cpu0
            wall = time.monotonic() - wall0
            print(f"\n65 drivers up in {up:.1f} s; idle CPU of the process (drivers + "
                  f"device model + server, poll max sleep {poll.max_sleep_s * 1000:.0f} ms, "
                  f"health 1/s): {cpu / wall * 100:.1f}% of one CPU")
            assert cpu / wall < 0.6
            assert nic.MAX_VFS == 64
        finally:
            agent.stop()
