"""vfio_user/README.md's examples run: every ```python block is executed as it stands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[3] / "vfio_user" / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)


def test_the_readme_has_the_toy_device_example() -> None:
    assert any("class Toy" in block and "Client.open" in block for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_python_block_runs(block: str) -> None:
    code = compile(block, f"{README}:python-block", "exec")
    exec(code, {"__name__": "vfio_user_readme_example"})
