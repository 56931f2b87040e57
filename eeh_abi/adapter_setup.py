"""The adapter configuration its driver owns, as the register writes that apply it.

    setup = adapter_setup(pf_mac, num_vfs, {1: VfSettings(...)})
    for w in setup.writes:                      # in order; width 4 or 8 bytes
        fn.write32(w.offset, w.value) if w.width == 4 else fn.write64(w.offset, w.value)
    setup.vfs                                   # each VF's settings, its MAC filled in

One sequence, two writers: the adapter (PF) driver at probe and after every reset
(guest_drivers.pf), and the platform when it recovers the adapter itself because its
driver was lost (hypervisor_shim.pe.adapter_recovery). What it writes (docs/registers.md):
- SWITCH_CTRL: loopback + uplink;
- for each VF n < num_vfs: VFCFG n MAC (admin: forced on the VF; default PF MAC + 1 + n),
  VLAN (a forced port VLAN, or none) and anti-spoof, as two 8-byte writes (MAC_LO+MAC_HI,
  VLAN+FLAGS: the registers may be written in pairs, docs/registers.md);
- VF_TXEN / VF_RXEN for every one of those VFs;
- ADAPTER_ERR, VF_ERR, VFLR cleared (RW1C: the causes were logged);
- last, ADAPTER_CTRL.pf_reset_done: every VF mailbox shows "PF reset done", which is
  what a VF driver waits for before it restores its own settings.
Standard library only (runs in guests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from eeh_abi import nic
from eeh_abi.vf_settings import VfSettings, format_mac

ALL_ONES32 = 0xFFFFFFFF
ALL_ONES64 = (1 << 64) - 1


@dataclass(frozen=True)
class Write:
    offset: int  # BAR0
    width: int  # bytes: 4 or 8
    value: int


@dataclass(frozen=True)
class AdapterSetup:
    writes: tuple[Write, ...]
    vfs: Mapping[int, VfSettings]  # VF n's settings as applied (MAC always set)


def pf_mac_of(mac_lo: int, mac_hi: int) -> bytes:
    """The PF's own MAC from its MAC_LO / MAC_HI registers."""
    return mac_lo.to_bytes(4, "little") + (mac_hi & nic.MAC_HI_ADDR).to_bytes(2, "little")


def adapter_setup(pf_mac: bytes, num_vfs: int, vfs: Mapping[int, VfSettings]) -> AdapterSetup:
    """The writes that configure the adapter from scratch for `num_vfs` VFs (`vfs`: the
    settings of those that have any; the others get defaults)."""
    if not 0 <= num_vfs <= nic.MAX_VFS:
        raise ValueError(f"num_vfs must be 0..{nic.MAX_VFS}, not {num_vfs}")
    out = [Write(nic.SWITCH_CTRL, 4, int(nic.SwitchCtrl.LOOPBACK | nic.SwitchCtrl.UPLINK))]
    base_mac = int.from_bytes(pf_mac, "big")
    applied: dict[int, VfSettings] = {}
    for n in range(num_vfs):
        s = vfs.get(n) or VfSettings()
        mac = s.mac_bytes or ((base_mac + 1 + n) % (1 << 48)).to_bytes(6, "big")
        applied[n] = dataclasses.replace(s, mac=format_mac(mac))
        block = nic.vfcfg(n)
        mac_lo = int.from_bytes(mac[0:4], "little")
        mac_hi = int.from_bytes(mac[4:6], "little") | int(nic.VfcfgMacHi.ADMIN)
        vlan = 0 if s.vlan is None else int(nic.VfcfgVlan.EN) | (s.vlan & nic.VLAN_VID)
        flags = int(nic.VfcfgFlags.ANTI_SPOOF) if s.anti_spoof else 0
        # two 8-byte writes, each over a pair of registers (MAC_LO+MAC_HI, VLAN+FLAGS;
        # aligned, low dword first), not four 4-byte ones: a store is an exit to QEMU and
        # a vfio-user message in a TCG guest, at 64 VFs 128 fewer before the release
        out += [Write(block + nic.VFCFG_MAC_LO, 8, mac_lo | mac_hi << 32),
                Write(block + nic.VFCFG_VLAN, 8, vlan | flags << 32)]
    mask = (1 << num_vfs) - 1
    out += [Write(nic.VF_TXEN, 8, mask), Write(nic.VF_RXEN, 8, mask),
            Write(nic.ADAPTER_ERR, 4, ALL_ONES32), Write(nic.VF_ERR, 8, ALL_ONES64),
            Write(nic.VFLR, 8, ALL_ONES64),
            Write(nic.ADAPTER_CTRL, 4, int(nic.AdapterCtrl.PF_RESET_DONE))]
    return AdapterSetup(tuple(out), applied)
