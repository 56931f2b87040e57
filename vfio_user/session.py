"""The protocol core: one client's conversation with one function, no I/O.

`Session.process(frame)` takes one framed message (with the descriptors that came with
it) and returns the reply bytes, or None when no reply is due (posted messages, stray
replies). Every field is validated before use; a refused request gets an error reply with
the errno from `errors.errno_for`; a message with the NO_REPLY flag is never answered,
not even with an error (it is logged and counted). Every descriptor a frame brings is
either kept (eventfds) or closed before `process` returns. The server (`server.py`) and
tests drive this one message at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from vfio_user import codec as c
from vfio_user.contract import (
    NUM_IRQS,
    NUM_REGIONS,
    PciFunction,
    RegionFlag,
    RegionInfo,
)
from vfio_user.dma import DmaSpace
from vfio_user.errors import Fault, Refused, VfioUserError, errno_for
from vfio_user.framing import Frame, close_fds
from vfio_user.irqs import IrqTable
from vfio_user.irqset import apply_set_irqs
from vfio_user.memory import GuestMemory

log = logging.getLogger("vfio_user")

_LOGGED_POSTED_ERRORS = 20  # per session; later ones are only counted


@dataclass(frozen=True)
class ServerConfig:
    """What the server offers at VERSION; checked against QEMU's limits."""

    max_msg_fds: int = c.LIMIT_MAX_MSG_FDS
    max_data_xfer_size: int = c.DEFAULT_MAX_DATA_XFER
    max_dma_maps: int = c.LIMIT_MAX_DMA_MAPS
    pgsizes: int = c.PAGE_SIZE
    write_multiple: bool = True

    def __post_init__(self) -> None:
        bad = self.capabilities().limit_violations()
        if self.max_msg_fds < 1:
            bad.append("max_msg_fds must be at least 1")
        if self.max_data_xfer_size < c.PAGE_SIZE:
            bad.append("max_data_xfer_size must be at least 4096")
        if bad:
            raise ValueError("; ".join(bad))

    def capabilities(self) -> c.Capabilities:
        return c.Capabilities(self.max_msg_fds, self.max_data_xfer_size, self.pgsizes,
                              self.max_dma_maps, self.write_multiple)

    @property
    def max_request_size(self) -> int:
        """Largest request frame accepted; a larger size cannot be framed."""
        return c.HEADER_SIZE + max(c.RegionAccess.SIZE + self.max_data_xfer_size,
                                   c.WriteMultiHead.SIZE + c.WRITE_MULTI_MAX * c.WriteOne.SIZE)


class SessionState(Enum):
    AWAITING_VERSION = "awaiting-version"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class SessionStats:
    messages: int = 0
    replies: int = 0
    error_replies: int = 0
    posted: int = 0  # NO_REPLY messages processed
    posted_errors: int = 0  # NO_REPLY messages that failed (never answered)
    stray_replies: int = 0  # reply-type messages from the client (ignored)


# Reply capabilities in order of importance: what is dropped last when the client's
# VERSION request is too short to carry them all (the reply may not be longer).
_REPLY_CAPS = ("max_msg_fds", "max_data_xfer_size", "max_dma_maps", "pgsizes",
               "write_multiple")

_READ = int(RegionFlag.READ)
_HEADER = c.Header.STRUCT
_ACCESS = c.RegionAccess.STRUCT
_REGION_READ = int(c.Command.REGION_READ)
_PLAIN_READ_SIZE = c.HEADER_SIZE + c.RegionAccess.SIZE
_WRITE = int(RegionFlag.WRITE)
_Handler = Callable[["Session", c.Wire | None, bytes, list[int]], bytes]


