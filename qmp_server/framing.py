"""Cut a QMP input byte stream into JSON texts, and parse them.

QMP input is a stream of JSON values, not of lines: qemu.qmp sends each command with no
newline after it, and a person typing into socat may spread one over several lines. As
QEMU's JSON streamer does, the splitter counts braces and brackets outside strings and
hands a text over when they balance (a top-level scalar ends at whitespace or at its
closing quote). It never buffers more than one text, and that text at most `limit` bytes.

Choices where the QMP specification leaves room (docs/console.md says the same):

- A text larger than `limit` (1 MiB), or nested deeper than `max_depth` (64), gets one
  error reply ("QMP input exceeds ...") and is dropped up to its end: where its braces
  balance, or at the first newline, whichever comes first. So an oversized line costs
  one error and the next line is read as usual, without ever holding the line in memory.
- As the spec's "Forcing the JSON parser into known-good state" asks, an ASCII control
  character other than tab, CR and LF, or a 0xFF byte, resets the parser; so does a raw
  control character (a newline too) inside a string, which JSON forbids. A partial text
  dropped that way is reported with one error reply; a reset with nothing pending is silent.
- Single-quoted strings (QEMU's extension, with the `\\'` escape) are accepted and
  rewritten to JSON before parsing.
- Parsing is strict JSON (`eeh_abi.strict_json`, the project's one parser): no NaN or
  Infinity, no number too large for a double, no repeated key in an object, UTF-8 only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from eeh_abi import strict_json

MAX_MESSAGE = 1 << 20
MAX_DEPTH = 64

_STRING_STOP = re.compile(rb"[\"'\\\x00-\x1f\xff]")
_INSIDE_STOP = re.compile(rb"[{}\[\]\"'\n\x00-\x08\x0b\x0c\x0e-\x1f\xff]")
_BARE_STOP = re.compile(rb"[ \t\r\n{}\[\]\"'\x00-\x1f\xff]")
_WHITESPACE = frozenset(b" \t\r\n")
_OPEN = frozenset(b"{[")
_CLOSE = frozenset(b"}]")
_QUOTES = frozenset(b"\"'")
_DQUOTE, _SQUOTE, _BACKSLASH, _NEWLINE = ord('"'), ord("'"), ord("\\"), ord("\n")


def _is_reset_byte(c: int) -> bool:
    return (c < 0x20 and c not in _WHITESPACE) or c == 0xFF


@dataclass(frozen=True)
class Text:
    """One complete JSON text (single-quoted strings already rewritten)."""

    data: bytes


@dataclass(frozen=True)
class Malformed:
    """Input that can never become a command; `desc` is the error reply's desc."""

    desc: str


class JsonSplitter:
    """Feed bytes as they arrive; get back complete texts and errors, in input order."""

    def __init__(self, limit: int = MAX_MESSAGE, max_depth: int = MAX_DEPTH) -> None:
        self.limit = limit
        self.max_depth = max_depth
        self._buf = bytearray()
        self._depth = 0
        self._quote = 0  # inside a string: its quote byte
        self._escape = False  # inside a string, just after a backslash
        self._bare = False  # inside a top-level scalar (number, literal, or garbage)
        self._discard = False  # the current text broke a limit: drop it up to its end
        self._out: list[Text | Malformed] = []

    @property
    def idle(self) -> bool:
        """No partial text pending."""
        return not (self._buf or self._depth or self._quote or self._bare or self._discard)

    def feed(self, data: bytes) -> list[Text | Malformed]:
        self._out = []
        i, n = 0, len(data)
        while i < n:
            if self._escape:
                c = data[i]
                i += 1
                self._escape = False
                if c < 0x20 or c == 0xFF:
                    self._reset_by(c)
                else:  # \' is QEMU's extension; JSON knows every other escape
                    self._keep(b"'" if c == _SQUOTE else bytes((_BACKSLASH, c)))
            elif self._quote:
                i = self._in_string(data, i)
            elif self._bare:
                m = _BARE_STOP.search(data, i)
                if m is None:
                    self._keep(data[i:])
                    break
                self._keep(data[i:m.start()])
                i = m.start()  # the byte that ended it is read again at the top level
                self._finish()
            elif self._depth == 0:
                c = data[i]
                i += 1
                if c in _WHITESPACE:
                    continue
                if c in _OPEN:
                    self._depth = 1
                    self._keep(bytes((c,)))
                elif c in _QUOTES:
                    self._quote = c
                    self._keep(b'"')
                elif c in _CLOSE:
                    self._out.append(Malformed(f"JSON parse error, stray '{chr(c)}'"))
                elif _is_reset_byte(c):
                    self._reset_by(c)
                else:
                    self._bare = True
                    i -= 1
            else:
                i = self._in_container(data, i)
        return self._out

    def _in_string(self, data: bytes, i: int) -> int:
        m = _STRING_STOP.search(data, i)
        if m is None:
            self._keep(data[i:])
            return len(data)
        j = m.start()
        self._keep(data[i:j])
        c = data[j]
        if c == _BACKSLASH:
            self._escape = True
        elif c == self._quote:
            self._keep(b'"')
            self._quote = 0
            if self._depth == 0:
                self._finish()
        elif c == _DQUOTE:  # a double quote inside a single-quoted string
            self._keep(b'\\"')
        elif c == _SQUOTE:
            self._keep(b"'")
        else:
            self._reset_by(c)
        return j + 1

    def _in_container(self, data: bytes, i: int) -> int:
        m = _INSIDE_STOP.search(data, i)
        if m is None:
            self._keep(data[i:])
            return len(data)
        j = m.start()
        self._keep(data[i:j])
        c = data[j]
        if c in _OPEN:
            self._depth += 1
            self._keep(bytes((c,)))
            if self._depth > self.max_depth and not self._discard:
                self._overflow(f"QMP input exceeds the nesting limit of {self.max_depth}")
        elif c in _CLOSE:
            self._depth -= 1
            self._keep(bytes((c,)))
            if self._depth == 0:
                self._finish()
        elif c in _QUOTES:
            self._quote = c
            self._keep(b'"')
        elif c == _NEWLINE:
            if self._discard:  # an oversized text ends at the end of its line at the latest
                self._clear()
            else:
                self._keep(b"\n")
        else:
            self._reset_by(c)
        return j + 1

    def _keep(self, chunk: bytes) -> None:
        if self._discard or not chunk:
            return
        self._buf += chunk
        if len(self._buf) > self.limit:
            self._overflow(f"QMP input exceeds the size limit of {self.limit} bytes")

    def _overflow(self, desc: str) -> None:
        self._out.append(Malformed(desc))
        self._discard = True
        self._buf.clear()

    def _finish(self) -> None:
        if not self._discard:
            self._out.append(Text(bytes(self._buf)))
        self._clear()

    def _reset_by(self, c: int) -> None:
        if self._buf and not self._discard:
            self._out.append(Malformed(
                f"JSON parse error, invalid character 0x{c:02x}; pending input dropped"))
        self._clear()

    def _clear(self) -> None:
        self._buf.clear()
        self._depth = 0
        self._quote = 0
        self._escape = False
        self._bare = False
        self._discard = False


def parse(text: Text) -> object | Malformed:
    """The JSON value of `text`, or why it is not strict JSON (eeh_abi.strict_json)."""
    try:
        return strict_json.loads(text.data)
    except strict_json.JsonError as e:
        return Malformed(f"JSON parse error, {e.reason}")
