"""`<data-dir>/up.json` (services.runtime.up_file): a real `meshlog up` removes the one it
wrote when it stops (SIGINT, SIGTERM), not one another `meshlog up` wrote since; the CLI
ignores one a crash left (its process is gone), so the data dir's admin token goes to no later
control plane on the same address."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from services.runtime.up_file import is_stale
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
def test_an_up_json_a_crash_left_is_ignored_while_its_process_is_gone(tmp_path: Path) -> None:
    """SIGKILL leaves up.json: the CLI sends no token for it, its pid being no process's. Were
    the pid another live process's now, the token goes, and the refusal says what to do."""
    port = free_port()
    with meshlog_up(tmp_path / "first", "--api-port", str(port)) as first:
        stop_process(first.proc, signal.SIGKILL)
    left = first.data_dir / "up.json"
    assert json.loads(left.read_text())["pid"] == str(first.proc.pid)
    with meshlog_up(tmp_path / "second", "--api-port", str(port)) as second:
        api = second.where["api"]
        listed = _get_meshes_as(api, first.data_dir)
        assert listed.returncode == 0, listed.stderr

        left.write_text(json.dumps({**json.loads(left.read_text()), "pid": str(os.getpid())}))
        refused = _get_meshes_as(api, first.data_dir)
        assert refused.returncode == 1
        assert "HTTP 401" in refused.stderr and "signature does not verify" in refused.stderr
        assert (f"If the API at {api} is another control plane's (the data dir's up.json or "
                f"api.json names {api}, left by a process that is gone), set "
                f"MESHLOG_DATA_DIR to that control plane's data dir") in refused.stderr, \
            refused.stderr


def test_an_up_json_is_stale_only_when_it_names_a_gone_process_of_this_host() -> None:
    here = socket.gethostname()
    assert is_stale({"pid": str(finished_pid()), "host": here})
    assert not is_stale({"pid": str(os.getpid()), "host": here})
    assert not is_stale({"pid": str(finished_pid()), "host": f"{here}-not"})  # not ours to judge
    assert not is_stale({"api": "http://127.0.0.1:5681"})  # an older release's: it does not say
    for pid in ("0", "-1", "x", "9" * 30, ""):
        assert not is_stale({"pid": pid, "host": here}), pid
