"""Guest-side MMIO timing: `python3 -m guest_drivers.mmio_bench N [OUT.json]` (root).

Times N 32-bit reads and N posted writes of the PF's BAR0 through sysfs resource0, and
the same loop over ordinary memory as the in-guest baseline (Python's own cost).
"""

from __future__ import annotations

import json
import mmap
import sys
import time
from collections.abc import Callable

from guest_drivers.platform.sysfs import find_one

VENDOR, PF_DEVICE = 0x1B36, 0x10EE
STATUS, MTU = 0x004, 0x010


def _times(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    pf = find_one(VENDOR, PF_DEVICE)
    pf.enable()
    pf.config_write(0x04, 2, pf.config_read(0x04, 2) | 0x2)
    bar = pf.bar(0)
    ram = memoryview(mmap.mmap(-1, 4096)).cast("I")
    result = {
        "mmio_read_us": _times(lambda: bar.read32(STATUS), n),
        "mmio_write_us": _times(lambda: bar.write32(MTU, 1500), n),
        "ram_read_us": _times(lambda: ram[1], n),
    }
    out = sys.argv[2] if len(sys.argv) > 2 else "/mnt/results/mmio.json"
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
