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


def _cli(runs: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "eeh_sriov", "--runs", str(runs), *args]


def test_up_traffic_shows_traffic_back_and_leaves_the_artifacts(
        accel: str, run_dir: Callable[..., Path]) -> None:
    runs = run_dir()
    topo = runs / "topology.toml"
    topo.write_text(svc_and_g1(uplink="queue"))
    proc = subprocess.Popen(_cli(runs, "--accel", accel, "up", "--traffic", str(topo)),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    out = Output(proc)
    try:
        assert wait_for(lambda: out.has("traffic flows through every VF")
                        or proc.poll() is not None, BOOT_S)
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
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(END_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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
