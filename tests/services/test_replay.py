"""Replay and export against a real `meshlog up`: identical rebuilds, time travel, both stores."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import (
    VENV_BIN,
    ControlPlane,
    finished_pid,
    free_port,
    meshlog_up,
    wait_for,
)
from tests.stores import BACKENDS, store_url

pytestmark = pytest.mark.integration
DEMO = Path(__file__).parents[2] / "examples" / "demo.yaml"


def _meshlog(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120, check=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_replay_rebuilds_identical_read_models(backend: str, tmp_path: Path) -> None:
    data = tmp_path / "cp"
    with meshlog_up(data, "--vip-cidr", "10.20.0.0/16") as cp:
        api = cp.where["api"]
        _meshlog("--api", api, "apply", "-f", str(DEMO))
        _meshlog("--api", api, "delete", "dataplane", "backend-2")
        seq_before_delete = cp.api.get("/ready").json()["projectedSequence"] - 1
        live = _meshlog("export", "--data-dir", str(data)).stdout

        async def urls() -> None:
            async with store_url(backend, tmp_path) as full, store_url(backend, tmp_path) as old:
                _meshlog("replay", "--data-dir", str(data), "--database", full, "-q")
                replayed = _meshlog("export", "--database", full).stdout
                assert replayed == live  # byte for byte

                _meshlog("replay", "--data-dir", str(data), "--database", old, "-q",
                         "--to-seq", str(seq_before_delete))
                past = json.loads(_meshlog("export", "--database", old).stdout)
                assert past["checkpoint"] == seq_before_delete
                assert "default/backend-2" in past["rows"]["dataplane"]
                assert "default/backend-2" not in json.loads(live)["rows"]["dataplane"]

        asyncio.run(urls())


def test_replay_refuses_a_store_that_is_not_empty(tmp_path: Path) -> None:
    data = tmp_path / "cp"
    with meshlog_up(data) as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        target = f"sqlite:///{tmp_path / 'again.db'}"
        _meshlog("replay", "--data-dir", str(data), "--database", target, "-q")
        again = subprocess.run([str(VENV_BIN / "meshlog"), "replay", "--data-dir", str(data),
                                "--database", target, "-q"], capture_output=True, text=True,
                               timeout=60)
    assert again.returncode == 2
    assert "the target store is not empty" in again.stderr


def test_replay_swap_serves_the_new_store_and_survives_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "cp"
    new_store = tmp_path / "blue.db"
    with meshlog_up(data) as cp:
        api = cp.where["api"]
        _meshlog("--api", api, "apply", "-f", str(DEMO))
        before = _meshlog("export", "--data-dir", str(data)).stdout
        swapped = _meshlog("--api", api, "replay", "--data-dir", str(data), "--database",
                           f"sqlite:///{new_store}", "--swap", "-q")
        assert "swapped" in swapped.stdout
        assert (data / "readmodels.url").read_text().strip() == f"sqlite:///{new_store}"
        assert _meshlog("export", "--database", f"sqlite:///{new_store}").stdout == before
        # projection goes on in the new store; the API reads it
        cp.apply({"type": "Dataplane", "mesh": "default", "name": "backend-3", "networking": {
            "address": "127.0.0.5", "inbound": [{"port": 8080, "name": "http",
                                                 "tags": {"kuma.io/service": "backend"}}]}})
        proxies = cp.meshservice("backend")["status"]["dataplaneProxies"]
        assert proxies["total"] == 3
        old = json.loads(_meshlog("export", "--database",
                                  f"sqlite:///{data / 'readmodels.db'}").stdout)
        assert "default/backend-3" not in old["rows"]["dataplane"]  # the old store stood still
        # an export of the data dir is of the store `meshlog up` serves now
        served = json.loads(_meshlog("export", "--data-dir", str(data)).stdout)
        assert "default/backend-3" in served["rows"]["dataplane"]
    with meshlog_up(data) as again:
        assert again.where["database"] == f"sqlite:///{new_store}"
        assert again.meshservice("backend")["status"]["dataplaneProxies"]["total"] == 3


def test_replay_after_the_whole_lifecycle_equals_the_live_read_models(tmp_path: Path) -> None:
    """Issue 5's model through `meshlog up` (a HostnameGenerator, a service name that is not a
    DNS-1035 label, a health flip, a port conflict, a grace period that expires by a tick the
    projector appends): a replay exports byte for byte what the live projector holds."""
    data = tmp_path / "cp"
    with meshlog_up(data, "--meshservice-grace-period", "1s") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply({"type": "HostnameGenerator", "name": "by-team", "spec": {
            "template": '{{ .DisplayName }}.{{ label "team" }}.mesh',
            "selector": {"meshService": {"matchLabels": {"team": "blue"}}}}})

        def dp(name: str, address: str, service: str, *ports: int,
               **inbound: object) -> dict[str, Any]:
            return {"type": "Dataplane", "mesh": "default", "name": name,
                    "networking": {"address": address, "inbound": [
                        {"port": p, "tags": {"kuma.io/service": service}, **inbound}
                        for p in ports]}}

        cp.apply(dp("api-1", "10.0.0.1", "api", 8080))
        cp.apply(dp("api-2", "10.0.0.2", "api", 8080, 9090))  # a port-list conflict
        cp.apply(dp("odd-1", "10.0.0.3", "Not_A_Label", 80))
        cp.apply(dp("api-1", "10.0.0.1", "api", 8080, health={"ready": False}))
        cp.apply({"type": "MeshService", "mesh": "default", "name": "blue",
                  "labels": {"team": "blue"},
                  "spec": {"ports": [{"port": 80, "targetPort": 8080}],
                           "selector": {"dataplaneTags": {"kuma.io/service": "api"}}}})
        cp.apply(dp("gone-1", "10.0.0.4", "gone", 80))
        assert cp.api.delete("/meshes/default/dataplanes/gone-1").status_code == 200
        wait_for(lambda: cp.api.get("/meshes/default/meshservices/gone").status_code == 404,
                 timeout=60, what="the grace period to end by a tick")
        blue = cp.meshservice("blue")["status"]
        assert {a["hostname"] for a in blue["addresses"]} >= {"blue.blue.mesh"}
        odd = cp.api.get("/meshes/default/dataplanes/odd-1").json()
        assert [c["reason"] for c in odd["status"]["conditions"]] == ["InvalidServiceName"]
        api = cp.meshservice("api")["status"]
        assert api["state"] == "Available"  # api-2 is healthy, api-1 is not
        assert any(c["type"] == "PortsConsistent" and c["status"] == "False"
                   for c in api["conditions"])
        live = _meshlog("export", "--data-dir", str(data)).stdout
        target = f"sqlite:///{tmp_path / 'replayed.db'}"
        _meshlog("replay", "--data-dir", str(data), "--database", target, "-q")
        assert _meshlog("export", "--database", target).stdout == live


def _replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "replay", *args], capture_output=True,
                          text=True, timeout=30)


def test_replay_fails_fast_when_the_meshlog_up_of_its_data_dir_is_gone(tmp_path: Path) -> None:
    """An up.json that does not say which process wrote it (an older release's `meshlog up`
    left it when it stopped): the NATS it names is gone."""
    data = tmp_path / "cp"
    data.mkdir()
    port = free_port()
    (data / "up.json").write_text(json.dumps({"nats": f"nats://127.0.0.1:{port}"}))
    result = _replay("--data-dir", str(data), "--database", f"sqlite:///{tmp_path / 'r.db'}",
                     "-q")
    assert result.returncode != 0
    assert result.stderr == (
        f"error: cannot reach NATS at nats://127.0.0.1:{port} (from {data / 'up.json'}): "
        f"is `meshlog up --data-dir {data}` running? or pass --nats-url\n")
    assert not (tmp_path / "r.db").exists()


def test_replay_names_the_gone_process_of_an_up_json_a_crash_left(tmp_path: Path) -> None:
    """A `meshlog up` that crashed leaves its up.json; the process it names is gone."""
    data = tmp_path / "cp"
    data.mkdir()
    gone_pid = finished_pid()
    (data / "up.json").write_text(json.dumps({
        "nats": "nats://127.0.0.1:4222", "pid": str(gone_pid), "host": socket.gethostname()}))
    result = _replay("--data-dir", str(data), "--database", f"sqlite:///{tmp_path / 'r.db'}",
                     "-q")
    assert result.returncode != 0
    assert (f"no --nats-url and no running `meshlog up` found ({data / 'up.json'} was left by "
            f"a crash: process {gone_pid}, which wrote it, is no longer running)"
            ) in result.stderr
    assert not (tmp_path / "r.db").exists()


def test_replay_fails_fast_when_its_nats_url_is_not_nats(tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts, but never greets as a NATS server would
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"nats://127.0.0.1:{listener.getsockname()[1]}"
        result = _replay("--nats-url", url, "--database", f"sqlite:///{tmp_path / 'r.db'}")
    assert result.returncode != 0
    assert result.stderr == f"error: cannot reach NATS at {url} (--nats-url): is it running?\n"


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("replay")) as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        yield cp


def test_replay_refuses_a_to_seq_beyond_the_end_of_the_log(plane: ControlPlane,
                                                            tmp_path: Path) -> None:
    head = plane.api.get("/ready").json()["projectedSequence"]
    target = tmp_path / "r.db"
    result = _replay("--data-dir", str(plane.data_dir), "--database", f"sqlite:///{target}",
                     "-q", "--to-seq", str(head + 5))
    assert result.returncode == 1
    assert result.stderr == (f"error: --to-seq {head + 5} is beyond the end of the log: its "
                             f"last sequence is {head}\n")
    assert not target.exists()  # nothing built


def test_replay_quiet_prints_warnings_only(plane: ControlPlane, tmp_path: Path) -> None:
    result = _replay("--data-dir", str(plane.data_dir), "--database",
                     f"sqlite:///{tmp_path / 'r.db'}", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar, no INFO logs
    assert result.stdout.startswith("replayed sequences 1..")
