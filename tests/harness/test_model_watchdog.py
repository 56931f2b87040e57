"""The device model's watchdog (hypervisor_shim.watchdog) on the real platform: a callback
that never returns stalls the model's loop thread (alive, not dead); the watchdog notices
within 1.5 x `watchdog_ms` and the platform fails the model as for a death
(docs/reliability.md): every function's client cut off, every PE permanently failed and
every driver told, `device-model-stalled` in the timeline and on the console, while the
platform channels and the console keep answering on the loop that took the stalled one's
place; stop() still cleans up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from qemu.qmp.legacy import QEMUMonitorProtocol

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from guest_drivers.driver import DriverState
from hypervisor_shim.pe import HOST
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.watchdog import (
    DEFAULT_WATCHDOG_MS,
    MAX_WATCHDOG_MS,
    Watchdog,
    WatchdogError,
    WatchdogState,
)
from tests.harness.console_rig import ConsoleThread
from tests.harness.test_fault_matrix import rig
from tests.unit.drivers.drivers_fakes import wait_for

PF_PE = 0x10000


def test_a_stalled_model_loop_is_detected_and_failed_cleanly(tmp_path: Path) -> None:
    release = threading.Event()
    with rig(tmp_path, traffic=False) as r:
        plat = r.plat
        assert plat.watchdog.limit_ms == DEFAULT_WATCHDOG_MS
        con = ConsoleThread(plat)
        stalled_thread = plat.host.server._thread
        try:
            watcher = QEMUMonitorProtocol(str(con.console.platform_path))
            watcher.connect()
            sockets = dict(plat.host.server.paths)
            probe = Channel.unix(str(plat.hcall_path(HOST)), timeout=5)
            assert probe.call(Call.READ_SLOT_RESET_STATE2, pe=PF_PE).get("state") == 0
            t = time.monotonic()
            # the test hook: a callback on the model's loop that does not return (as an
            # endless loop or a deadlock in a callback would)
            plat.host.loop.call_soon_threadsafe(lambda: release.wait(120))
            assert wait_for(lambda: plat.model_failure is not None, 30), \
                "the stalled loop was never noticed"
            detected = time.monotonic() - t
            assert "ModelStalled" in str(plat.model_failure)
            assert stalled_thread.is_alive() and not release.is_set()  # stalled, not dead
            assert all(not p.exists() for p in sockets.values()), "sockets left behind"
            # every driver learns: permanent failure pushed, or its function gone
            assert wait_for(lambda: all(d.state is DriverState.FAILED
                                        for d in r.agent.drivers.values()), 20), r.dump(t)
            st = plat.pe_states()  # answered on the loop that took over
            assert all(s["state"] == 5 and s["retry_ms"] == 0 and "permanent" in s["flags"]
                       for s in st.values()), st
            kinds = [(e.source, e.kind) for e in r.entries(t)]
            assert ("policy", "device-model-stalled") in kinds, kinds
            stalled = next(e for e in r.entries(t) if e.kind == "device-model-stalled")
            assert "watchdog limit 2000 ms" in stalled.data["error"], stalled
            # the platform channel still answers: an old connection and a new one
            r1 = probe.call(Call.READ_SLOT_RESET_STATE2, pe=PF_PE)
            assert (r1.status, r1.get("state"), r1.get("retry_ms")) == (0, 5, 0)
            assert probe.call(Call.SET_SLOT_RESET, pe=PF_PE, function=1).status == -1
            probe.close()
            with Channel.unix(str(plat.hcall_path(HOST)), timeout=5) as again:
                assert again.call(Call.READ_SLOT_RESET_STATE2, pe=PF_PE).get("state") == 5
            # the console: the state, the event, and refusals
            pes = {p["pe"]: p for p in watcher.cmd("query-pes")}  # type: ignore[attr-defined]
            assert all(p["state"] == 5 for p in pes.values()), pes
            with pytest.raises(Exception, match="device model is down"):
                watcher.cmd("eeh-inject", pe="adapter", kind="adapter-fatal")
            events = watcher.get_events()
            assert any(ev["event"] == "EEH_RECOVERY_STEP"
                       and ev["data"]["step"] == "device-model-stalled" for ev in events)
            watcher.close()
            with pytest.raises(Exception, match="device model is down"):
                plat.inject_adapter_error()
            print(f"\nstall detected after {detected * 1000:.0f} ms "
                  f"(watchdog_ms {plat.watchdog.limit_ms}, bound "
                  f"{plat.watchdog.limit_ms * 1.5:.0f} ms)")
        finally:
            con.close()
    assert not plat.host.sock_dir.exists() and not plat.chan_dir.exists()
    assert plat.host.server._rescue is not None and not plat.host.server._rescue.is_alive()
    release.set()  # the stalled callback returns: its thread ends, serving nothing more
    stalled_thread.join(10)
    assert not stalled_thread.is_alive()


def test_a_busy_loop_within_the_limit_is_not_a_stall(tmp_path: Path) -> None:
    """A loop held for less than the limit (a long but finite callback) is left alone."""
    cfg = PlatformConfig(total_vfs=1, enabled_vfs=1, owners={"pf": HOST}, watchdog_ms=400)
    with Platform(cfg, tmp_path) as plat:
        for _ in range(3):
            plat.call(lambda: time.sleep(0.15))
        assert wait_for(lambda: plat.watchdog.beats > 3, 5)
        assert plat.watchdog.state is WatchdogState.WATCHING
        assert plat.model_failure is None


@pytest.mark.parametrize("bad", [-1, 1, 99, MAX_WATCHDOG_MS + 1, 2.5, True, "2000"])
def test_the_watchdog_limit_is_checked(bad: object) -> None:
    with pytest.raises(WatchdogError, match="watchdog_ms must be"):
        Watchdog(lambda: None, bad, lambda e: None)  # type: ignore[arg-type, return-value]
