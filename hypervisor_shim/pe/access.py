"""Who may do what to which PE: the channel is the caller's identity.

A caller acts only on PEs of functions it owns; the owner of the PF (the adapter
driver) owns the adapter PE and may also read the state of the VF PEs below it (to follow
their recovery) and lift their lockout. Everything else is refused; the platform answers
-3 (a PE outside the partition), as PAPR does.
"""

from __future__ import annotations

import enum

from device_model import PeKind
from hypervisor_shim.pe.policy import PeRecord


class Action(enum.Enum):
    READ_STATE = "read-state"  # get-config-addr-info2, read-slot-reset-state2
    THAW = "thaw"  # set-eeh-option
    RESET = "reset"  # set-slot-reset
    CONFIGURE = "configure"  # configure-pe
    ERROR_DETAIL = "error-detail"  # slot-error-detail
    ALLOW_UNFREEZE = "allow-unfreeze"  # open-sriov-allow-unfreeze (on the adapter PE)
    INJECT = "inject"  # errinjct (also needs the policy's errinjct switch)
    REGISTER = "register"
    REPORT = "report"


def authorize(caller: str, rec: PeRecord, action: Action, pf_owner: str | None) -> bool:
    owns = rec.owner is not None and rec.owner == caller
    if action is Action.ALLOW_UNFREEZE:
        return owns and rec.pe.kind is PeKind.ADAPTER
    if owns:
        return True
    if action is Action.READ_STATE and rec.pe.kind is PeKind.VF:
        return pf_owner is not None and caller == pf_owner
    return False
