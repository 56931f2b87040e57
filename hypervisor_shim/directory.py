"""The function directory: what `query-functions` tells an owner about the functions it
holds (name, kind, PE, slot or socket, handlers, the VF's settings, the adapter's VFs).
Read on the model's loop thread (the platform-call server calls it there)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from device_model import Adapter
from hypervisor_shim.pe import HOST


class DirectoryConfig(Protocol):
    """What the directory reads of the platform's configuration (`PlatformConfig`)."""

    @property
    def enabled_vfs(self) -> int: ...
    @property
    def owners(self) -> Mapping[str, str]: ...  # function -> owner
    @property
    def handlers(self) -> Mapping[str, bool]: ...  # owner -> its drivers have handlers
    @property
    def vf_settings(self) -> Mapping[int, Any]: ...  # VF -> a dataclass (mac, vlan, mtu...)


def function_directory(adapter: Adapter, cfg: DirectoryConfig, owner: str,
                       slots: Mapping[str, int], sockets: Mapping[str, Path]
                       ) -> list[dict[str, Any]]:
    """`slots`: function -> PCIe slot in its guest (VM mode); `sockets`: function -> its
    vfio-user socket, told to HOST and to owners without a slot (harness mode)."""
    out = []
    for fn in adapter.functions():
        if cfg.owners.get(fn.name) != owner:
            continue
        vf = getattr(fn, "index", None)
        entry: dict[str, Any] = {
            "name": fn.name, "kind": "vf" if vf is not None else "pf", "vf": vf,
            "addr": fn.pe.address, "pe": fn.pe.address,
            "slot": slots.get(fn.name),
            "socket": str(sockets[fn.name]) if owner == HOST
            or slots.get(fn.name) is None else None,
            "handlers": cfg.handlers.get(owner, True),
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
