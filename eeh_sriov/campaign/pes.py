"""PE and function names as a campaign reads them, of one adapter or several
(hypervisor_shim.pe.names has the scheme):

    adapter_of("nic1.vf3") == adapter_of("nic1.pf") == adapter_of("nic1") == "nic1"
    adapter_of("vf3") == adapter_of("pf") == adapter_of("adapter") == ""   # the unnamed
    is_vf("nic1.vf3") and vf_index("nic1.vf3") == 3
    is_adapter_pe("nic1") and is_adapter_pe("adapter") and not is_adapter_pe("nic1.vf0")
    sorted(names, key=order)      # adapter by adapter: its PE or PF first, then its VFs

Invariant (the topology checks it): an adapter's name is [a-z][a-z0-9-]{0,15} and never
"adapter", "host", "pf" or "vfN", so a name without a dot is the unnamed adapter's
function or PE ("pf", "vf3", "adapter") or a named adapter's PE ("nic1").
"""

from __future__ import annotations

import re

from hypervisor_shim.pe.names import ADAPTER_PE, pe_name, split

ADAPTER_NAME = re.compile(r"[a-z][a-z0-9-]{0,15}")
_VF = re.compile(r"vf\d+")


def is_vf(name: str) -> bool:
    """A VF's function or PE name ("vf3", "nic1.vf3")."""
    return _VF.fullmatch(split(name)[1]) is not None


def vf_index(name: str) -> int:
    return int(split(name)[1][2:])


def adapter_of(name: str) -> str:
    """The adapter of a PE or function name ("" for the unnamed adapter)."""
    adapter, local = split(name)
    if adapter or local in (ADAPTER_PE, "pf") or _VF.fullmatch(local):
        return adapter
    return local  # a named adapter's PE


def is_adapter_pe(name: str) -> bool:
    return "." not in name and not is_vf(name) and name != "pf"


def adapter_pe(adapter: str) -> str:
    """The adapter PE's name ("adapter" for the unnamed one)."""
    return pe_name(adapter, None)


def is_adapter_name(text: str) -> bool:
    """Could be a named adapter (its PE's name): not one of the unnamed adapter's names."""
    return ADAPTER_NAME.fullmatch(text) is not None and text not in (ADAPTER_PE, "pf") \
        and not _VF.fullmatch(text)


def order(name: str) -> tuple[str, int]:
    """Sort key: adapter by adapter, its PE (or PF) first, then its VFs by number."""
    return adapter_of(name), vf_index(name) + 1 if is_vf(name) else 0
