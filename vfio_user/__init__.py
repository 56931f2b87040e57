"""vfio-user transport: serve `PciFunction`s to QEMU (or to `Client`) over unix sockets.

A package of its own: it depends on the standard library only, and on no device model.

Public API:
- the contract a device implements (`contract`): `PciFunction`, `IrqSink`, `RegionInfo`,
  `IrqInfo`, `RegionIndex`, `RegionFlag`, `IrqIndex`, `IrqFlag`, `NUM_REGIONS`,
  `NUM_IRQS`; and the guest memory handed to a function on attach (`memory`):
  `GuestMemory` (its DMA maps, `DmaMap`, with strict bounds);
- `serve(functions, socket_dir, config) -> Server` (async), `Server`, `ServerConfig`,
  `ServerThread` (a server on its own loop thread, for harnesses and tests);
- `Client` (synchronous, for the host harness) and `GuestRam` (a memfd as guest RAM);
- `Session` (the protocol core, one message at a time) and `codec` (the wire format);
- exceptions in `errors` (root `VfioUserError`; `DmaError` and `MapError` from
  `GuestMemory`).
"""

from vfio_user.client import Client, ClientState, GuestRam
from vfio_user.contract import (
    NUM_IRQS,
    NUM_REGIONS,
    IrqFlag,
    IrqIndex,
    IrqInfo,
    IrqSink,
    PciFunction,
    RegionFlag,
    RegionIndex,
    RegionInfo,
)
from vfio_user.errors import (
    CommandFailed,
    ConnectionClosed,
    DmaError,
    Fault,
    FramingError,
    MapError,
    NegotiationFailed,
    ProtocolViolation,
    Refused,
    ReplyTimeout,
    VfioUserError,
)
from vfio_user.memory import DmaMap, GuestMemory
from vfio_user.model_loop import ModelLoop, new_event_loop
from vfio_user.runner import ServerThread, ServerThreadDied
from vfio_user.server import Endpoint, EndpointState, Server, serve
from vfio_user.session import ServerConfig, Session, SessionState

__all__ = [
    "NUM_IRQS",
    "NUM_REGIONS",
    "Client",
    "ClientState",
    "CommandFailed",
    "ConnectionClosed",
    "DmaError",
    "DmaMap",
    "Endpoint",
    "EndpointState",
    "Fault",
    "FramingError",
    "GuestMemory",
    "GuestRam",
    "IrqFlag",
    "IrqIndex",
    "IrqInfo",
    "IrqSink",
    "MapError",
    "ModelLoop",
    "NegotiationFailed",
    "PciFunction",
    "ProtocolViolation",
    "Refused",
    "RegionFlag",
    "RegionIndex",
    "RegionInfo",
    "ReplyTimeout",
    "Server",
    "ServerConfig",
    "ServerThread",
    "ServerThreadDied",
    "Session",
    "SessionState",
    "VfioUserError",
    "new_event_loop",
    "serve",
]
