"""What the adapter driver applies to one VF: MAC, port VLAN, MTU, anti-spoofing.

    s = VfSettings("02:ee:00:00:01:01", vlan=100)
    s.to_json()                 # {"mac": "02:ee:00:00:01:01", "vlan": 100, "mtu": None, ...}
    VfSettings.from_json(item)  # from a `query-functions` entry (lenient about types)

The one definition for both sides: the platform hands it out (`PlatformConfig.vf_settings`,
the `config` of a VF's `query-functions` entry and the `vfs` of the PF's `adapter` entry,
each as `to_json()`, the PF's with `"vf": n` added) and the adapter driver
(`guest_drivers.pf`) reads it back. The VF's number is the key of the mapping that holds
it. A field left None takes the adapter's default: MAC base_mac + 1 + n, untagged, MTU
1500. The limits are declared here (`eeh_abi.limits`) and read by the topology file's
parser. Standard library only (runs in guests).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eeh_abi import nic
from eeh_abi.limits import limit, violation

_MAC = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")


@dataclass(frozen=True)
class VfSettings:
    mac: str | None = None  # "02:ee:00:00:01:00" (lower case); None: base_mac + 1 + n
    vlan: int | None = field(default=None, metadata=limit(0, nic.VLAN_VID))  # None: untagged
    mtu: int | None = field(default=None, metadata=limit(nic.MTU_MIN, nic.MTU_MAX))
    anti_spoof: bool = False

    def __post_init__(self) -> None:
        bad = violation(self)
        if bad is not None:
            raise ValueError(f"VF setting {bad[0]}: {bad[1]}")
        if self.mac is not None and not (isinstance(self.mac, str) and _MAC.fullmatch(self.mac)):
            raise ValueError(f"VF setting mac: {self.mac!r} is not like \"02:ee:00:00:01:00\"")

    @property
    def mac_bytes(self) -> bytes | None:
        return None if self.mac is None else bytes.fromhex(self.mac.replace(":", ""))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> VfSettings:
        """From the platform's JSON: a field of the wrong type counts as absent; a MAC may
        be "02:ee:00:00:01:00", "02-ee-...", or 12 hex digits. ValueError if a value is out
        of range or a MAC is not one."""
        mac, vlan, mtu = item.get("mac"), item.get("vlan"), item.get("mtu")

        def number(v: object) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        return cls(mac=None if mac is None else format_mac(parse_mac(mac)),
                   vlan=number(vlan), mtu=number(mtu),
                   anti_spoof=bool(item.get("anti_spoof", False)))


def parse_mac(value: object) -> bytes:
    """A MAC given as "02:ee:00:00:01:00", "02-ee-00-00-01-00" or "02ee00000100"."""
    if isinstance(value, str):
        text = value.replace(":", "").replace("-", "")
        if len(text) == 12:
            try:
                return bytes.fromhex(text)
            except ValueError:
                pass
    raise ValueError(f"not a MAC address: {value!r}")


def format_mac(mac: bytes) -> str:
    """ "02:ee:00:00:01:00" """
    return ":".join(f"{b:02x}" for b in mac)
