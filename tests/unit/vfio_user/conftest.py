"""Fixtures: a real server on its own loop thread, real sockets, a fake function."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from vfio_user_fakes import Rig

from vfio_user import Client


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="eeh-vu-"))  # the session's short temp dir
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def rig(sock_dir: Path) -> Iterator[Rig]:
    r = Rig(sock_dir)
    yield r
    r.thread.stop()


@pytest.fixture
def client(rig: Rig) -> Iterator[Client]:
    c = rig.client()
    yield c
    c.close()
