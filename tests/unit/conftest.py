"""Unit tests get a 30 s timeout each (the global one, for VM tests, is 300 s).

A unit test runs in well under a second; one that loops (an off-by-one in the slow DMA
path once did) should fail fast rather than hold CI for five minutes. A test with its own
`@pytest.mark.timeout(...)` keeps it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

UNIT_TIMEOUT_S = 30
_UNIT = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(_UNIT) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(UNIT_TIMEOUT_S))
