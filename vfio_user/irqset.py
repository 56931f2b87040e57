"""SET_IRQS: validate one request completely, then apply it to an `IrqTable`.

Supported: DATA_EVENTFD with ACTION_TRIGGER (assign `count` eventfds to vectors
start..start+count-1; the same request without fds de-assigns them), DATA_NONE and
DATA_BOOL with TRIGGER (the client fires vectors), MASK and UNMASK (the server masks:
triggers on a masked vector are latched and delivered at unmask), and the VFIO special
case count=0, start=0, DATA_NONE|TRIGGER (disable the whole index). Not supported:
eventfds for MASK/UNMASK (VFIO's INTx resample path; QEMU falls back without it).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from vfio_user.codec import IRQ_ACTION_MASK, IRQ_DATA_MASK, IrqSet, IrqSetFlag
from vfio_user.contract import NUM_IRQS, IrqInfo
from vfio_user.errors import Fault, Refused
from vfio_user.irqs import IrqTable

_DATA = (IrqSetFlag.DATA_NONE, IrqSetFlag.DATA_BOOL, IrqSetFlag.DATA_EVENTFD)
_ACTION = (IrqSetFlag.ACTION_MASK, IrqSetFlag.ACTION_UNMASK, IrqSetFlag.ACTION_TRIGGER)


def apply_set_irqs(table: IrqTable, infos: Sequence[IrqInfo], req: IrqSet, tail: bytes,
                   fds: list[int]) -> None:
    """Apply `req`. Eventfds it keeps are removed from `fds` (the caller closes the rest)."""
    data = req.flags & IRQ_DATA_MASK
    action = req.flags & IRQ_ACTION_MASK
    if req.flags & ~(IRQ_DATA_MASK | IRQ_ACTION_MASK) or data not in _DATA or \
            action not in _ACTION:
        raise Refused(Fault.INVALID, f"SET_IRQS flags {req.flags:#x}: need one DATA and "
                      "one ACTION flag")
    if req.index >= NUM_IRQS:
        raise Refused(Fault.INVALID, f"no irq index {req.index}")
    bool_bytes = req.count if data == IrqSetFlag.DATA_BOOL else 0
    if req.argsz < IrqSet.SIZE + bool_bytes:
        raise Refused(Fault.INVALID, f"argsz {req.argsz} < {IrqSet.SIZE + bool_bytes}")
    if len(tail) != bool_bytes:
        raise Refused(Fault.INVALID, f"SET_IRQS carries {len(tail)} data bytes, "
                      f"expected {bool_bytes}")
    if fds and data != IrqSetFlag.DATA_EVENTFD:
        raise Refused(Fault.INVALID, "fds without DATA_EVENTFD")
    if req.count == 0:
        if data == IrqSetFlag.DATA_NONE and action == IrqSetFlag.ACTION_TRIGGER and \
                req.start == 0:
            table.disable(req.index)
            return
        raise Refused(Fault.INVALID, "SET_IRQS with count 0")
    available = infos[req.index].count
    if req.start + req.count > available:
        raise Refused(Fault.INVALID, f"vectors {req.start}..{req.start + req.count - 1} of "
                      f"irq index {req.index}, which has {available}")
    vectors = range(req.start, req.start + req.count)
    if data == IrqSetFlag.DATA_EVENTFD:
        if action != IrqSetFlag.ACTION_TRIGGER:
            raise Refused(Fault.INVALID, "eventfds for MASK/UNMASK are not supported")
        if not fds:
            table.deassign(req.index, vectors)
            return
        if len(fds) != req.count:
            raise Refused(Fault.INVALID, f"{len(fds)} fds for {req.count} vectors")
        for fd in fds:
            if not is_eventfd(fd):
                raise Refused(Fault.INVALID, "SET_IRQS fd is not an eventfd")
        table.assign(req.index, req.start, list(fds))
        fds.clear()
        return
    if data == IrqSetFlag.DATA_BOOL:
        selected = [v for v, flag in zip(vectors, tail, strict=True) if flag]
    else:
        selected = list(vectors)
    if action == IrqSetFlag.ACTION_TRIGGER:
        for v in selected:
            table.trigger(req.index, v)
    elif action == IrqSetFlag.ACTION_MASK:
        table.mask(req.index, selected)
    else:
        table.unmask(req.index, selected)


def is_eventfd(fd: int) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False
