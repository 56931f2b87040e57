"""`make bench`: every benchmark, one after the other, in one run.

Each benchmark reports distributions and ratios measured side by side within its own run
(the machines are shared and noisy), never absolute numbers compared across runs.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = ("bench.boot", "bench.device_model", "bench.vfio_user", "bench.guest_mmio")


def main() -> int:
    failed = []
    for name in BENCHES:
        print(f"\n=== {name}", flush=True)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            print(f"(not available: {e})")
            continue
        saved = sys.argv
        sys.argv = [name]
        try:
            rc = module.main()
        finally:
            sys.argv = saved
        if rc:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
