"""A zone made of separate processes (`meshlog api` and `meshlog projector` with `--mode zone`)
on a nats-server of its own, whose leafnode link to global's the operator configured: the
projector registers the zone and keeps the stream's sources, so a Mesh applied on global
reaches the zone's API and a Dataplane applied there reaches global under its synced name."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.kds_hash import hashed_name
from services.runtime.embedded_nats import find_nats_server
from services.runtime.spawn import popen
from tests.harness import VENV_BIN, ControlPlane, free_port, meshlog_up, stop_process, wait_for

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _zone_nats(workdir: Path, zone: str, global_url: str) -> Iterator[str]:
    """A nats-server for `zone`, configured by hand as an operator would: its JetStream
    domain and a leafnode remote to global (no users: every process is admin here)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "nats.conf"
    config.write_text(json.dumps({
        "port": port, "host": "127.0.0.1", "server_name": f"zone-{zone}",
        "jetstream": {"store_dir": str(workdir / "js"), "domain": zone},
        "leafnodes": {"remotes": [{"url": global_url}]}}))
    with open(workdir / "nats.log", "ab") as log:
        proc = popen([find_nats_server(), "-c", str(config)], stdout=log,
                     stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "Server is ready" in (workdir / "nats.log").read_text(), timeout=60,
                 what="the zone's nats-server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        stop_process(proc, timeout=10)


@contextlib.contextmanager
def _process(command: str, workdir: Path, nats_url: str, *extra: str) -> Iterator[Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{command}.log"
    with open(log_path, "ab") as log:
        proc = popen([str(VENV_BIN / "meshlog"), command, "--nats-url", nats_url,
                      "--mode", "zone", "--zone", "east", "--data-dir", str(workdir),
                      "--database", f"sqlite:///{workdir / 'readmodels.db'}", *extra],
                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield log_path
    finally:
        if proc.poll() is not None:
            print(log_path.read_text()[-3000:])
        stop_process(proc)


def _api_url(log_path: Path) -> str | None:
    prefix = "API listening on "
    return next((line[len(prefix):] for line in log_path.read_text().splitlines()
                 if line.startswith(prefix)), None)


def _get(url: str) -> dict[str, Any] | None:
    response = httpx.get(url, timeout=10)
    return response.json() if response.status_code == 200 else None


def test_a_zone_of_separate_processes_syncs_with_global(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "global", "--mode", "global", "--leaf-port", "0") as central, \
            _zone_nats(tmp_path / "east-nats", "east", central.where["global_url"]) as url, \
            _process("api", tmp_path / "east", url, "--api-port", "0") as api_log:
        api = wait_for(lambda: _api_url(api_log), timeout=30, what="meshlog api")
        with _process("projector", tmp_path / "east", url):
            _sync(central, api)


def _sync(central: ControlPlane, api: str) -> None:
    central.apply({"type": "Mesh", "name": "default"})
    wait_for(lambda: _get(f"{api}/meshes/default"), timeout=45, what="global's Mesh in east")
    dataplane = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
                 "networking": {"address": "10.1.0.1", "inbound": [
                     {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}
    response = httpx.put(f"{api}/meshes/default/dataplanes/redis-1", json=dataplane, timeout=10)
    assert response.status_code in (200, 201), response.text
    name = hashed_name("default", "redis", "east")
    synced = wait_for(lambda: _get(f"{central.where['api']}/meshes/default/meshservices/{name}"),
                      timeout=45, what="east's redis on global")
    assert synced["labels"]["kuma.io/zone"] == "east"
    zones = _get(f"{central.where['api']}/zones")
    assert zones is not None and [z["name"] for z in zones["items"]] == ["east"]
