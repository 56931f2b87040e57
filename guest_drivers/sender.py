"""The benchmarks' sender: frames through one VF as fast as its driver takes them.

The agent started with `--sender` reports `bench-sender-ready` once it listens (after
its drivers are ready), then answers the platform's `bench-send` event (data:
`vf` the VF's name, `seconds`, `size` the frame length, optional `id`): for `seconds`
it keeps the VF's queue topped up with test-traffic frames to the uplink (eeh_abi.traffic
probes of stream 1 + VF number, target 0xFFFF: the adapter's switch sends them out of the
uplink), waits until the last has completed, and reports `bench-sent` with what the
driver's books say: frames completed by the device (`sent`) in the window and after,
refused, seconds, frames per second. The books stay exact: every frame is submitted
through `VfDriver.send_batch` like any other.

Events arrive on the platform channel's reader thread; the sending runs on a thread of
its own, one request at a time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

from eeh_abi import traffic
from eeh_abi.hcall import Event
from eeh_abi.vocabulary import Kind
from guest_drivers.driver import Driver
from guest_drivers.services import Services
from guest_drivers.vf import VfDriver

EVENT = "bench-send"
REPORT = Kind.BENCH_SENT
READY = Kind.BENCH_SENDER_READY
DST = bytes.fromhex("02feeeeeee01")  # unknown unicast: the switch sends it to the uplink
MAX_SECONDS = 60.0


class BenchSender:
    def __init__(self, services: Services, drivers: Mapping[str, Driver]) -> None:
        self.services = services
        self.drivers = drivers  # the agent's, by function name
        self.results: list[dict[str, Any]] = []
        self._requests: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="bench-sender", daemon=True)

    def start(self) -> None:
        self.services.listen(self._on_event)
        self._thread.start()
        self.services.report(READY, None, {})  # the host may send bench-send from now on

    def stop(self) -> None:
        self._requests.put(None)
        self._thread.join(MAX_SECONDS + 10)

    def _on_event(self, ev: Event) -> None:
        if ev.name == EVENT:
            self._requests.put(dict(ev.data))

    def _run(self) -> None:
        while True:
            req = self._requests.get()
            if req is None:
                return
            try:
                result = self.send(str(req.get("vf", "")), float(req.get("seconds", 2.0)),
                                   int(req.get("size", traffic.MIN_FRAME)))
            except (ValueError, TypeError, KeyError) as e:
                result = {"error": repr(e)}
            result["id"] = req.get("id")
            self.results.append(result)
            self.services.report(REPORT, None, result)

    def send(self, name: str, seconds: float, size: int) -> dict[str, Any]:
        vf = self.drivers.get(name)
        if not isinstance(vf, VfDriver):
            return {"vf": name, "error": "no such VF driver in this guest"}
        seconds = min(max(seconds, 0.1), MAX_SECONDS)
        n = vf.fn.info.vf or 0
        frame = traffic.build(traffic.Probe(DST, vf.mac, traffic.PROBE, 1 + n, 0xFFFF, 0, 0),
                              max(traffic.MIN_FRAME, size))
        window = max(2 * vf.tx_ring, 64)  # frames kept queued: the ring stays full
        sent0, dropped0 = vf.tx.sent, vf.tx.dropped
        submitted = accepted = 0
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            room = window - vf.queued()
            if room > 0:
                submitted += room
                accepted += vf.send_batch([frame] * room)
            else:
                time.sleep(0.0002)
        t_end = time.monotonic()
        sent_in_window = vf.tx.sent - sent0
        drained = vf.wait_tx_done(10.0)
        return {"vf": name, "size": len(frame), "seconds": round(t_end - t0, 4),
                "submitted": submitted, "accepted": accepted,
                "sent_in_window": sent_in_window, "sent_total": vf.tx.sent - sent0,
                "dropped": vf.tx.dropped - dropped0, "drained": drained,
                "fps": round(sent_in_window / (t_end - t0), 1)}
