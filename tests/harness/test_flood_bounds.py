"""Issue 20's flood against the real platform and its real QMP console: one guest posts
3,000 reports of ~7 KB (PE-less and on its own PE), then 10,000 more as fast as it can,
while an operator's client that negotiated and only waits (never reads) stays connected
and, when it reads at last, gets an EVENTS_DROPPED marker counting what it missed; the
host's memory grows within a stated bound, `events.jsonl` by at most the guest's record
budget (hypervisor_shim/hcall/budget.py, RecordBudget), and another guest's calls and an
active console client are answered throughout (docs/platform-calls.md, Budgets)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol

from eeh_abi.hcall import Channel, Reply
from eeh_abi.papr import Status
from eeh_abi.schema import Call
from hypervisor_shim.hcall.budget import RECORD_BUDGET
from hypervisor_shim.platform import Platform, PlatformConfig
from hypervisor_shim.timeline import Entry
from qmp_server.session import EVENTS_DROPPED
from tests.harness.console_rig import ConsoleThread
from tests.unit.drivers.drivers_fakes import wait_for

OWNERS = {"pf": "svc", "vf0": "g1", "vf1": "g2"}
VF0, VF1 = 0x18000, 0x18100
DETAIL = {"blob": "d" * 7000}
RSS_BOUND_KIB = 64 * 1024  # the stated bound (docs/reliability.md): host memory growth
SLACK_BYTES = 64 * 1024  # summaries and the last call charged after the fact
ROOT = Path(__file__).resolve().parents[2]


def operator_main() -> None:
    """The operator's two console clients, in a process of their own (their memory is
    not the host's): one negotiates and then reads nothing until told "end"; the other
    runs query-pes each time it is told "q". Talks over stdin/stdout, one line each."""
    quiet = QEMUMonitorProtocol(sys.argv[1])
    quiet.connect()
    active = QEMUMonitorProtocol(sys.argv[1])
    active.connect()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "q":
            t = time.monotonic()
            n = len(active.cmd("query-pes"))  # type: ignore[arg-type]
            active.clear_events()
            print(json.dumps({"pes": n, "s": time.monotonic() - t}), flush=True)
            continue
        n = len(quiet.cmd("query-pes"))  # type: ignore[arg-type]
        marker = None
        for _ in range(5000):
            ev = quiet.pull_event(wait=2.0)
            if ev is None or ev["event"] == EVENTS_DROPPED:
                marker = ev
                break
        print(json.dumps({"pes": n, "marker": marker}), flush=True)
        break
    quiet.close()
    active.close()


class Operator:
    def __init__(self, path: Path) -> None:
        code = "from tests.harness.test_flood_bounds import operator_main; operator_main()"
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        assert self.readline() == "ready"

    def readline(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def ask(self, what: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        out: dict[str, Any] = json.loads(self.readline())
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def rss_kib() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def owner_bytes(path: Path, owner: str) -> int:
    """Bytes of events.jsonl lines written for `owner`."""
    return sum(len(line) + 1 for line in path.read_text().splitlines()
               if json.loads(line).get("owner") == owner)


def test_a_report_flood_stays_within_bounds_and_the_quiet_operator_stays(
        tmp_path: Path) -> None:
    cfg = PlatformConfig(total_vfs=2, enabled_vfs=2, owners=OWNERS)
    events = tmp_path / "events.jsonl"
    with Platform(cfg, tmp_path) as plat, \
            Channel.unix(str(plat.hcall_path("g1")), timeout=30) as flood, \
            Channel.unix(str(plat.hcall_path("g2")), timeout=10) as other:
        con = ConsoleThread(plat)
        operator = None
        try:
            operator = Operator(con.console.platform_path)  # quiet and active clients
            assert con.sessions() == 2
            assert other.call(Call.QUERY_PARTITION).ok
            rss0, size0 = rss_kib(), events.stat().st_size
            replies: list[Reply] = []
            lock = threading.Lock()

            def got(r: Reply) -> None:
                with lock:
                    replies.append(r)

            other_worst, console_worst = 0.0, 0.0
            t0 = time.monotonic()
            sent = 0
            for n in (3000, 10_000):
                for i in range(n):
                    flood.post(Call.REPORT, on_reply=got, step="probe", detail=DETAIL,
                               **({"pe": VF0} if i % 2 else {}))
                    sent += 1
                    if i % 500 == 0:  # the others, during the flood
                        t = time.monotonic()
                        assert other.call(Call.READ_SLOT_RESET_STATE2, pe=VF1).status == 0
                        assert other.call(Call.REPORT, step="probe", detail={"i": i}).ok
                        other_worst = max(other_worst, time.monotonic() - t)
                        q = operator.ask("q")
                        assert q["pes"] == 3
                        console_worst = max(console_worst, q["s"])
            assert wait_for(lambda: len(replies) == sent, 60), (len(replies), sent)
            flood_s = time.monotonic() - t0
            ok = sum(r.status == 0 for r in replies)
            busy = [r for r in replies if r.status == Status.BUSY]
            assert ok + len(busy) == sent
            assert all(isinstance(r.ret.get("retry_ms"), int) and "over budget" in str(r.error)
                       for r in busy)

            def summaries() -> list[Entry]:
                return [e for e in plat.timeline.snapshot()
                        if e.owner == "g1" and e.data.get("over_budget")]
            # every refusal counted in a summary, once its window is over
            assert wait_for(lambda: sum(e.data["refused"] for e in summaries())
                            >= len(busy), RECORD_BUDGET.window_s + 20)
            g1_bytes = owner_bytes(events, "g1")
            grown = events.stat().st_size - size0
            bound = RECORD_BUDGET.burst_bytes + RECORD_BUDGET.bytes_per_s * flood_s \
                + SLACK_BYTES
            assert g1_bytes <= bound, (g1_bytes, bound)
            # the quiet client: still connected; reading now, it learns what it missed
            rss1 = rss_kib()
            assert con.sessions() == 2
            end = operator.ask("end")
            assert end["pes"] == 3
            marker = end["marker"]
            assert marker is not None and marker["event"] == EVENTS_DROPPED, marker
            assert marker["data"]["dropped"] > 0
            assert rss1 - rss0 <= RSS_BOUND_KIB, (rss0, rss1)
            print(f"\n{sent} reports of ~7 KB in {flood_s:.2f} s: {ok} accepted, {len(busy)} "
                  f"refused, {len(summaries())} summaries; events.jsonl +{grown} bytes (g1 "
                  f"{g1_bytes}, bound {bound:.0f}); RSS {rss0} -> {rss1} KiB "
                  f"(+{rss1 - rss0}, bound {RSS_BOUND_KIB}); quiet client missed "
                  f"{marker['data']['dropped']} events; worst other-guest call pair "
                  f"{other_worst * 1000:.1f} ms, console query-pes {console_worst * 1000:.1f} ms")
        finally:
            if operator is not None:
                operator.close()
            con.close()
