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

from eeh_abi import nic
from guest_drivers.platform.sysfs import find_one


def _times(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    pf = find_one(nic.VENDOR_ID, nic.PF_DEVICE_ID)
    pf.enable()
    pf.config_write(nic.CFG_COMMAND, 2, pf.config_read(nic.CFG_COMMAND, 2) | nic.Command.MEMORY)
    bar = pf.bar(nic.BAR0)
    ram = memoryview(mmap.mmap(-1, 4096)).cast("I")
    result = {
        "mmio_read_us": _times(lambda: bar.read32(nic.STATUS), n),
        "mmio_write_us": _times(lambda: bar.write32(nic.MTU, nic.MTU_DEFAULT), n),
        "ram_read_us": _times(lambda: ram[1], n),
    }
    out = sys.argv[2] if len(sys.argv) > 2 else "/mnt/results/mmio.json"
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
