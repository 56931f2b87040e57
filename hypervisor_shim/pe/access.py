"""Who may do what to which PE: the channel is the caller's identity.

A caller acts only on PEs of functions it owns; the owner of the PF (the adapter
driver) owns the adapter PE and may also read the state of the VF PEs below it (to follow
their recovery) and lift their lockout. Everything else is refused; the platform answers
-3 (a PE outside the partition), as PAPR does.

Which action each platform call performs, and on which of its arguments' PE, is the
call's entry in `eeh_abi.schema` (`CallSpec.action`, `CallSpec.target`); the server
authorizes every call from it before its handler runs.
"""

from __future__ import annotations

from device_model import PeKind
from eeh_abi.schema import Action as Action  # declared with the calls that perform it
from hypervisor_shim.pe.policy import PeRecord


def authorize(caller: str, rec: PeRecord, action: Action, pf_owner: str | None) -> bool:
    owns = rec.owner is not None and rec.owner == caller
    if action is Action.ALLOW_UNFREEZE:
        return owns and rec.pe.kind is PeKind.ADAPTER
    if owns:
        return True
    if action is Action.READ_STATE and rec.pe.kind is PeKind.VF:
        return pf_owner is not None and caller == pf_owner
    return False
