"""The device model: an SR-IOV Ethernet adapter in pure Python, independent of any transport.

Public entry points are re-exported here; `device_model.transport` is the contract a
transport (the vfio-user server, a test harness) programs against.
"""

from device_model.adapter import Adapter, AdapterConfig
from device_model.clock import AsyncioClock, Clock, ManualClock
from device_model.events import Event, EventBus, EventHistory, EventKind
from device_model.inject import ErrorFunction, Injection
from device_model.nic.switch import QueueUplink, Uplink
from device_model.pe import ErrorLogEntry, ErrorSource, OpStatus, Pe, PeKind, PeStateCode, PeStatus
from device_model.reset import ResetKind, ResetTiming

__all__ = [
    "Adapter", "AdapterConfig", "AsyncioClock", "Clock", "ErrorFunction", "ErrorLogEntry",
    "ErrorSource", "Event", "EventBus", "EventHistory", "EventKind", "Injection", "ManualClock",
    "OpStatus", "Pe", "PeKind", "PeStateCode", "PeStatus", "QueueUplink", "ResetKind",
    "ResetTiming", "Uplink",
]
