"""The function directory: what `query-functions` tells an owner about the functions it
holds (name, kind, PE, slot or socket, handlers, the VF's settings, the adapter's VFs).
Read on the model's loop thread (the platform-call server calls it there). One adapter's
at a time: the platform lists each adapter's in turn; names are platform-wide ("nic1.vf3",
hypervisor_shim.pe.names), and a PF's entry lists its own adapter's VF PEs only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from device_model import Adapter
from hypervisor_shim.pe import HOST
from hypervisor_shim.pe.names import qualify


class DirectoryConfig(Protocol):
    """What the directory reads of an adapter's plan (`hypervisor_shim.adapters.
    AdapterPlan`)."""

    @property
    def name(self) -> str: ...  # the adapter's ("" : the only, unnamed one)
    @property
    def enabled_vfs(self) -> int: ...
    @property
    def owners(self) -> Mapping[str, str]: ...  # the adapter's function ("vf3") -> owner
    @property
    def vf_settings(self) -> Mapping[int, Any]: ...  # VF -> a dataclass (mac, vlan, mtu...)


def function_directory(adapter: Adapter, cfg: DirectoryConfig, owner: str,
                       slots: Mapping[str, int], sockets: Mapping[str, Path],
                       handlers: Mapping[str, bool]) -> list[dict[str, Any]]:
    """`slots`: function (platform-wide name) -> PCIe slot in its guest (VM mode);
    `sockets`: function -> its vfio-user socket, told to HOST and to owners without a
    slot (harness mode); `handlers`: owner -> its drivers have error handlers."""
    out = []
    for fn in adapter.functions():
        if cfg.owners.get(fn.name) != owner:
            continue
        vf = getattr(fn, "index", None)
        name = qualify(cfg.name, fn.name)
        entry: dict[str, Any] = {
            "name": name, "kind": "vf" if vf is not None else "pf", "vf": vf,
            "addr": fn.pe.address, "pe": fn.pe.address,
            "slot": slots.get(name),
            "socket": str(sockets[name]) if owner == HOST
            or slots.get(name) is None else None,
            "handlers": handlers.get(owner, True),
        }
        if vf is not None and vf in cfg.vf_settings:
            entry["config"] = dataclasses.asdict(cfg.vf_settings[vf])
        if vf is None:
            entry["adapter"] = {
                "num_vfs": cfg.enabled_vfs,
                "vf_pes": [pe.address for pe in adapter.pes.vfs[:cfg.enabled_vfs]],
                "vfs": [dict(vf=n, **dataclasses.asdict(s))
                        for n, s in sorted(cfg.vf_settings.items())]}
        out.append(entry)
    return out