class Session:
    """Attaches the function to fresh guest memory and interrupts; detaches at close."""

    def __init__(self, function: PciFunction, config: ServerConfig) -> None:
        self.function = function
        self.config = config
        self.state = SessionState.AWAITING_VERSION
        self._commands = _BEFORE_VERSION  # what the state accepts (see _enter)
        self.stats = SessionStats()
        self.client_caps: c.Capabilities | None = None
        self.write_multiple = False
        self.memory = GuestMemory()
        self.dma = DmaSpace(self.memory, config.max_dma_maps)
        self.irqs = IrqTable()
        self._regions: Sequence[RegionInfo] = _checked_regions(function)
        self._access = _access_table(self._regions)
        function.attach(self.memory, self.irqs)

    def _enter(self, state: SessionState) -> None:
        self.state = state
        self._commands = (_AFTER_VERSION if state is SessionState.READY else
                          _BEFORE_VERSION if state is SessionState.AWAITING_VERSION else
                          _NONE)

    def close(self) -> None:
        """The client went away: stop the function's DMA and interrupts, keep its state."""
        if self.state is SessionState.CLOSED:
            return
        self._enter(SessionState.CLOSED)
        try:
            self.function.detach()
        except Exception:
            log.exception("%s: detach failed", self.function.name)
        self.irqs.close()
        self.dma.unmap_all()

    # ------------------------------------------------------------------ the step

    def process(self, frame: Frame) -> bytes | None:
        header, fds = frame.header, frame.fds
        flags = header.flags
        self.stats.messages += 1
        try:
            if flags & c.TYPE_MASK == c.TYPE_REPLY:
                self.stats.stray_replies += 1
                log.warning("%s: ignoring a reply from the client (id %d, %s)",
                            self.function.name, header.id, c.command_name(header.command))
                return None
            payload = self._dispatch(frame)
        except Exception as e:
            return self._failed(header, e)
        finally:
            if fds:
                close_fds(fds)  # whatever a handler did not take
        if flags & c.NO_REPLY:
            self.stats.posted += 1
            return None
        self.stats.replies += 1
        return c.pack_reply(header, payload)

    def plain_read(self, message: bytes) -> bytes | None:
        """The reply to `message` if it is one whole plain REGION_READ (no flags, its exact
        size; no fds may come with it), else None: then frame it and `process` it. The
        same reply, checks and stats as `process`, without building a frame (a guest's
        MMIO read is this message)."""
        if len(message) != _PLAIN_READ_SIZE or self._commands is not _AFTER_VERSION:
            return None
        msg_id, command, size, flags, _ = _HEADER.unpack_from(message)
        if command != _REGION_READ or size != _PLAIN_READ_SIZE or flags:
            return None
        offset, region, count = _ACCESS.unpack_from(message, c.HEADER_SIZE)
        self.stats.messages += 1
        try:
            data = self._read(region, offset, count)
        except Exception as e:
            return self._failed(c.Header(msg_id, command, size, flags, 0), e)
        self.stats.replies += 1
        return _HEADER.pack(msg_id, command, size + count, c.TYPE_REPLY, 0) + \
            message[c.HEADER_SIZE:] + data

    def _failed(self, header: c.Header, e: Exception) -> bytes | None:
        if not isinstance(e, VfioUserError | OSError):  # MapError, DmaError included
            log.exception("%s: %s failed unexpectedly", self.function.name,
                          c.command_name(header.command))
        errno = errno_for(e)
        if header.flags & c.NO_REPLY:
            self.stats.posted_errors += 1
            if self.stats.posted_errors <= _LOGGED_POSTED_ERRORS:
                log.warning("%s: posted %s failed (errno %d, not answered): %s",
                            self.function.name, c.command_name(header.command), errno, e)
            return None
        self.stats.error_replies += 1
        log.info("%s: %s refused (errno %d): %s", self.function.name,
                 c.command_name(header.command), errno, e)
        return c.pack_error(header, errno)

    def _dispatch(self, frame: Frame) -> bytes:
        header = frame.header
        entry = self._commands.get(header.command)
        if entry is None:
            raise self._refusal(header.command)
        command, handler, layout, size, tail_ok = entry
        fds = frame.fds
        if fds or frame.fds_truncated:
            if frame.fds_truncated or len(fds) > self.config.max_msg_fds:
                raise Refused(Fault.INVALID, f"more than {self.config.max_msg_fds} fds")
            if command not in (c.Command.DMA_MAP, c.Command.DEVICE_SET_IRQS):
                raise Refused(Fault.INVALID, f"{command.name} carries no fds")
        payload = frame.payload
        if len(payload) != size and (len(payload) < size or not tail_ok):
            raise Refused(Fault.INVALID, f"{command.name} payload is {len(payload)} bytes, "
                          f"its layout {size}{' or more' if tail_ok else ''}")
        # the size was checked: the fixed part decodes without another length check
        fixed = (layout.from_fields(layout.STRUCT.unpack_from(payload)) if layout is not None
                 else None)
        return handler(self, fixed, payload[size:] if tail_ok else b"", fds)

    def _refusal(self, command: int) -> Refused:
        """Why a command this state does not accept is refused."""
        if command not in _TABLE:
            return Refused(Fault.UNSUPPORTED if command == c.Command.DEVICE_GET_REGION_IO_FDS
                           else Fault.NO_SUCH_COMMAND, f"{c.command_name(command)} is not served")
        if self.state is SessionState.CLOSED:
            return Refused(Fault.IO, "session closed")
        if self.state is SessionState.AWAITING_VERSION:
            return Refused(Fault.INVALID, "VERSION must come first")
        return Refused(Fault.INVALID, "VERSION already done")

    # ------------------------------------------------------------------ handlers

    def _version(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.Version)
        caps = c.Capabilities.from_json(tail)
        if fixed.major != c.MAJOR:
            raise Refused(Fault.UNSUPPORTED, f"major version {fixed.major} (served: {c.MAJOR})")
        ours = self.config.capabilities()
        offered = [k for k in _REPLY_CAPS if k in caps.present]
        write_multiple = ours.write_multiple and caps.write_multiple
        reply_caps = c.Capabilities(ours.max_msg_fds, ours.max_data_xfer_size, ours.pgsizes,
                                    ours.max_dma_maps, write_multiple)
        room = c.Version.SIZE + len(tail)  # the reply may not be longer than the request
        while offered and c.Version.SIZE + len(reply_caps.to_json(tuple(offered))) > room:
            offered.pop()
        data = reply_caps.to_json(tuple(offered)) if offered else b""
        self.client_caps = caps
        self.write_multiple = write_multiple and "write_multiple" in offered
        self._enter(SessionState.READY)
        return c.encode_version(c.MAJOR, min(fixed.minor, c.MINOR), data)

    def _dma_map(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.DmaMap)
        _argsz(fixed.argsz, c.DmaMap.SIZE)
        if len(fds) > 1:
            raise Refused(Fault.INVALID, f"DMA_MAP with {len(fds)} fds")
        self.dma.map(fixed, fds[0] if fds else None)  # the mmap holds its own fd
        return b""

    def _dma_unmap(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.DmaUnmap)
        _argsz(fixed.argsz, c.DmaUnmap.SIZE)
        if fixed.flags & ~int(c.DmaUnmapFlag.ALL):
            raise Refused(Fault.INVALID, f"unsupported DMA_UNMAP flags {fixed.flags:#x}")
        if fixed.flags & c.DmaUnmapFlag.ALL:
            if fixed.addr or fixed.size:
                raise Refused(Fault.INVALID, "DMA_UNMAP of all with an address or size")
            self.dma.unmap_all()
        else:
            self.dma.unmap(fixed.addr, fixed.size)
        return c.DmaUnmap(c.DmaUnmap.SIZE, fixed.flags, fixed.addr, fixed.size).pack()

    def _get_info(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.DeviceInfo)
        _argsz(fixed.argsz, c.DeviceInfo.SIZE)
        return c.DeviceInfo(c.DeviceInfo.SIZE, c.DeviceFlag.RESET | c.DeviceFlag.PCI,
                            NUM_REGIONS, NUM_IRQS).pack()

    def _get_region_info(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.RegionInfo)
        # The reply never carries capabilities, so the full reply is the fixed struct: a
        # smaller argsz cannot hold it (VFIO refuses that too); a larger one gets argsz=32.
        _argsz(fixed.argsz, c.RegionInfo.SIZE)
        if fixed.index >= NUM_REGIONS:
            raise Refused(Fault.INVALID, f"no region {fixed.index}")
        info = self._regions[fixed.index]
        flags = int(info.flags) & (RegionFlag.READ | RegionFlag.WRITE)  # never MMAP
        return c.RegionInfo(c.RegionInfo.SIZE, flags, fixed.index, 0, info.size, 0).pack()

    def _get_irq_info(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.IrqInfo)
        _argsz(fixed.argsz, c.IrqInfo.SIZE)
        if fixed.index >= NUM_IRQS:
            raise Refused(Fault.INVALID, f"no irq index {fixed.index}")
        info = self.function.irqs()[fixed.index]
        return c.IrqInfo(c.IrqInfo.SIZE, int(info.flags), fixed.index, info.count).pack()

    def _set_irqs(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.IrqSet)
        apply_set_irqs(self.irqs, self.function.irqs(), fixed, tail, fds)
        return b""

    def _region_read(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.RegionAccess)
        offset, region, count = fixed
        return fixed.pack() + self._read(region, offset, count)

    def _read(self, region: int, offset: int, count: int) -> bytes:
        self._check_access(region, offset, count, _READ)
        data = self.function.region_read(region, offset, count)
        if len(data) != count:
            raise Refused(Fault.IO, f"device returned {len(data)} of {count} bytes")
        return data

    def _region_write(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.RegionAccess)
        offset, region, count = fixed
        if len(tail) != count:
            raise Refused(Fault.INVALID, f"count {count} but {len(tail)} data bytes")
        self._check_access(region, offset, count, _WRITE)
        self.function.region_write(region, offset, tail)
        return fixed.pack()

    def _write_multi(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        assert isinstance(fixed, c.WriteMultiHead)
        if not self.write_multiple:
            raise Refused(Fault.UNSUPPORTED, "write_multiple was not negotiated")
        if not 1 <= fixed.wr_cnt <= c.WRITE_MULTI_MAX:
            raise Refused(Fault.INVALID, f"wr_cnt {fixed.wr_cnt} not in 1..200")
        if len(tail) != fixed.wr_cnt * c.WriteOne.SIZE:
            raise Refused(Fault.INVALID, f"{fixed.wr_cnt} writes need "
                          f"{fixed.wr_cnt * c.WriteOne.SIZE} bytes, got {len(tail)}")
        writes = [c.WriteOne.unpack(tail, i * c.WriteOne.SIZE) for i in range(fixed.wr_cnt)]
        for i, w in enumerate(writes):  # all or nothing: validate every write before doing any
            try:
                if w.count > c.WRITE_MULTI_DATA:
                    raise Refused(Fault.INVALID, f"count {w.count} > {c.WRITE_MULTI_DATA}")
                self._check_access(w.region, w.offset, w.count, _WRITE)
            except Refused as e:  # the reply's errno is the element's; the log names it
                raise Refused(e.fault, f"write {i} of {len(writes)}: {e.reason}") from None
        # Invariant: each write, in order, is what a REGION_WRITE of it does (the same
        # function path: a frozen PE's write dropped by the model as a single one is)
        for w in writes:
            self.function.region_write(w.region, w.offset, w.data[:w.count])
        return fixed.pack()

    def _reset(self, fixed: c.Wire | None, tail: bytes, fds: list[int]) -> bytes:
        self.function.device_reset()
        self._regions = _checked_regions(self.function)
        self._access = _access_table(self._regions)
        self.irqs.clear_pending()  # eventfds and masks stay (FLR and reset keep them)
        return b""

    def _check_access(self, region: int, offset: int, count: int, need: int) -> None:
        if region >= NUM_REGIONS:
            raise Refused(Fault.INVALID, f"no region {region}")
        size, flags = self._access[region]
        if not flags & need:  # absent regions (size 0) allow nothing
            if not size:
                raise Refused(Fault.INVALID, f"no region {region}")
            raise Refused(Fault.INVALID, f"region {region} does not allow "
                          f"{'writes' if need == _WRITE else 'reads'}")
        if not 0 < count <= self.config.max_data_xfer_size:
            if count == 0:
                raise Refused(Fault.INVALID, "access of 0 bytes")
            raise Refused(Fault.TOO_BIG, f"count {count} > max_data_xfer_size")
        if offset + count > size:
            raise Refused(Fault.BAD_ADDRESS, f"region {region} access {offset:#x}+{count} "
                          f"outside its {size:#x} bytes")


def _argsz(argsz: int, minimum: int) -> None:
    if argsz < minimum:
        raise Refused(Fault.INVALID, f"argsz {argsz} < {minimum}")


def _access_table(regions: Sequence[RegionInfo]) -> list[tuple[int, int]]:
    """(size, READ/WRITE flags) per region index, plain ints for the hot path; a region
    of size 0 is absent and allows nothing."""
    return [(r.size, int(r.flags) & (_READ | _WRITE) if r.size else 0) for r in regions]


def _checked_regions(function: PciFunction) -> Sequence[RegionInfo]:
    regions = tuple(function.regions())
    if len(regions) != NUM_REGIONS or any(r.index != i for i, r in enumerate(regions)):
        raise ValueError(f"{function.name}: regions() must list {NUM_REGIONS} regions "
                         "in index order")
    return regions


_HANDLERS: dict[c.Command, _Handler] = {
    c.Command.VERSION: Session._version,
    c.Command.DMA_MAP: Session._dma_map,
    c.Command.DMA_UNMAP: Session._dma_unmap,
    c.Command.DEVICE_GET_INFO: Session._get_info,
    c.Command.DEVICE_GET_REGION_INFO: Session._get_region_info,
    c.Command.DEVICE_GET_IRQ_INFO: Session._get_irq_info,
    c.Command.DEVICE_SET_IRQS: Session._set_irqs,
    c.Command.REGION_READ: Session._region_read,
    c.Command.REGION_WRITE: Session._region_write,
    c.Command.REGION_WRITE_MULTI: Session._write_multi,
    c.Command.DEVICE_RESET: Session._reset,
}

# command number -> (command, handler, request layout, its size, variable tail allowed):
# `codec.SPECS` flattened for the hot path. Unknown and unserved commands are absent.
_Entry = tuple[c.Command, _Handler, type[c.Wire] | None, int, bool]


def _entry(cmd: c.Command, handler: _Handler) -> _Entry:
    layout = c.SPECS[cmd].request
    return cmd, handler, layout, layout.SIZE if layout else 0, c.SPECS[cmd].request_tail


_TABLE: dict[int, _Entry] = {int(cmd): _entry(cmd, h) for cmd, h in _HANDLERS.items()}
# What each state accepts: VERSION only before it, everything else after (none once closed).
_BEFORE_VERSION: Mapping[int, _Entry] = {int(c.Command.VERSION): _TABLE[int(c.Command.VERSION)]}
_AFTER_VERSION: Mapping[int, _Entry] = {
    k: v for k, v in _TABLE.items() if k != int(c.Command.VERSION)}
_NONE: Mapping[int, _Entry] = {}
