"""A private directory for sockets in the system temp directory, named when its owner is
made and created only when the owner starts.

The path is known at once (a command line names the sockets in it before anything runs),
but nothing exists on disk until `create()`, so an object that is made and never started
(a `--show-command`, a unit test, a constructor that fails later) leaves nothing behind.
`remove()` removes the directory only if `create()` made it, so it is safe on every way
out, including a `create()` that failed because the name was taken.

    d = SocketDir("eeh-vm-")       # d.path: /tmp/eeh-vm-<12 hex digits>, not created
    d.create()                     # mode 0700; FileExistsError if the name is taken
    ...
    d.remove()                     # whatever is in it; harmless if never created
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path


class SocketDir:
    def __init__(self, prefix: str) -> None:
        self.path = Path(tempfile.gettempdir()) / f"{prefix}{secrets.token_hex(6)}"
        self._created = False

    def create(self) -> Path:
        """Make the directory, private to this user; an existing one is never reused."""
        os.mkdir(self.path, 0o700)
        self._created = True
        return self.path

    def remove(self) -> None:
        """Remove the directory and its contents, if `create()` made it."""
        if self._created:
            shutil.rmtree(self.path, ignore_errors=True)
            self._created = False
