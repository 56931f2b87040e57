"""The platform-call protocol's wire codec, shared by the server and the client: the
messages (Request, Reply, Event), one line to a message and back (strict JSON, bounded
length and nesting), and a stream split into lines. `eeh_abi.hcall` is the protocol's
reference (its module docstring, docs/platform-calls.md) and re-exports every name here;
this module holds no I/O and no threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from eeh_abi import strict_json
from eeh_abi.schema import BATCHED_PES, MAX_BATCH, QUIET

VERSION = 1
MAX_LINE = 64 * 1024
MAX_DEPTH = 32  # JSON nesting of a message (arrays and objects), the message itself included


class HcallError(Exception):
    """Root of the exceptions of eeh_abi.hcall."""


class DecodeError(HcallError):
    """A line that is not a valid message of this protocol."""

    def __init__(self, reason: str, msg_id: object = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.msg_id = msg_id


@dataclass(frozen=True)
class Request:
    id: int
    call: str
    args: Mapping[str, Any] = field(default_factory=dict)
    quiet: bool = False  # answered only if refused or failed (module docstring)


@dataclass(frozen=True)
class Reply:
    id: int | None
    status: int
    ret: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 0

    def get(self, key: str, default: Any = None) -> Any:
        return self.ret.get(key, default)


@dataclass(frozen=True)
class Event:
    name: str
    pe: int | None
    data: Mapping[str, Any]
    t: float  # host monotonic time of the event


Message = Request | Reply | Event


def unbatch(ev: Event) -> list[Event]:
    """The events a (decoded) event line stands for: one per PE of a batched event, each
    without `pes`; the event itself otherwise."""
    pes = ev.data.get(BATCHED_PES)
    if not isinstance(pes, list):
        return [ev]
    data = {k: v for k, v in ev.data.items() if k != BATCHED_PES}
    return [Event(ev.name, pe, data, ev.t) for pe in pes]


# ---------------------------------------------------------------------------- codec
def request_tail(call: str, args: Mapping[str, Any]) -> bytes:
    """A request's line after its id (`request_line`): its call and arguments, encoded
    once, before the id is known (a channel gives ids under its lock)."""
    try:
        text = strict_json.dumps({"call": call, "args": dict(args)}, default=jsonable)
    except strict_json.JsonError as e:
        raise HcallError(f"message cannot be sent: {e.reason}") from None
    return text[1:].encode()  # '"call":...,"args":{...}}'


_QUIET_TAIL = b',"' + QUIET.encode() + b'":true}'


def request_line(msg_id: int, tail: bytes, quiet: bool = False) -> bytes:
    """The request's line: what `encode(Request(...))` writes, from its `request_tail`."""
    line = b'{"v":%d,"id":%d,%s\n' % (VERSION, msg_id, tail[:-1] + _QUIET_TAIL if quiet
                                     else tail)
    if len(line) > MAX_LINE:
        raise HcallError(f"message of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def encode(msg: Message) -> bytes:
    obj: dict[str, Any] = {"v": VERSION}
    if isinstance(msg, Request):
        return request_line(msg.id, request_tail(msg.call, msg.args), msg.quiet)
    if isinstance(msg, Reply):
        obj.update(id=msg.id, status=msg.status)
        if msg.ret:
            obj["ret"] = dict(msg.ret)
        if msg.error is not None:
            obj["error"] = msg.error
    else:
        obj.update(event=msg.name, pe=msg.pe, data=dict(msg.data), t=msg.t)
    try:
        line = strict_json.dumps(obj, default=jsonable).encode() + b"\n"
    except strict_json.JsonError as e:
        raise HcallError(f"message cannot be sent: {e.reason}") from None
    if len(line) > MAX_LINE:
        raise HcallError(f"message of {len(line)} bytes exceeds {MAX_LINE}")
    return line


def jsonable(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


_REQUEST_KEYS = frozenset({"v", "id", "call", "args", QUIET})  # a request's members


def decode(line: bytes) -> Message:
    """One line (without or with its newline) to a message; DecodeError if malformed.

    Strict: UTF-8 only, no NaN/Infinity or numbers beyond a float's range, nesting at most
    MAX_DEPTH; never anything but DecodeError for any bytes at all."""
    if len(line) > MAX_LINE:
        raise DecodeError(f"line longer than {MAX_LINE} bytes")
    try:
        obj = strict_json.loads(line, max_depth=MAX_DEPTH)
    except strict_json.JsonError as e:
        reason = e.reason if isinstance(e, strict_json.TooDeep) else f"not JSON: {e.reason}"
        raise DecodeError(reason, _readable_id(line)) from None
    if not isinstance(obj, dict):
        raise DecodeError("a message is a JSON object")
    msg_id = obj.get("id")
    if obj.get("v") != VERSION:
        raise DecodeError(f"unsupported protocol version {obj.get('v')!r} (this is {VERSION})",
                          msg_id)
    if "call" in obj:
        if not isinstance(msg_id, int) or isinstance(msg_id, bool) or not 0 <= msg_id < 1 << 53:
            raise DecodeError("a request needs an integer id", None)
        call, args = obj["call"], obj.get("args", {})
        if not isinstance(call, str):
            raise DecodeError("call must be a string", msg_id)
        if not isinstance(args, dict):
            raise DecodeError("args must be an object", msg_id)
        if not obj.keys() <= _REQUEST_KEYS:
            raise DecodeError(f"unknown keys {sorted(obj.keys() - _REQUEST_KEYS)}", msg_id)
        quiet = obj.get(QUIET, False)
        if not isinstance(quiet, bool):
            raise DecodeError(f"{QUIET} must be true or false", msg_id)
        return Request(msg_id, call, args, quiet)
    if "status" in obj:
        status, ret, error = obj["status"], obj.get("ret", {}), obj.get("error")
        if not isinstance(status, int) or not isinstance(ret, dict):
            raise DecodeError("bad reply", msg_id)
        return Reply(msg_id if isinstance(msg_id, int) else None, status, ret,
                     error if isinstance(error, str) else None)
    if "event" in obj:
        name, pe, data, t = obj["event"], obj.get("pe"), obj.get("data", {}), obj.get("t", 0.0)
        if not isinstance(name, str) or not isinstance(data, dict) or \
                not (pe is None or isinstance(pe, int)) or not isinstance(t, (int, float)):
            raise DecodeError("bad event")
        pes = data.get(BATCHED_PES)
        if pes is not None and not (isinstance(pes, list) and 0 < len(pes) <= MAX_BATCH
                                    and all(type(x) is int for x in pes)):
            raise DecodeError(f"bad event: {BATCHED_PES} must be a list of 1..{MAX_BATCH} "
                              "PE addresses")
        return Event(name, pe, data, float(t))
    raise DecodeError("neither a request, a reply nor an event", msg_id)


def _readable_id(line: bytes) -> int | None:
    """A refused line's request id, when its top-level `id` member could be read before
    the line went wrong (a request id: an integer, 0 <= id < 2**53); else None."""
    msg_id = strict_json.leading_int(line, "id", max_depth=MAX_DEPTH)
    return msg_id if msg_id is not None and 0 <= msg_id < 1 << 53 else None


class LineBuffer:
    """Splits a byte stream into lines; an over-long line is skipped up to its end and
    reported once as a DecodeError in its place."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> list[bytes | DecodeError]:
        self._buf += data
        out: list[bytes | DecodeError] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > MAX_LINE:
                    if not self._skipping:
                        out.append(DecodeError(f"line longer than {MAX_LINE} bytes"))
                    self._skipping = True
                    self._buf.clear()
                return out
            line = bytes(self._buf[:nl])
            del self._buf[:nl + 1]
            if self._skipping:
                self._skipping = False
                continue
            if len(line) > MAX_LINE:
                out.append(DecodeError(f"line longer than {MAX_LINE} bytes"))
            elif line.strip():
                out.append(line)
