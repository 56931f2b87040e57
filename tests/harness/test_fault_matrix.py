"""The fault matrix (issue 13), in harness mode: the real platform (device model,
vfio-user server, PE policy with the lockout, platform-call server, timeline) and the
real drivers (the agent on the host over vfio-user), under the host's uplink traffic
unless a case says otherwise.

Covered elsewhere, not repeated here:
- adapter error under traffic: tests/harness/test_drivers_claim.py (the claim, 8 VFs),
  tests/harness/test_drivers_real_platform.py (order and exact books);
- adapter error while the VFs are mid-unfreeze: tests/harness/test_claim_faults.py
  (test_second_adapter_error_while_vfs_are_mid_recovery, and the VF reset held over it);
- the 6th freeze in an hour: tests/harness/test_claim_faults.py
  (test_sixth_adapter_freeze_in_the_hour_is_permanent_for_every_driver);
- one QEMU killed: tests/vm/test_faults_vm.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from device_model import ResetTiming
from eeh_abi.hcall import Channel, ChannelClosed
from eeh_sriov.traffic import Target, UplinkTraffic
from guest_drivers.agent import Agent
from guest_drivers.driver import DriverState
from guest_drivers.platform.harness import HarnessBackend
from guest_drivers.poll import PollConfig
from hypervisor_shim.pe import HOST, PolicyConfig
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry
from tests.harness.console_rig import ConsoleThread
from tests.unit.drivers.drivers_fakes import wait_for

NVFS = 3
PF_PE = 0x10000


@dataclass
class Rig:
    plat: Platform
    agent: Agent
    traffic: UplinkTraffic | None

    def entries(self, since: float = 0.0) -> list[Entry]:
        return [e for e in self.plat.timeline.snapshot() if e.t > since]

    def recovered_after(self, t: float, names: list[str]) -> bool:
        got = {e.pe for e in self.entries(t) if e.source == "driver" and e.kind == "recovered"}
        return set(names) <= got

    def names(self) -> list[str]:
        return ["adapter", *(f"vf{n}" for n in range(NVFS))]

    def dump(self, since: float) -> str:
        return "\n".join(f"{(e.t - since) * 1000:9.1f} {e.source:7} {e.kind:22} {e.pe} "
                         f"{str(e.data)[:100]}" for e in self.entries(since)
                         if e.source in ("driver", "policy", "shim"))


@contextmanager
def rig(tmp_path: Path, *, traffic: bool = True, timing: ResetTiming = ResetTiming.FAST,
        spare: str | None = None, **policy: object) -> Iterator[Rig]:
    """`spare`: one more VF (vf<NVFS>), owned by that identity and driven by nobody."""
    owners = {"pf": HOST, **{f"vf{n}": HOST for n in range(NVFS)}}
    if spare is not None:
        owners[f"vf{NVFS}"] = spare
    nvfs = NVFS + (spare is not None)
    cfg = PlatformConfig(total_vfs=nvfs, enabled_vfs=nvfs, owners=owners, timing=timing,
                         policy=PolicyConfig(**policy))  # type: ignore[arg-type]
    with Platform(cfg, tmp_path) as plat:
        agent = Agent(HarnessBackend(str(plat.hcall_path(HOST))), vfs=NVFS,
                      poll=PollConfig(max_sleep_s=0.01))
        try:
            agent.start()
            if not traffic:
                yield Rig(plat, agent, None)
                return
            targets = {vf.name: Target(vf.mac, vf.vlan) for vf in agent.vf_drivers()}
            with UplinkTraffic(plat, targets, rate_hz=50) as up:
                assert all(up.wait_echo_after(n, 0.0, 10) for n in targets)
                yield Rig(plat, agent, up)
        finally:
            agent.stop()


def traffic_back_everywhere(r: Rig, since: float) -> None:
    assert r.traffic is not None
    for name in r.traffic.targets:
        assert r.traffic.wait_echo_after(name, since, 10) is not None, f"{name}: no traffic"


def books_balance(r: Rig) -> None:
    for vf in r.agent.vf_drivers():
        c = vf.counters()["tx"]
        assert c["balanced"], (vf.name, c)
    if r.traffic is not None:
        stats = r.traffic.stats()
        assert all(s["duplicates"] == 0 for s in stats.values()), stats


def all_pes_normal(r: Rig) -> None:
    st = r.plat.pe_states()
    assert all(s["state"] == 0 and s["flags"] == [] for s in st.values()), st


# ---------------------------------------------------------------------------- matrix
def test_adapter_error_while_idle(tmp_path: Path) -> None:
    """No traffic at all: every driver learns of the error (the pushed event, or its
    idle health check's all-ones read confirmed by the platform, whichever comes first),
    recovers, and its function passes frames again."""
    with rig(tmp_path, traffic=False) as r:
        t = time.monotonic()
        r.plat.inject_adapter_error("while idle")
        assert wait_for(lambda: r.recovered_after(t, r.names()), 30), r.dump(t)
        triggers = {e.pe: str(e.data.get("trigger")) for e in r.entries(t)
                    if e.source == "driver" and e.kind == "error-detected"}
        assert set(triggers) == set(r.names()), triggers
        assert all(tr == "pe-frozen" or tr.startswith("all-ones") for tr in
                   triggers.values()), triggers
        pushed = {e.pe for e in r.entries(t) if e.source == "policy"
                  and e.kind == "pe-frozen" and e.data.get("to")}
        assert set(r.names()) <= pushed, pushed
        all_pes_normal(r)
        payload = b"idle".ljust(46, b".")
        for vf in r.agent.vf_drivers():
            assert vf.send(bytes.fromhex("02aa00000001") + vf.mac + b"\x88\xb5"  # type: ignore[attr-defined]
                           + payload)
        # each VF's frame leaves through the uplink (nothing else reads it: no traffic)
        out: list[bytes] = []

        def every_vf_frame_out() -> bool:
            out.extend(r.plat.call(r.plat.host.uplink.take))
            sources = {f[6:12] for f in out if f[:6] == bytes.fromhex("02aa00000001")
                       and f[12:14] == b"\x88\xb5" and f[14:14 + len(payload)] == payload}
            return sources == {v.mac for v in r.agent.vf_drivers()}  # type: ignore[attr-defined]
        assert wait_for(every_vf_frame_out, 5), [f[:20].hex() for f in out]
        # counted sent when the driver reaps the completion, just after the frame left
        assert wait_for(lambda: all(v.counters()["tx"]["sent"] >= 1
                                    for v in r.agent.vf_drivers()), 5), \
            [v.counters()["tx"] for v in r.agent.vf_drivers()]
        books_balance(r)


def test_vf_only_error_under_traffic_does_not_escalate(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        assert r.traffic is not None
        t = time.monotonic()
        r.plat.inject_vf_error(1, "VF-only")
        assert wait_for(lambda: r.recovered_after(t, ["vf1"]), 20), r.dump(t)
        # the others kept passing traffic meanwhile; nothing above vf1 moved
        for name in ("vf0", "vf2"):
            assert r.traffic.wait_echo_after(name, t, 5) is not None
        tl = r.entries(t)
        assert not [e for e in tl if e.pe in ("adapter", "vf0", "vf2")
                    and e.source in ("policy", "driver") and e.kind not in ("mailbox",)], \
            r.dump(t)
        assert r.plat.policy.adapter_record.freezes.total == 0
        assert not [e for e in tl if e.kind == "lockout-start"]
        traffic_back_everywhere(r, t)
        books_balance(r)
        all_pes_normal(r)


def test_second_adapter_error_during_the_adapter_reset(tmp_path: Path) -> None:
    """With spec timing the adapter PE's reset takes ~2 s (held 250 ms, settling 1.8 s).
    An adapter error inside that window must not be lost: the reset comes back with the
    PE frozen again (a second, counted freeze), the adapter driver resets once more, and
    every driver recovers."""
    with rig(tmp_path, timing=ResetTiming.SPEC) as r:
        t1 = time.monotonic()
        r.plat.inject_adapter_error("first")
        assert wait_for(lambda: any(e.source == "policy" and e.kind == "reset-hot"
                                    and e.pe == "adapter" for e in r.entries(t1)), 10)
        time.sleep(0.4)  # past the hold: the PE is settling (state 5)
        state = r.plat.pe_states()["adapter"]["state"]
        assert state in (1, 5), state
        t2 = time.monotonic()
        r.plat.inject_adapter_error("second, during the adapter's reset")
        assert wait_for(lambda: r.recovered_after(t2, r.names()), 40), r.dump(t1)
        rec = r.plat.policy.adapter_record
        assert rec.freezes.count == 2
        tl = r.entries(t1)
        kinds = [(e.source, e.kind) for e in tl if e.pe == "adapter"]
        done = kinds.index(("policy", "pe-reset-done"))
        assert ("policy", "pe-frozen") in kinds[done:]  # frozen again after that reset
        # the adapter driver reset it again: the platform did a second hot reset after
        # that reset-done (the driver reports it as a failed attempt, or restarts its
        # round for the new freeze first: either way, a second reset)
        again = [k for k in kinds[done:] if k == ("policy", "reset-hot")]
        assert again, r.dump(t1)
        traffic_back_everywhere(r, t2)
        books_balance(r)
        all_pes_normal(r)


@pytest.mark.parametrize("failures", [1, 2])
def test_a_reset_that_fails_then_works(tmp_path: Path, failures: int) -> None:
    with rig(tmp_path) as r:
        r.plat.fail_resets("adapter", failures)
        t = time.monotonic()
        r.plat.inject_adapter_error()
        assert wait_for(lambda: r.recovered_after(t, r.names()), 30), r.dump(t)
        steps = [(e.kind, e.data.get("kind"), e.data.get("attempt")) for e in r.entries(t)
                 if e.source == "driver" and e.pe == "adapter"
                 and e.kind in ("reset", "reset-failed")]
        kinds = ["hot", "fundamental", "fundamental"]
        assert steps == [("reset-failed", kinds[i], i + 1) for i in range(failures)] + [
            ("reset", kinds[failures], failures + 1)], steps
        assert [e.data["failures"] for e in r.entries(t)
                if e.source == "policy" and e.kind == "reset-failed"] == list(
                    range(1, failures + 1))
        traffic_back_everywhere(r, t)
        books_balance(r)
        all_pes_normal(r)


def test_a_reset_that_fails_three_times_is_a_permanent_failure(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        r.plat.fail_resets("adapter", 3)
        t = time.monotonic()
        r.plat.inject_adapter_error()
        assert wait_for(lambda: all(d.state is DriverState.FAILED
                                    for d in r.agent.drivers.values()), 30), r.dump(t)
        tl = r.entries(t)
        # the driver saw two resets fail; the third made the PE permanently failed (the
        # platform counts failed resets: 3 in a row), which is what the driver then read
        assert len([e for e in tl if e.source == "policy" and e.pe == "adapter"
                    and e.kind == "reset-failed"]) == 3
        assert len([e for e in tl if e.source == "driver" and e.pe == "adapter"
                    and e.kind == "reset-failed"]) == 2
        reported = {e.pe for e in tl if e.source == "driver" and e.kind == "permanent-failure"}
        pushed = {e.pe for e in tl if e.source == "policy" and e.kind == "permanent-failure"}
        assert set(r.names()) <= reported and set(r.names()) <= pushed, (reported, pushed)
        st = r.plat.pe_states()
        assert all(st[n]["state"] == 5 and st[n]["retry_ms"] == 0 for n in r.names()), st
        books_balance(r)


# ---------------------------------------------------------------------------- clients
def qmp_raw(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(path))
    s.settimeout(5)
    s.recv(4096)  # greeting
    s.sendall(b'{"execute": "qmp_capabilities"}')
    s.recv(4096)
    return s


def test_console_client_disconnecting_mid_recovery(tmp_path: Path) -> None:
    with rig(tmp_path) as r:
        con = ConsoleThread(r.plat)
        try:
            watcher = QEMUMonitorProtocol(str(con.console.platform_path))
            watcher.connect()
            # one client injects and leaves before its reply; another leaves while the
            # recovery's events stream to it; a third leaves in the middle of a message
            t = time.monotonic()
            a = qmp_raw(con.console.platform_path)
            a.sendall(b'{"execute": "eeh-inject", "arguments": {"pe": "adapter", '
                      b'"kind": "adapter-fatal"}}')
            a.close()
            b = qmp_raw(con.console.platform_path)
            assert wait_for(lambda: any(e.source == "driver" and e.kind == "reset"
                                        for e in r.entries(t)), 10), r.dump(t)
            b.sendall(b'{"execute": "query-pes"}{"execute": "query-pe-err')
            b.close()
            assert wait_for(lambda: r.recovered_after(t, r.names()), 30), r.dump(t)
            assert wait_for(lambda: con.sessions() == 1, 5)
            pes = {p["pe"]: p for p in watcher.cmd("query-pes")}
            assert all(p["state"] == 0 for p in pes.values()), pes
            assert pes["adapter"]["freeze_count"] == 1  # injected once, by the client gone
            events = [ev["event"] for ev in watcher.get_events()]
            assert "EEH_PE_STATE_CHANGED" in events and "EEH_RECOVERY_STEP" in events
            watcher.close()
            traffic_back_everywhere(r, t)
            books_balance(r)
        finally:
            con.close()


def test_platform_channel_closed_mid_call(tmp_path: Path) -> None:
    """A caller that leaves with calls in flight: the call being answered completes (its
    effect stands, as on the console), its reply is dropped, what the caller sent after it
    is dropped once the server sees it gone, nobody else notices, and the same identity can
    connect again and carry on. A driver waiting on a call whose channel closes under it
    gets ChannelClosed at once, not after its timeout."""
    with rig(tmp_path, spare="g9") as r:
        host = str(r.plat.hcall_path(HOST))
        g9 = str(r.plat.hcall_path("g9"))
        # the raw caller: a held reset, then a flood, then gone without reading a byte
        s = socket.socket(socket.AF_UNIX)
        s.connect(g9)
        vf2 = r.plat.policy.by_name(f"vf{NVFS}")
        assert vf2 is not None
        s.sendall(b'{"v":1,"id":1,"call":"set-slot-reset","args":{"pe":%d,"function":1}}\n'
                  % vf2.address + b'{"v":1,"id":2,"call":"query-functions"}\n' * 2000)
        s.close()
        t = time.monotonic()
        assert wait_for(lambda: r.plat.pe_states()[vf2.name]["state"] == 1, 5)
        calls = [e for e in r.plat.timeline.snapshot() if e.source == "call"
                 and e.kind == "set-slot-reset" and e.pe == vf2.name]
        assert calls and calls[-1].data["status"] == 0
        # the agent's own channel never noticed
        traffic_back_everywhere(r, t)
        # the same identity again: it finds the reset held and releases it
        with Channel.unix(g9, timeout=5) as ch:
            assert ch.call("read-slot-reset-state2", pe=vf2.address).get("state") == 1
            assert ch.call("set-slot-reset", pe=vf2.address, function=0).status == 0
        assert wait_for(lambda: r.plat.pe_states()[vf2.name]["state"] == 0, 5)
        # a driver blocked in a call when its channel closes: ChannelClosed within 1 s
        ch = Channel.unix(host, timeout=30)
        got: list[BaseException] = []

        def call() -> None:
            try:
                ch.call("query-functions")
            except BaseException as e:
                got.append(e)

        hold = threading.Event()
        r.plat.host.loop.call_soon_threadsafe(lambda: hold.wait(1.0))  # the loop is busy
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.1)
        t0 = time.monotonic()
        ch.close()
        th.join(5)
        hold.set()
        assert got and isinstance(got[0], ChannelClosed), got
        assert time.monotonic() - t0 < 1.5
        assert wait_for(lambda: len([e for e in r.plat.timeline.snapshot()
                                     if e.kind == "channel-closed"]) >= 3, 5)
        books_balance(r)
        all_pes_normal(r)


# ---------------------------------------------------------------------------- the model
def test_the_device_model_thread_dying_fails_cleanly(tmp_path: Path) -> None:
    """Something run on the model's loop kills its thread (an exception asyncio does not
    catch). The platform fails cleanly, as docs/reliability.md ("When the device model
    dies") says: every
    function's socket closes at once (a client sees the device gone immediately: QEMU
    then reads all-ones without its 5 s timeout per access), every PE is permanently
    failed and every driver told, the timeline and the console say so, the channels and
    the console still answer, injections are refused, and stop() cleans up."""
    with rig(tmp_path) as r:
        plat = r.plat
        con = ConsoleThread(plat)
        try:
            watcher = QEMUMonitorProtocol(str(con.console.platform_path))
            watcher.connect()
            sockets = dict(plat.host.server.paths)
            probe = Channel.unix(str(plat.hcall_path(HOST)), timeout=5)
            t = time.monotonic()

            def die() -> None:
                raise SystemExit("injected: the device model's thread dies")

            plat.host.loop.call_soon_threadsafe(die)
            assert wait_for(lambda: plat.model_failure is not None, 5)
            assert "SystemExit" in str(plat.model_failure)
            assert all(not p.exists() for p in sockets.values()), "sockets left behind"
            # every driver learns at once: permanent failure (or its function gone)
            assert wait_for(lambda: all(d.state is DriverState.FAILED
                                        for d in r.agent.drivers.values()), 10), r.dump(t)
            assert time.monotonic() - t < 5
            st = plat.pe_states()
            assert all(s["state"] == 5 and s["retry_ms"] == 0 and "permanent" in s["flags"]
                       for s in st.values()), st
            kinds = [(e.source, e.kind) for e in r.entries(t)]
            assert ("policy", "device-model-died") in kinds
            # the channel still answers, with the PE's permanent failure
            r1 = probe.call("read-slot-reset-state2", pe=PF_PE)
            assert (r1.status, r1.get("state"), r1.get("retry_ms")) == (0, 5, 0)
            assert probe.call("set-slot-reset", pe=PF_PE, function=1).status == -1
            probe.close()
            # the console: events, the state, and refusals
            pes = {p["pe"]: p for p in watcher.cmd("query-pes")}
            assert all(p["state"] == 5 for p in pes.values()), pes
            with pytest.raises(Exception, match="device model is down"):
                watcher.cmd("eeh-inject", pe="adapter", kind="adapter-fatal")
            events = watcher.get_events()
            assert any(ev["event"] == "EEH_RECOVERY_STEP"
                       and ev["data"]["step"] == "device-model-died" for ev in events)
            assert any(ev["event"] == "EEH_PE_PERMANENT_FAILURE" for ev in events)
            watcher.close()
            with pytest.raises(Exception, match="device model is down"):
                plat.inject_adapter_error()
            books_balance(r)
        finally:
            con.close()
    assert not plat.host.sock_dir.exists() and not plat.chan_dir.exists()
    assert not plat.host.server._thread.is_alive()


def test_a_guest_gone_its_vfs_are_taken_back(tmp_path: Path) -> None:
    """What System does when a guest's QEMU dies (tests/vm/test_faults_vm.py does it with
    a real QEMU), at the platform's level: the dead guest's VF is reset (its rings and
    pending descriptors gone: nothing of the dead guest is DMAed later) and from then on
    recovered by the platform; the other drivers never notice."""
    from vfio_user import Client, GuestRam

    with rig(tmp_path, spare="g9") as r:
        plat = r.plat
        name = f"vf{NVFS}"
        with GuestRam(1 << 20) as ram, Client.open(plat.host.server.paths[name]) as c:
            c.map_ram(ram)
            c.region_write(7, 4, (6).to_bytes(2, "little"))  # memory + bus master
            for off, value in ((0x100, 0x1000), (0x108, 8), (0x110, 3)):  # TX ring, 3 held
                c.region_write(0, off, value.to_bytes(4, "little"))
            assert plat.call(lambda: plat.adapter.function(name).nic.tx_pending) == 3
        # its "QEMU" is gone (the connection closed above); the shim takes the VF back
        t = time.monotonic()
        assert plat.guest_gone("g9") == [name]
        fn = plat.adapter.function(name)
        assert plat.call(lambda: (fn.nic.tx_pending, fn.bar0.stored("TX_LEN"))) == (0, 0)
        assert plat.pe_states()[name]["state"] == 0
        # an adapter error: every driver recovers, and so does the orphan VF (platform)
        r.plat.inject_adapter_error()
        assert wait_for(lambda: r.recovered_after(t, r.names()), 30), r.dump(t)
        assert wait_for(lambda: plat.pe_states()[name]["state"] == 0, 10), plat.pe_states()
        kinds = [e.kind for e in r.entries(t) if e.pe == name and e.source == "policy"]
        assert "owner-gone" in kinds and "platform-reset" in kinds, kinds
        traffic_back_everywhere(r, t)
        books_balance(r)
        all_pes_normal(r)
