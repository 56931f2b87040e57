"""The root of every exception hypervisor_shim raises.

Each subpackage declares its data-carrying subclasses next to the code that raises them
(vm.errors, adapter_host, topology, pe, hcall, console); the CLI catches `ShimError` and
prints its message as one line.
"""

from __future__ import annotations


class ShimError(Exception):
    """Root of the exceptions of hypervisor_shim."""
