"""`python -m eeh_sriov up --traffic` as an operator runs it (issue 19), in real guests:
the README's errinjct example fires (the VF's own DMA reads, driven by the traffic), the
live output shows the traffic-back step, and after Ctrl-C the run directory holds what
`demo` leaves: events.jsonl, timeline.md, summary.json and uplink.pcap, well-formed."""

from __future__ import annotations

import itertools
import json
import signal
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from qemu_launcher.assets import REPO
from tests.support.topologies import svc_and_g1
from tests.support.waiting import wait_for

BOOT_S = 300.0  # hang catchers (TCG guests on a shared machine)
BACK_S = 60.0
END_S = 90.0
PCAP_MAGIC = 0xA1B2C3D4


class Output:
    """The command's output lines, read as they come (a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(proc.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            self.lines.append(line.rstrip("\n"))

    def has(self, *words: str) -> bool:
        return any(all(w in line for w in words) for line in list(self.lines))

    def text(self) -> str:
        return "\n".join(self.lines)


def _interrupt(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C, as a user ends `up`; killed if it does not end within END_S."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(END_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _cli(runs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "eeh_sriov", "--runs", str(runs), *args]


def _up_traffic(runs: Path, name: str, topology: str, accel: str
                ) -> tuple[subprocess.Popen[str], Output]:
    """`up --traffic` on `topology` (written to runs/name), its output read as it comes;
    returns once it says traffic flows (or it ended: the caller's assertion tells)."""
    topo = runs / name
    topo.write_text(topology)
    proc = subprocess.Popen(_cli(runs, "--accel", accel, "up", "--traffic", str(topo)),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = Output(proc)
    try:
        wait_for(lambda: out.has("traffic flows through every VF") or proc.poll() is not None,
                 BOOT_S)
    except BaseException:
        _interrupt(proc)
        raise
    return proc, out


def test_up_traffic_shows_traffic_back_and_leaves_the_artifacts(
        accel: str, run_dir: Callable[..., Path]) -> None:
    runs = run_dir()
    proc, out = _up_traffic(runs, "topology.toml", svc_and_g1(uplink="queue"), accel)
    try:
        assert out.has("traffic flows through every VF"), out.text()
        # the README's example: armed, fired by vf0's own DMA reads (its echoes)
        inject = subprocess.run(_cli(runs, "inject", "vf0", "errinjct", "--function",
                                     "dma-read-master-abort"), cwd=REPO, text=True,
                                capture_output=True, timeout=60)
        assert inject.returncode == 0, inject.stderr
        assert json.loads(inject.stdout)["armed"] is True
        assert wait_for(lambda: out.has("traffic-back", "vf0"), BACK_S), out.text()
        assert out.has("recovered", "vf0", "g1"), out.text()
    finally:
        _interrupt(proc)
    assert proc.returncode == 130, out.text()
    assert out.has("up: wrote timeline.md, summary.json, uplink.pcap"), out.text()
    states = [line.split("] ", 1)[1] for line in out.lines
              if line.startswith("[") and "adapter=" in line]
    assert states and all(a != b for a, b in itertools.pairwise(states)), states

    (d,) = runs.glob("*-up-*")
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    back = [e for e in events if e["source"] == "traffic" and e["kind"] == "traffic-back"]
    assert [e["pe"] for e in back] == ["vf0"], back
    md = (d / "timeline.md").read_text()
    assert "| console: inject vf0 errinjct |" in md and "traffic back through vf0" in md
    assert "```mermaid" in md
    summary = json.loads((d / "summary.json").read_text())
    assert summary["ok"] and summary["kind"] == "up" and summary["traffic"] is True
    assert [(s["step"], s["ok"]) for s in summary["steps"]
            if s["step"] in ("inject", "recovered", "traffic-back")] == [
        ("inject", True), ("recovered", True), ("traffic-back", True)]
    assert summary["injections"][0]["traffic_back_ms"]["vf0"] > 0
    print(f"\nup --traffic: vf0 traffic back {summary['recovery_ms']:.1f} ms after the "
          "errinjct was armed")
    pcap = (d / "uplink.pcap").read_bytes()
    assert struct.unpack("<I", pcap[:4])[0] == PCAP_MAGIC and len(pcap) > 24
    assert summary["uplink_pcap_frames"] > 0


def two_adapters_queue() -> str:
    """The shipped two-adapters.toml with its uplinks as queues (no TAP of its own: other
    runs on this machine may hold eehup0/eehup1) and fast resets."""
    text = (REPO / "eeh_sriov" / "topologies" / "two-adapters.toml").read_text()
    assert text.count('kind = "auto"') == 1 and text.count('timing = "spec"') == 2
    return text.replace('kind = "auto"', 'kind = "queue"').replace(
        'timing = "spec"', 'timing = "fast"')


def test_up_traffic_on_two_adapters_says_traffic_back_for_nic1(
        accel: str, run_dir: Callable[..., Path]) -> None:
    """Of two adapters the host probes every VF of both, each through its own adapter's
    uplink: after an error on nic1 the live output, timeline.md and summary.json have a
    traffic-back step for each of nic1's VFs (it used to probe nic0's VFs only), and
    each uplink has its own capture."""
    runs = run_dir()
    proc, out = _up_traffic(runs, "two-adapters.toml", two_adapters_queue(), accel)
    try:
        assert out.has("traffic flows through every VF (nic0.vf0, nic0.vf1, nic1.vf0, "
                       "nic1.vf1), each through its own adapter's uplink"), out.text()
        inject = subprocess.run(_cli(runs, "inject", "nic1", "adapter-fatal"), cwd=REPO,
                                text=True, capture_output=True, timeout=60)
        assert inject.returncode == 0, inject.stderr
        assert wait_for(lambda: out.has("traffic-back", "nic1.vf0")
                        and out.has("traffic-back", "nic1.vf1"), BACK_S), out.text()
    finally:
        _interrupt(proc)
    assert proc.returncode == 130, out.text()
    assert out.has("up: wrote timeline.md, summary.json, uplink-nic0.pcap, "
                   "uplink-nic1.pcap"), out.text()
    (d,) = runs.glob("*-up-*")
    events = [json.loads(line) for line in (d / "events.jsonl").read_text().splitlines()]
    back = {e["pe"] for e in events if e["source"] == "traffic" and e["kind"] == "traffic-back"}
    assert back == {"nic1.vf0", "nic1.vf1"}, back  # nic0's traffic never stopped
    md = (d / "timeline.md").read_text()
    assert "| console: inject nic1 adapter-fatal |" in md
    assert "traffic back through nic1.vf0" in md and "traffic back through nic1.vf1" in md
    summary = json.loads((d / "summary.json").read_text())
    assert summary["ok"], summary["steps"]
    assert set(summary["injections"][0]["traffic_back_ms"]) == {"nic1.vf0", "nic1.vf1"}
    assert all(summary["vfs"][vf]["uplink_probes"]["echoed"] > 0 for vf in back)
    for a in ("nic0", "nic1"):
        pcap = (d / f"uplink-{a}.pcap").read_bytes()
        assert struct.unpack("<I", pcap[:4])[0] == PCAP_MAGIC and len(pcap) > 24
    assert summary["uplink_pcap_frames"] == sum(summary["uplink_pcaps"].values()) > 0
    print(f"\nup --traffic, two adapters: nic1's VFs back {summary['recovery_ms']:.1f} ms "
          "after its adapter error")
