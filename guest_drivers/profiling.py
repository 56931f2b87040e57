"""Where an agent's CPU goes (benchmarks): per-thread CPU lines and cProfile of every
thread.

`CpuLines(every_s, out)`: a thread that writes, every `every_s` seconds, one line
`agent-cpu: {JSON}` with the guest's monotonic time, the process's CPU time (user +
system) and each live thread's CPU time (by thread name), so a host that knows when it
injected an error can take the difference over the recovery (bench figures: a TCG
guest's per-VF recovery cost). Costs one /proc-free clock read per thread per line.

`ThreadProfiles`: cProfile of every thread started after `install()` (and the calling
one); `dump(path)` writes one pstats file. Python >= 3.12 profiles through sys.monitoring,
which covers every thread of the process: one profiler. Before, a profiler follows one
thread: each thread gets its own (threading.setprofile), merged at the dump. A profiled agent runs
several times slower: use it for where the time goes, not for how much.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import threading
import time
from collections.abc import Callable
from typing import Any


def thread_cpu() -> dict[str, float]:
    """Each live thread's CPU time in seconds, by name (threads with one name summed)."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        if t.ident is None:
            continue
        try:
            cpu = time.clock_gettime(time.pthread_getcpuclockid(t.ident))
        except (OSError, AttributeError):  # the thread just ended
            continue
        out[t.name] = round(out.get(t.name, 0.0) + cpu, 4)
    return out


class CpuLines:
    def __init__(self, every_s: float, out: Callable[[str], None]) -> None:
        self.every_s = every_s
        self._out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-lines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.line()

    def line(self) -> None:
        self._out("agent-cpu: " + json.dumps({
            "t": round(time.monotonic(), 4), "process": round(time.process_time(), 4),
            "threads": thread_cpu()}, sort_keys=True))

    def _run(self) -> None:
        self.line()
        while not self._stop.wait(self.every_s):
            self.line()


class ThreadProfiles:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profiles: list[cProfile.Profile] = []

    def _new(self) -> cProfile.Profile:
        p = cProfile.Profile()
        with self._lock:
            self._profiles.append(p)
        return p

    def _first_event(self, frame: Any, event: str, arg: Any) -> None:
        # threading.setprofile's hook: the thread's first event replaces it with a
        # profiler of the thread's own
        sys.setprofile(None)
        self._new().enable()

    def install(self) -> None:
        if sys.version_info < (3, 12):
            threading.setprofile(self._first_event)
        self._new().enable()

    def dump(self, path: str) -> None:
        if sys.version_info < (3, 12):
            threading.setprofile(None)
        with self._lock:
            profiles = list(self._profiles)
        stats: pstats.Stats | None = None
        for p in profiles:
            p.create_stats()  # disables only the calling thread's; the others' counts stand
            if not getattr(p, "stats", None):
                continue
            if stats is None:
                stats = pstats.Stats(p)
            else:
                stats.add(p)
        if stats is not None:
            stats.dump_stats(path)
