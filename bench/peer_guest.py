"""Guest side of the peer benchmark (bench.peer): QEMU's igb (82576) with Linux's own igb
and igbvf drivers, answering the same test traffic as our VF drivers.

    python3 -m bench.peer_guest --vfs 3 --macs MAC,MAC,MAC --pf-mac MAC --dir /mnt/results

Runs inside the guest (python3 with the standard library and eeh_abi only):
1. `modprobe igb igbvf`; find the igb PF (by its MAC) and its network interface;
2. VFs through sysfs, as an administrator does: driver autoprobe off, `sriov_numvfs`,
   each VF's MAC set from the PF (`ip link set PF vf N mac M`), then igbvf bound to each
   VF (`drivers_probe`); wait for their interfaces;
3. every interface up; write DIR/peer-ready.json (interfaces, MACs, PCI addresses,
   seconds each step took);
4. answer every eeh_abi.traffic probe that reaches an interface with its echo (AF_PACKET
   sockets, ethertype 0x88B5), until DIR/peer-stop exists; then DIR/peer-echo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eeh_abi import traffic

PACKET_HOST = 0  # addressed to this interface (AF_PACKET also sees other hosts' frames)


def sh(*argv: str) -> str:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def wait_for(cond: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def iface_of(pci: Path) -> str | None:
    net = pci / "net"
    try:
        names = sorted(os.listdir(net))
    except OSError:
        return None
    return names[0] if names else None


NET = Path("/sys/class/net")


def find_pf(mac: str, net: Path = NET) -> tuple[str, Path] | None:
    """The interface with this MAC and its PCI device, or None. An interface may vanish
    while it is looked at (udev renames eth0 to enp1s0 while igb comes up): skipped."""
    for dev in sorted(net.iterdir()):
        try:
            if (dev / "address").read_text().strip() == mac:
                return dev.name, (dev / "device").resolve()
        except OSError:
            continue
    return None


def setup(pf_mac: str, vf_macs: list[str]) -> dict[str, Any]:
    steps: dict[str, float] = {}
    t = time.monotonic()
    sh("modprobe", "igb")
    sh("modprobe", "igbvf")
    wait_for(lambda: find_pf(pf_mac) is not None, 30, "the igb interface")
    sh("udevadm", "settle", "--timeout=30")  # udev renames new interfaces (enp...)
    steps["modprobe_s"] = time.monotonic() - t
    found = find_pf(pf_mac)
    if found is None:
        raise RuntimeError(f"no interface with MAC {pf_mac}")
    pf_if, pf_pci = found
    sh("ip", "link", "set", pf_if, "up")
    t = time.monotonic()
    (pf_pci / "sriov_drivers_autoprobe").write_text("0")
    (pf_pci / "sriov_numvfs").write_text(str(len(vf_macs)))
    for i, mac in enumerate(vf_macs):
        sh("ip", "link", "set", pf_if, "vf", str(i), "mac", mac)
    (pf_pci / "sriov_drivers_autoprobe").write_text("1")  # VFs may bind now (MACs set)
    vfs = []
    for i in range(len(vf_macs)):
        vf_pci = (pf_pci / f"virtfn{i}").resolve()
        Path("/sys/bus/pci/drivers_probe").write_text(vf_pci.name)
        vfs.append(vf_pci)
    wait_for(lambda: all(iface_of(v) for v in vfs), 60, "the igbvf interfaces")
    sh("udevadm", "settle", "--timeout=30")
    steps["vfs_s"] = time.monotonic() - t
    names = [iface_of(v) or "" for v in vfs]
    for n in names:
        sh("ip", "link", "set", n, "up")
    return {"pf": {"ifname": pf_if, "mac": pf_mac, "pci": pf_pci.name},
            "vfs": [{"ifname": n, "mac": m, "pci": v.name}
                    for n, m, v in zip(names, vf_macs, vfs, strict=True)],
            "steps": {k: round(v, 3) for k, v in steps.items()}}


def echo_loop(ifnames: list[str], stop: Path) -> dict[str, dict[str, int]]:
    socks = {}
    for name in ifnames:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(traffic.ETHERTYPE))
        s.bind((name, traffic.ETHERTYPE))
        s.setblocking(False)
        socks[s] = name
    counts = {n: {"probes": 0, "echoed": 0, "send_errors": 0} for n in ifnames}
    next_check = 0.0
    while True:
        now = time.monotonic()
        if now >= next_check:
            if stop.exists():
                break
            next_check = now + 0.5
        ready, _, _ = select.select(list(socks), [], [], 0.5)
        for s in ready:
            name = socks[s]
            while True:
                try:
                    frame, addr = s.recvfrom(9216)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    break
                if addr[2] != PACKET_HOST:  # a frame for another MAC (e.g. a VF's, seen
                    continue              # by the PF) must not be answered in its name
                reply = traffic.echo_of(frame)
                if reply is None:
                    continue
                counts[name]["probes"] += 1
                try:
                    s.send(reply)
                    counts[name]["echoed"] += 1
                except OSError:  # the interface is down (recovery): the probe is lost
                    counts[name]["send_errors"] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pf-mac", required=True)
    ap.add_argument("--macs", required=True, help="the VFs' MACs, comma-separated")
    ap.add_argument("--dir", default="/mnt/results")
    args = ap.parse_args()
    out = Path(args.dir)
    def ready(data: dict[str, Any]) -> None:  # atomically: the host reads it on sight
        tmp = out / "peer-ready.json.tmp"
        tmp.write_text(json.dumps(data) + "\n")
        tmp.replace(out / "peer-ready.json")

    try:
        info = setup(args.pf_mac, args.macs.split(","))
    except (RuntimeError, OSError) as e:
        ready({"error": str(e)})
        print(f"peer: set-up failed: {e}", flush=True)
        return 1
    ready(info)
    print(f"peer: ready {json.dumps(info)}", flush=True)
    names = [info["pf"]["ifname"]] + [v["ifname"] for v in info["vfs"]]
    counts = echo_loop(names, out / "peer-stop")
    (out / "peer-echo.json").write_text(json.dumps(counts) + "\n")
    with open(out / "dmesg.txt", "w") as f:  # Linux's AER and driver messages
        subprocess.run(["dmesg"], stdout=f, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
