"""`<data-dir>/up.json` and api.json (services.runtime.up_file): a real `meshlog up` removes the
one it wrote when it stops (SIGINT, SIGTERM), not one another `meshlog up` wrote since; the CLI
ignores one a crash left (its process is gone, or its pid is another process's now), saying
why, so the data dir's admin token goes to no later control plane on the same address; one it
cannot check (another host) it takes at its word, saying so."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from services.runtime.up_file import Writer, judge, writer_fields
from tests.harness import VENV_BIN, finished_pid, free_port, meshlog_up, stop_process

integration = pytest.mark.integration


def _get_meshes_as(api: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`meshlog get meshes` with the admin token that `data_dir` has for `api`, if any (the
    API on loopback makes an anonymous caller admin, so only a token sent can be refused)."""
    return subprocess.run([str(VENV_BIN / "meshlog"), "--api", api, "get", "meshes"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MESHLOG_DATA_DIR": str(data_dir)})


@integration
def test_sigint_removes_up_json_so_the_next_control_plane_gets_no_token(
        tmp_path: Path) -> None:
    """The README's multi-zone quick start after `make up`: the first control plane stopped,
    another runs on its address; the CLI of the first's data dir sends it nothing."""
    port = free_port()
    with meshlog_up(tmp_path / "first", "--api-port", str(port)) as first:
        up = json.loads((first.data_dir / "up.json").read_text())
        assert (up["pid"], up["host"]) == (str(first.proc.pid), socket.gethostname())
    assert first.proc.returncode == 0  # stopped by the harness's SIGINT
    assert not (first.data_dir / "up.json").exists()
    with meshlog_up(tmp_path / "second", "--api-port", str(port)) as second:
        listed = _get_meshes_as(second.where["api"], first.data_dir)
        assert listed.returncode == 0, listed.stderr


@integration
def test_sigterm_removes_up_json(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        stop_process(cp.proc, signal.SIGTERM)
        assert cp.proc.returncode == 0, (cp.data_dir / "up.log").read_text()[-3000:]
        assert not (cp.data_dir / "up.json").exists()


@integration
def test_an_up_json_another_meshlog_up_wrote_since_stays(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        theirs = json.dumps({"api": "http://127.0.0.1:1", "pid": "1", "host": "elsewhere"})
        (cp.data_dir / "up.json").write_text(theirs)
    assert cp.proc.returncode == 0
    assert (cp.data_dir / "up.json").read_text() == theirs


@integration
def test_an_up_json_a_crash_left_is_ignored_with_a_note_saying_why(tmp_path: Path) -> None:
    """SIGKILL leaves up.json: the CLI sends no token for it, its pid being no process's, nor
    when the pid is another live process's (its start time is not the writer's), and says
    why. A file from another host is taken at its word, with a note; the token goes, and the
    refusal says what to do."""
    port = free_port()
    with meshlog_up(tmp_path / "first", "--api-port", str(port)) as first:
        stop_process(first.proc, signal.SIGKILL)
    left = first.data_dir / "up.json"
    crashed = json.loads(left.read_text())
    assert crashed["pid"] == str(first.proc.pid)
    with meshlog_up(tmp_path / "second", "--api-port", str(port)) as second:
        api = second.where["api"]
        listed = _get_meshes_as(api, first.data_dir)
        assert listed.returncode == 0, listed.stderr
        assert listed.stderr.count(f"note: ignoring {left}: process {first.proc.pid}, which "
                                   f"wrote it, is no longer running; a crash left it (remove "
                                   f"it)\n") == 1, listed.stderr

        # the pid handed on: a running process (this one), started at another time
        left.write_text(json.dumps({**crashed, "pid": str(os.getpid())}))
        reused = _get_meshes_as(api, first.data_dir)
        assert reused.returncode == 0, reused.stderr
        assert (f"note: ignoring {left}: process {os.getpid()}, which wrote it, is no longer "
                f"running (pid {os.getpid()} is another process's now)") in reused.stderr

        elsewhere = {**crashed, "host": "elsewhere"}
        left.write_text(json.dumps(elsewhere))
        refused = _get_meshes_as(api, first.data_dir)
        assert refused.returncode == 1
        assert refused.stderr.count(
            f"note: {left}: it was written on host 'elsewhere' (this is "
            f"{socket.gethostname()!r}), where process {first.proc.pid} cannot be checked from "
            f"here; taking it at its word that its API runs at {api} (remove the file if that "
            f"control plane has stopped)\n") == 1, refused.stderr
        assert "HTTP 401" in refused.stderr and "signature does not verify" in refused.stderr
        assert (f"If the API at {api} is another control plane's (the data dir's up.json or "
                f"api.json names {api}, left by a process that is gone), set "
                f"MESHLOG_DATA_DIR to that control plane's data dir") in refused.stderr, \
            refused.stderr


def _writer(data_dir: Path) -> subprocess.Popen[bytes]:
    """A real process that writes `data_dir`/api.json as `meshlog api` does, then waits."""
    script = ("import sys; from pathlib import Path; "
              "from services.runtime.up_file import write_named_file; "
              "write_named_file(Path(sys.argv[1]), 'api.json', {'api': 'http://127.0.0.1:1'}, "
              "private=True); print('written', flush=True); sys.stdin.read()")
    return subprocess.Popen([str(VENV_BIN / "python"), "-c", script, str(data_dir)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def test_a_file_is_judged_by_its_writer_process(tmp_path: Path) -> None:
    """Another process writes the file: running while it runs, gone once it exits."""
    proc = _writer(tmp_path)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"written\n"
        path = tmp_path / "api.json"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        doc = json.loads(path.read_text())
        assert (doc["pid"], doc["host"]) == (str(proc.pid), socket.gethostname())
        assert judge(doc) == Writer("running", "")
    finally:
        proc.communicate(b"")
    assert judge(doc) == Writer("gone", f"process {proc.pid}, which wrote it, is no longer "
                                        f"running")


def test_a_reused_pid_a_reboot_and_another_namespace_are_told_apart() -> None:
    mine = writer_fields()
    assert {"started", "boot_id", "pid_namespace"} <= mine.keys()  # Linux: /proc
    assert judge(mine) == Writer("running", "")
    pid = os.getpid()
    assert judge({**mine, "started": str(int(mine["started"]) + 1)}) == Writer(
        "gone", f"process {pid}, which wrote it, is no longer running (pid {pid} is another "
                f"process's now)")
    assert judge({**mine, "boot_id": "another-boot"}) == Writer(
        "gone", f"process {pid} wrote it before the system last started")
    assert judge({**mine, "pid_namespace": "pid:[1]"}) == Writer(
        "unchecked", f"it was written in another PID namespace (pid:[1], this is "
                     f"{mine['pid_namespace']}: a container sharing the data dir), where "
                     f"process {pid} cannot be checked from here")


def test_a_file_is_checked_only_when_it_names_a_process_of_this_host() -> None:
    here = socket.gethostname()
    assert judge({"pid": str(finished_pid()), "host": here}).state == "gone"
    assert judge({"pid": str(os.getpid()), "host": here}).state == "running"  # no start time
    assert judge({"pid": str(finished_pid()), "host": f"{here}-not"}).state == "unchecked"
    old = Writer("unchecked", "it does not say which process wrote it (an older release's file)")
    assert judge({"api": "http://127.0.0.1:5681"}) == old  # an older release's
    for pid in ("0", "-1", "x", ""):
        assert judge({"pid": pid, "host": here}) == old, pid
    assert judge({"pid": "9" * 30, "host": here}).state == "unchecked"
