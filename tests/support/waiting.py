"""Waiting in tests: for a condition (a bounded poll, never a sleep standing in for an
assertion) and for a short temporary directory."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def wait_for(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.005) -> bool:
    """Poll `cond` until it holds (True) or `timeout` seconds have passed (its last value).
    The timeout only catches a hang: make it generous."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def short_tmp(prefix: str = "drv") -> Path:
    """A new directory /tmp/eeh-<prefix>-*: short (AF_UNIX paths are), and named so the
    test session's leak check (tests/conftest.py) sees it if it is left behind."""
    return Path(tempfile.mkdtemp(prefix=f"eeh-{prefix}-"))  # the session's short temp dir
