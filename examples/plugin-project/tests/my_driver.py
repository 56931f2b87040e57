"""A tiny VF driver of a test author's own (runs in a guest: python3 -m my_driver).

It binds to every function its guest owns through the platform calls and reports
`probe` on each function's PE, with its guest's name, its greeting and where it runs;
then it stays bound until the guest is stopped. (A real driver would map the function's
BARs and run recovery on the platform's pushed events: see guest_drivers/ in eeh-sriov.)
"""

from __future__ import annotations

import argparse
import os
import threading

from eeh_abi.hcall import Channel
from eeh_abi.schema import Call
from guest_drivers.platform.guest import find_port


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="my_driver")
    ap.add_argument("--greeting", required=True)
    args = ap.parse_args(argv)
    channel = Channel.open_device(str(find_port()))
    for fn in channel.call(Call.QUERY_FUNCTIONS).ret["functions"]:
        channel.call(Call.REGISTER, addr=fn["addr"], driver="my_driver")
        detail = {"driver": "my_driver", "guest": os.environ["EEH_GUEST"],
                  "greeting": args.greeting, "cwd": os.getcwd(), "function": fn["name"]}
        reply = channel.call(Call.REPORT, step="probe", pe=fn["pe"], detail=detail)
        print(f"my_driver: {fn['name']} bound (report status {reply.status})", flush=True)
    threading.Event().wait()  # bound until the guest is stopped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
