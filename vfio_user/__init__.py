"""vfio-user transport: serve `PciFunction`s to QEMU (or to `Client`) over unix sockets.

Public API:
- `serve(functions, socket_dir, config) -> Server` (async), `Server`, `ServerConfig`,
  `ServerThread` (a server on its own loop thread, for harnesses and tests);
- `Client` (synchronous, for the host harness) and `GuestRam` (a memfd as guest RAM);
- `Session` (the protocol core, one message at a time) and `codec` (the wire format);
- exceptions in `errors` (root `VfioUserError`).
"""

from device_model.vfio_user.client import Client, ClientState, GuestRam
from device_model.vfio_user.errors import (
    CommandFailed,
    ConnectionClosed,
    Fault,
    FramingError,
    NegotiationFailed,
    ProtocolViolation,
    Refused,
    ReplyTimeout,
    VfioUserError,
)
from device_model.vfio_user.runner import ServerThread
from device_model.vfio_user.server import Endpoint, EndpointState, Server, serve
from device_model.vfio_user.session import ServerConfig, Session, SessionState

__all__ = [
    "Client",
    "ClientState",
    "CommandFailed",
    "ConnectionClosed",
    "Endpoint",
    "EndpointState",
    "Fault",
    "FramingError",
    "GuestRam",
    "NegotiationFailed",
    "ProtocolViolation",
    "Refused",
    "ReplyTimeout",
    "Server",
    "ServerConfig",
    "ServerThread",
    "Session",
    "SessionState",
    "VfioUserError",
    "serve",
]
