"""`<data-dir>/up.json` (`meshlog up`) and `<data-dir>/api.json` (`meshlog api`): where a running
control plane tells the CLI and its user it listens (the API, xDS and NATS addresses, CA files,
where the admin token is), and how a reader tells that the process which wrote it is gone.

The CLI sends the data dir's admin token to the API such a file names (services.cli.client), so
a file left behind by a stopped process would hand that token to whatever control plane runs
on the same address later. Hence: the writer removes its file when it stops (any exit that runs
its `finally`: SIGINT, SIGTERM, a component's error), but only while the file is still the one
it wrote (another process on the data dir may have replaced it). A crash (SIGKILL, power loss)
still leaves it, so the file records its writer (`writer_fields`): `pid`, `host`, and on Linux
the process's start time (`started`, clock ticks after boot, /proc/<pid>/stat field 22), the
kernel's `boot_id` and the writer's PID namespace (`pid_namespace`). A reader judges the file
(`judge`):

- gone: the system has booted since (another `boot_id` on the same host), no process has the
  pid, or the process that has it now started at another time (the pid was handed on);
- running: the pid's process is the writer (its start time matches, or the file does not record
  one: an older release's, judged by the pid alone);
- unchecked: the file was written on another host or in another PID namespace (a container
  sharing the data dir: its pid means another process here), or does not say who wrote it (an
  older release's api.json, an up.json before pids). Nothing here can tell whether that
  process runs; the CLI takes such a file at its word and says so (services.cli.client).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from events.identity.private_files import write_private

__all__ = ["UP_FILE", "Writer", "judge", "remove_named_file", "write_named_file",
           "writer_fields"]

UP_FILE = "up.json"


class Writer(NamedTuple):
    """What a reader can tell of the process that wrote a file (`judge`)."""

    state: Literal["running", "gone", "unchecked"]
    why: str
    """Said to the user: why it is gone, or why it cannot be checked ("" when running)."""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int | str) -> str | None:
    """The start time of process `pid` (clock ticks after boot, proc(5) field 22), or None when
    there is no such process or no /proc."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rpartition(")")[2].split()  # after `comm`, which may hold spaces and ")"
    return fields[19] if len(fields) > 19 else None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def writer_fields() -> dict[str, str]:
    """This process, as a file it writes records it (module docstring); no Linux fields where
    there is no /proc."""
    fields = {"pid": str(os.getpid()), "host": socket.gethostname()}
    for name, value in (("started", _start_ticks("self")),
                        ("boot_id", _read("/proc/sys/kernel/random/boot_id")),
                        ("pid_namespace", _pid_namespace())):
        if value:
            fields[name] = value
    return fields


def write_named_file(data_dir: Path, name: str, where: Mapping[str, str], *,
                     private: bool = False) -> str:
    """Write `where` with this process's `writer_fields` as `<data_dir>/<name>` (whole: a
    reader never sees half of it; `private`: 0600); the text written, for
    `remove_named_file`."""
    text = json.dumps({**where, **writer_fields()}, indent=2)
    path = data_dir / name
    if private:
        write_private(path, text.encode(), replace=True)
        return text
    partial = path.with_name(f".{name}.{os.getpid()}")
    partial.write_text(text)
    os.replace(partial, path)
    return text


def remove_named_file(data_dir: Path, name: str, written: str) -> None:
    """Remove `<data_dir>/<name>` if it still holds `written` (`write_named_file`'s text); one
    another process wrote since stays."""
    path = data_dir / name
    with contextlib.suppress(OSError):
        if path.read_text() == written:
            path.unlink()


def judge(doc: Mapping[str, Any]) -> Writer:
    """Whether the process that wrote `doc` (an up.json or api.json) still runs (module
    docstring)."""
    pid, host = doc.get("pid"), doc.get("host")
    try:
        number = int(pid) if isinstance(pid, str | int) else 0
    except ValueError:
        number = 0
    if number <= 0 or not isinstance(host, str):  # os.kill(0 or -n) would signal groups
        return Writer("unchecked", "it does not say which process wrote it (an older "
                                   "release's file)")
    here = socket.gethostname()
    if host != here:
        return Writer("unchecked", f"it was written on host {host!r} (this is {here!r}), "
                                   f"where process {number} cannot be checked from here")
    boot = _read("/proc/sys/kernel/random/boot_id")
    if doc.get("boot_id") not in (None, boot) and boot is not None:
        return Writer("gone", f"process {number} wrote it before the system last started")
    namespace = doc.get("pid_namespace")
    ours = _pid_namespace()
    if namespace is not None and ours is not None and namespace != ours:
        return Writer("unchecked", f"it was written in another PID namespace ({namespace}, "
                                   f"this is {ours}: a container sharing the data dir), where "
                                   f"process {number} cannot be checked from here")
    another_user = False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return Writer("gone", f"process {number}, which wrote it, is no longer running")
    except PermissionError:
        another_user = True  # it runs, as another user: its start time says if it is the writer
    except (OSError, OverflowError):
        return Writer("unchecked", f"its pid {pid!r} is no process id here")
    started = doc.get("started")
    if started is None:
        return Writer("running", "")  # an older release's file: the pid is all it says
    now = _start_ticks(number)
    if now is None and not Path("/proc/self/stat").exists():
        return Writer("running", "")  # no /proc to read here: the pid is all we can check
    if now is None and another_user:  # /proc mounted with hidepid: its stat is not ours to read
        return Writer("unchecked", f"process {number} runs as another user whose /proc entry "
                                   "is hidden here, so whether it wrote it cannot be checked")
    if now != str(started):
        return Writer("gone", f"process {number}, which wrote it, is no longer running (pid "
                              f"{number} is another process's now)")
    return Writer("running", "")
