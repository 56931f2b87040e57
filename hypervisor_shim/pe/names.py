"""Names of functions and PEs when a platform serves several adapters.

An adapter has a name ("nic0", "nic1", ...) unless it is the only one of a topology that
gives it none (a single `[adapter]` table): then it is the unnamed adapter "" and every
name is what it was before there were several (`pf`, `vf3`, PE `adapter`, PE `vf3`).

    qualify("nic1", "vf3")      # "nic1.vf3"   (a function, as guests and the console say)
    qualify("", "vf3")          # "vf3"
    pe_name("nic1", None)       # "nic1"       (the adapter PE)
    pe_name("", None)           # "adapter"
    pe_name("nic1", 3)          # "nic1.vf3"   (VF 3's PE)
    split("nic1.vf3")           # ("nic1", "vf3");  split("vf3") -> ("", "vf3")

Invariant: an adapter's name never contains "." (the topology checks it), so `split`
undoes `qualify`, and a PE name never equals another adapter's function name.
"""

from __future__ import annotations

ADAPTER_PE = "adapter"  # the unnamed adapter's PE


def qualify(adapter: str, local: str) -> str:
    """The platform-wide name of function `local` ("pf", "vfN") of `adapter`."""
    return f"{adapter}.{local}" if adapter else local


def split(name: str) -> tuple[str, str]:
    """(adapter, local function or PE name) of a platform-wide name."""
    adapter, dot, local = name.rpartition(".")
    return (adapter, local) if dot else ("", name)


def pe_name(adapter: str, vf: int | None) -> str:
    """The name of the adapter PE (`vf` None) or of VF `vf`'s PE of `adapter`."""
    if vf is None:
        return adapter or ADAPTER_PE
    return qualify(adapter, f"vf{vf}")


def pe_of_function(name: str) -> str:
    """The PE a function's driver reports on: the adapter PE for a PF, else the VF's."""
    adapter, local = split(name)
    return pe_name(adapter, None) if local == "pf" else name
