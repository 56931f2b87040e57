"""The agent's --cpu-every and --profile (guest_drivers.profiling): the lines carry each
thread's CPU time, and the profile covers threads started after install()."""

from __future__ import annotations

import json
import pstats
import threading
from pathlib import Path

from guest_drivers.profiling import CpuLines, ThreadProfiles


def _spin_in_a_thread() -> None:
    total = 0
    for i in range(200_000):
        total += i * i
    assert total > 0


def test_cpu_lines_name_each_thread() -> None:
    lines: list[str] = []
    cpu = CpuLines(60.0, lines.append)
    cpu.start()
    t = threading.Thread(target=_spin_in_a_thread, name="worker")
    t.start()
    t.join()
    blocker = threading.Event()
    waiter = threading.Thread(target=blocker.wait, name="waiter")
    waiter.start()
    cpu.stop()
    blocker.set()
    waiter.join()
    last = json.loads(lines[-1].removeprefix("agent-cpu: "))
    assert lines[-1].startswith("agent-cpu: ")
    assert last["process"] > 0 and "waiter" in last["threads"] and "MainThread" in last["threads"]


def test_profile_covers_threads_started_after_install(tmp_path: Path) -> None:
    profiles = ThreadProfiles()
    profiles.install()
    t = threading.Thread(target=_spin_in_a_thread)
    t.start()
    t.join()
    out = tmp_path / "agent.prof"
    profiles.dump(str(out))
    names = {fn for (_, _, fn) in pstats.Stats(str(out)).stats}  # type: ignore[attr-defined]
    assert "_spin_in_a_thread" in names
