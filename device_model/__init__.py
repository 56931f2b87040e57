"""The device model: an SR-IOV Ethernet adapter in pure Python.

Public entry points are re-exported here. Its functions implement `vfio_user.PciFunction`
(`vfio_user.contract`, what a transport such as the vfio-user server or a test harness
programs against) and DMA through the `vfio_user.GuestMemory` they are attached to; the
model uses nothing else of vfio_user.
"""

from device_model.adapter import Adapter, AdapterConfig
from device_model.clock import AsyncioClock, Clock, ManualClock
from device_model.events import Event, EventBus, EventHistory, EventKind
from device_model.inject import Injection
from device_model.nic.switch import QueueUplink, Uplink
from device_model.pe import ErrorLogEntry, ErrorSource, Pe, PeKind, PeStateCode, PeStatus
from device_model.reset import ResetKind, ResetTiming
from eeh_abi.papr import ErrorFunction

__all__ = [
    "Adapter", "AdapterConfig", "AsyncioClock", "Clock", "ErrorFunction", "ErrorLogEntry",
    "ErrorSource", "Event", "EventBus", "EventHistory", "EventKind", "Injection", "ManualClock",
    "Pe", "PeKind", "PeStateCode", "PeStatus", "QueueUplink", "ResetKind",
    "ResetTiming", "Uplink",
]
