"""What the driver tests used to import from here. The scripted platform is in
tests/support/scripted_platform.py (held to the real platform by the contract tests in
test_platform_contract.py); every other driver test runs against the real platform
(tests/support/platform_rig.py); `wait_for` and `short_tmp` are in
tests/support/waiting.py. Re-exported for the harness tests that still import them here.
"""

from __future__ import annotations

from hypervisor_shim.pe import HOST
from tests.support.scripted_platform import (
    FakeConfig,
    FakePe,
    LocalChannel,
    Recorder,
    ScriptedPlatform,
    ok,
    status,
)
from tests.support.waiting import short_tmp, wait_for

__all__ = ["HOST", "FakeConfig", "FakePe", "LocalChannel", "Recorder", "ScriptedPlatform",
           "ok", "short_tmp", "status", "wait_for"]
