"""services/runtime/spawn.py: children die with their parent, and the exec wrapper starts
nothing for a parent that is gone. Plain Python children only: no nats-server or Envoy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.runtime.spawn import die_with_parent, popen

ROOT = Path(__file__).parents[2]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="PR_SET_PDEATHSIG is Linux's")

# spawns `sleep 60` through the helper, says its pid, then waits to be killed
_INTERMEDIATE = """\
import sys, time
from services.runtime.spawn import popen
child = popen(["sleep", "60"])
print(child.pid, flush=True)
time.sleep(60)
"""


def _state(pid: int) -> str | None:
    """The process's state letter from /proc (R, S, Z, ...), or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat.rpartition(")")[2].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except (FileNotFoundError, ProcessLookupError):
        return []


def _until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.02)


@linux_only
def test_a_child_dies_with_its_killed_parent() -> None:
    intermediate = subprocess.Popen([sys.executable, "-c", _INTERMEDIATE], cwd=ROOT,
                                    stdout=subprocess.PIPE, start_new_session=True)
    child = 0
    try:
        assert intermediate.stdout is not None
        child = int(intermediate.stdout.readline())
        _until(lambda: _cmdline(child) == ["sleep", "60"], "the child to exec sleep")

        intermediate.send_signal(signal.SIGKILL)
        intermediate.wait(timeout=10)
        # reparented to init (or a subreaper), which reaps it: gone, or a zombie until then
        _until(lambda: _state(child) in (None, "Z", "X"), "the orphan to die", timeout=60)
    finally:
        if intermediate.poll() is None:
            intermediate.kill()
            intermediate.wait()
        if intermediate.stdout is not None:
            intermediate.stdout.close()
        if child and _cmdline(child) == ["sleep", "60"]:
            os.kill(child, signal.SIGKILL)


@linux_only
def test_the_wrapper_starts_nothing_once_its_parent_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # wrapped by a process that then exits: the wrapper's parent is this one instead
    wrapped = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, sys\n"
         "from services.runtime.spawn import die_with_parent\n"
         "print(json.dumps(die_with_parent(sys.argv[1:])))", "touch", str(marker)],
        cwd=ROOT, capture_output=True, check=True, timeout=30).stdout)

    refused = subprocess.run(wrapped, capture_output=True, text=True, timeout=30)

    assert refused.returncode != 0
    assert "has exited" in refused.stderr and "not starting touch" in refused.stderr
    assert not marker.exists()


def test_the_caller_sees_the_programs_own_pid() -> None:
    with popen([sys.executable, "-c", "import os; print(os.getpid())"],
               stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert int(out) == proc.pid


@linux_only
def test_the_program_gets_the_environment_as_given() -> None:
    # no LANG: the wrapping interpreter coerces its C locale (PEP 538), the program must not
    env = {"PATH": os.environ["PATH"], "MESHLOG_SPAWN_TEST": "a=b"}
    with popen(["env"], env=env, stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=30)
    assert sorted(out.decode().splitlines()) == ["MESHLOG_SPAWN_TEST=a=b", f"PATH={env['PATH']}"]


@linux_only
def test_a_program_not_on_path_fails_with_127() -> None:
    done = subprocess.run(die_with_parent(["meshlog-no-such-program"]), capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 127
    assert "meshlog-no-such-program: not found" in done.stderr


def test_options_that_run_code_before_exec_are_refused() -> None:
    with pytest.raises(TypeError, match="preexec_fn"):
        popen(["true"], preexec_fn=lambda: None)  # type: ignore[call-arg]  # what is refused
