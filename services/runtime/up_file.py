"""`<data-dir>/up.json`: what a running `meshlog up` tells the CLI and its user (the API, xDS
and NATS addresses, CA files, where the admin token is), and how a reader tells that the
process which wrote it is gone.

The CLI sends the data dir's admin token to the API up.json names (services.cli.client), so a
file left behind by a stopped `meshlog up` would hand that token to whatever control plane
runs on the same address later. Hence: `meshlog up` removes its up.json when it stops (any
exit that runs its `finally`: SIGINT, SIGTERM, a component's error), but only while the file
is still the one it wrote (another `meshlog up` on the data dir may have replaced it). A
crash (SIGKILL, power loss) still leaves it: the file records the writer's `pid` and `host`,
and a reader on the same host ignores it when that process is gone (`is_stale`). A process
of another pid namespace sharing the data dir (a container) has another host name, so its
file is never judged by a pid that means something else here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["UP_FILE", "is_stale", "remove_up_file", "write_up_file"]

UP_FILE = "up.json"


def write_up_file(data_dir: Path, where: Mapping[str, str]) -> str:
    """Write `where`, with this process's pid and host, as `<data_dir>/up.json` (whole: a
    reader never sees half of it); the text written, for `remove_up_file`."""
    text = json.dumps({**where, "pid": str(os.getpid()), "host": socket.gethostname()},
                      indent=2)
    path = data_dir / UP_FILE
    partial = path.with_name(f".{UP_FILE}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)
    return text


def remove_up_file(data_dir: Path, written: str) -> None:
    """Remove `<data_dir>/up.json` if it still holds `written` (`write_up_file`'s text);
    one another `meshlog up` wrote since stays."""
    path = data_dir / UP_FILE
    with contextlib.suppress(OSError):
        if path.read_text() == written:
            path.unlink()


def is_stale(doc: Mapping[str, Any]) -> bool:
    """`doc` (an up.json) was written on this host by a process that is no longer running.
    False when it does not say (an older `meshlog up`'s file, or a malformed pid) or names
    another host: then only the process that wrote it could tell."""
    pid = doc.get("pid")
    if doc.get("host") != socket.gethostname() or not isinstance(pid, str | int):
        return False
    try:
        number = int(pid)
    except ValueError:
        return False
    if number <= 0:  # os.kill(0 or -n, ...) would signal process groups
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # PermissionError: it runs, as another user
        return False
    return False
