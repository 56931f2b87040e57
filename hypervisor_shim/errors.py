"""The root of every exception hypervisor_shim (the platform core) raises.

Each subpackage declares its data-carrying subclasses next to the code that raises them
(adapter_host, pe, hcall, console); the application (eeh_sriov: topology, system, CLI)
raises subclasses too, and its CLI catches `ShimError` (and the launcher's `VmError`) and
prints the message as one line.
"""

from __future__ import annotations


class ShimError(Exception):
    """Root of the exceptions of hypervisor_shim."""
