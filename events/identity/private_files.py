"""Files only their owner may read (the secret key, NATS seeds, the admin token): mode 0600
from the moment they exist, and whole or absent, never half-written."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["write_private"]


def write_private(path: Path, data: bytes, *, replace: bool) -> bool:
    """Write `data` to `path` through a temporary file of its own (created 0600, fsynced).
    `replace`: rename it over `path`; else link it to `path` only if `path` does not exist
    yet, so of processes racing to create it one wins and none reads a partial file. Whether
    this call wrote `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:  # mkstemp makes it 0600
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
