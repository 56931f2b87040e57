"""The driver agent on the host: `python -m guest_drivers.harness --hcall SOCKET [--vfs N]`.

The same agent as `python3 -m guest_drivers.agent` in a guest, with the harness backend
(guest_drivers.platform.harness): the platform channel is the unix socket SOCKET (the
platform's channel for this owner, e.g. `<dir>/host.hcall`), and `query-functions`
answers each function's vfio-user socket, which the drivers reach as QEMU would. Up to 64
VF drivers run in one process, one thread each, asleep when idle.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from guest_drivers.agent import arguments, run
from guest_drivers.platform.errors import PlatformError


def main(argv: Sequence[str] | None = None) -> int:
    p = arguments("python -m guest_drivers.harness",
                  "Run the adapter and VF drivers on the host over vfio-user.")
    p.add_argument("--hcall", required=True, metavar="SOCKET",
                   help="the platform channel's unix socket for this owner")
    p.add_argument("--ram-mib", type=int, default=8,
                   help="DMA memory (a memfd) per function, MiB (default 8)")
    args = p.parse_args(argv)
    from guest_drivers.platform.harness import HarnessBackend

    try:
        backend = HarnessBackend(args.hcall, ram_size=args.ram_mib << 20)
    except (OSError, PlatformError) as e:
        print(f"harness: cannot reach the platform at {args.hcall}: {e}", file=sys.stderr,
              flush=True)
        return 1
    return run(backend, args)


if __name__ == "__main__":
    sys.exit(main())
