"""The platform's PE policy: isolation, freeze counting, lockout, authorization.

`PePolicy` (policy) sits on the device model's PEs; `authorize` (access) says which
caller may do what to which PE.
"""

from hypervisor_shim.pe.access import Action, authorize
from hypervisor_shim.pe.policy import (
    HOST,
    CallResult,
    FreezeCounter,
    Notice,
    OnDriverLost,
    PeFlag,
    PePolicy,
    PeRecord,
    PolicyConfig,
    PolicyError,
    StateReply,
)

__all__ = [
    "HOST", "Action", "CallResult", "FreezeCounter", "Notice", "OnDriverLost", "PeFlag",
    "PePolicy", "PeRecord", "PolicyConfig", "PolicyError", "StateReply", "authorize",
]
