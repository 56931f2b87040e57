"""A raw platform-call connection for tests: request lines written as bytes, every line
the platform writes back read as JSON, no client library in between (what a hostile or
an older guest sends is exactly what the platform gets)."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

SENTINEL = 9_000_001  # the id of the closing call: no test request uses it


def replies_to(path: Path, lines: list[bytes], timeout: float = 20.0
               ) -> list[dict[str, Any]]:
    """Send `lines` and a sentinel call (`query-partition`, answered always) on one
    connection to the platform-call socket `path`: every reply the platform writes, up to
    the sentinel's (pushed events skipped)."""
    sentinel = b'{"v":1,"id":%d,"call":"query-partition","args":{}}' % SENTINEL
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        s.settimeout(10)
        s.sendall(b"\n".join([*lines, sentinel]) + b"\n")
        buf, out = b"", []
        deadline = time.monotonic() + timeout
        while True:
            nl = buf.find(b"\n")
            if nl >= 0:
                msg = json.loads(buf[:nl])
                buf = buf[nl + 1:]
                if "event" not in msg:
                    out.append(msg)
                    if msg.get("id") == SENTINEL:
                        return out
                continue
            assert time.monotonic() < deadline, "no reply to the sentinel"
            chunk = s.recv(1 << 20)
            assert chunk, f"connection closed after {len(out)} replies"
            buf += chunk
