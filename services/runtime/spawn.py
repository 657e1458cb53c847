"""How meshlog starts child processes (nats-server, Envoy, its own processes): the one way.

Two rules, both owned here:

- No Python between fork and exec. A `preexec_fn` (or `user`, `group`, `extra_groups`) makes
  CPython's subprocess use fork() instead of vfork() and run code in the child before exec,
  the at-fork handlers gRPC registers (pthread_atfork, os.register_at_fork) included. In a
  process with busy gRPC threads that child can die before exec: SIGABRT after gRPC's
  "epoll_wait error: Bad file descriptor", or SIGSEGV. Without them CPython (>= 3.10, Linux)
  spawns with vfork/exec and runs nothing in the child. `spawn` and `popen` refuse them.
- On Linux, a child dies with its parent: a SIGKILLed (or OOM-killed) meshlog leaves no
  orphan nats-server holding its port and store. Without a pre-exec hook, prctl
  (PR_SET_PDEATHSIG) is made by a small exec wrapper instead (`die_with_parent`): a fresh
  `python -I -S` that sets the signal, checks its parent is still the one that started it
  (else the parent died before prctl, and nobody would ever send the signal), then execs the
  real program. The pid the caller sees is therefore the real program's once it has exec'd.

PR_SET_PDEATHSIG fires when the *thread* that spawned the child exits, not the process: spawn
from the event loop's thread or the main thread, never from a short-lived worker thread.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from typing import IO, TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack from Python 3.12

__all__ = ["ChildOptions", "die_with_parent", "popen", "spawn"]


class ChildOptions(TypedDict, total=False):
    """The subprocess options meshlog's children take; none of them runs code in the child."""

    stdin: int | IO[bytes] | IO[str] | None  # a file, a descriptor, PIPE, DEVNULL, STDOUT
    stdout: int | IO[bytes] | IO[str] | None
    stderr: int | IO[bytes] | IO[str] | None
    cwd: str | os.PathLike[str] | None
    env: Mapping[str, str] | None
    start_new_session: bool
    pass_fds: Collection[int]
    close_fds: bool


_FORKING_OPTIONS = frozenset({"preexec_fn", "user", "group", "extra_groups"})

# argv: parent pid, signal number, program, its arguments. Exit codes follow the shell's:
# 126 found but not executable, 127 not found; 1 for a parent that is already gone.
_WRAPPER = """\
import ctypes, os, shutil, signal, sys
def fail(code, message):
    sys.stderr.write(f"meshlog spawn: {message}\\n")
    sys.stderr.flush()
    os._exit(code)
parent, sig, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(1, sig, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG, linux/prctl.h
    fail(1, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(ctypes.get_errno())}")
if os.getppid() != parent:
    fail(1, f"parent {parent} has exited (now {os.getppid()}); not starting {argv[0]}")
program = argv[0] if os.sep in argv[0] else shutil.which(argv[0])
if program is None:
    fail(127, f"{argv[0]}: not found on PATH")
# what subprocess's restore_signals does; this interpreter ignored them again at start-up
for name in ("SIGPIPE", "SIGXFSZ"):
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.SIG_DFL)
# the environment as given, before this interpreter's start-up changed it (PEP 538's LC_CTYPE)
try:
    with open("/proc/self/environ", "rb") as given:
        env = dict(v.split(b"=", 1) for v in given.read().split(b"\\0") if b"=" in v)
except OSError:  # no /proc mounted
    env = os.environ
try:
    os.execve(program, argv, env)
except OSError as exc:
    fail(127 if isinstance(exc, FileNotFoundError) else 126, f"{program}: {exc.strerror}")
"""


def die_with_parent(argv: Sequence[str], sig: int = signal.SIGTERM) -> list[str]:
    """`argv` wrapped so that, on Linux, the program gets `sig` when this process's spawning
    thread dies; unchanged elsewhere. The wrapper exits non-zero without running the program
    if this process is already gone by the time it starts, or the program cannot be found."""
    if not argv:
        raise ValueError("an empty argv: nothing to run")
    if not sys.platform.startswith("linux"):
        return list(argv)
    # -I: no PYTHON* variables, nothing imported from the child's cwd; -S: no site, a fast
    # start. The program itself gets the environment as given (read back from /proc).
    return [sys.executable, "-I", "-S", "-c", _WRAPPER, str(os.getpid()), str(int(sig)),
            *argv]


async def spawn(argv: Sequence[str], **options: Unpack[ChildOptions]
                ) -> asyncio.subprocess.Process:
    """`asyncio.create_subprocess_exec` of `argv`, dying with this process (SIGTERM)."""
    _refuse_forking(options)
    program, *args = die_with_parent(argv)
    return await asyncio.create_subprocess_exec(program, *args, **options)


def popen(argv: Sequence[str], **options: Unpack[ChildOptions]) -> subprocess.Popen[bytes]:
    """`subprocess.Popen` of `argv` (binary pipes), dying with this process (SIGTERM)."""
    _refuse_forking(options)
    return subprocess.Popen(die_with_parent(argv), **options)


def _refuse_forking(options: Mapping[str, object]) -> None:
    forking = sorted(_FORKING_OPTIONS & options.keys())
    if forking:
        raise TypeError(f"{', '.join(forking)} would run code between fork and exec; "
                        "see services/runtime/spawn.py")
