"""Inbound health reported by a real Envoy through HDS, against `meshlog up`.

The Dataplane (applied through the API) has a `serviceProbe` on its inbound; the sidecar's
bootstrap from `meshlog dataplane bootstrap` talks HDS to the gateway, which asks it to
TCP-check the app. Stopping the app makes the inbound `health.ready: false` in the API, the
MeshService Unavailable and its endpoint gone from the proxy's EDS; starting it again brings
all of it back.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from events import DataplaneRegistered, JetStreamEventLog, connect_nats, decode_event
from events.subjects import resource_subject
from tests.harness import (
    VENV_BIN,
    ControlPlane,
    Envoy,
    fetch,
    free_port,
    http_backend,
    meshlog_up,
    run_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration

ADDRESS = "127.0.0.6"
SUBJECT = resource_subject("Dataplane", "default", "web-1")


def _bootstrap(xds_port: int, token_file: Path) -> dict[str, Any]:
    out = subprocess.run(
        [str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", "--mesh", "default",
         "--name", "web-1", "--xds-address", f"127.0.0.1:{xds_port}", "--admin-port", "0",
         "--token-file", str(token_file), "-o", "json"],
        check=True, capture_output=True, text=True)
    return cast("dict[str, Any]", json.loads(out.stdout))


def _ready(cp: ControlPlane) -> bool | None:
    inbound = cp.api.get("/meshes/default/dataplanes/web-1").json()["networking"]["inbound"][0]
    return cast("bool | None", inbound.get("health", {}).get("ready", True))


async def _readiness_history(cp: ControlPlane) -> list[bool]:
    """The inbound's `health.ready` in each event of the Dataplane's subject, in log order."""
    nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
    try:
        event_log = await JetStreamEventLog.open(nc)
        end, out = await event_log.last_seq(), []
        async for records in event_log.read(1):
            for r in records:
                event = decode_event(r.data, seq=r.seq, subject=r.subject,
                                     schema_version=r.schema_version) \
                    if r.subject == SUBJECT else None
                if isinstance(event, DataplaneRegistered):
                    health = event.dataplane.networking.inbound[0].health
                    out.append(health is None or health.ready)
            if records[-1].seq >= end:
                return out
    finally:
        await nc.close()
    return out


def _state(cp: ControlPlane) -> str:
    return cast(str, cp.meshservice("web")["status"]["state"])


def _endpoint_in_eds(envoy: Envoy, inbound: int) -> bool:
    return f"default_web___msvc_{inbound}::{ADDRESS}:{inbound}::" in \
        envoy.admin.get("/clusters").text


def test_an_app_that_stops_leaves_eds_and_comes_back(tmp_path: Path) -> None:
    inbound, app, outbound = free_port(ADDRESS), free_port(), free_port()
    dataplane = {
        "type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {"address": ADDRESS, "inbound": [
            {"port": inbound, "servicePort": app, "tags": {"kuma.io/service": "web"},
             "serviceProbe": {"interval": "0.5s", "timeout": "0.5s", "tcp": {}}}],
            "outbound": [{"port": outbound, "backendRef": {
                "kind": "MeshService", "name": "web", "port": inbound}}]}}
    with meshlog_up(tmp_path / "cp") as cp:
        wait_for(lambda: httpx.get(cp.where["gateway_health"] + "/ready").status_code == 200,
                 what="the gateway of meshlog up to be ready")
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(dataplane)
        token_file = cp.token_file("web-1", tmp_path)
        bootstrap = _bootstrap(cp.xds_port, token_file)
        assert bootstrap["hdsConfig"]["grpcServices"] == [  # the HDS stream is authenticated too
            {"envoyGrpc": {"clusterName": "meshlog_xds"}, "initialMetadata": [
                {"key": "authorization", "value": token_file.read_text()}]}]
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            with http_backend("127.0.0.1", app, "web-1 app"):
                wait_for(lambda: fetch(f"http://127.0.0.1:{outbound}/") == "web-1 app",
                         timeout=30, what="traffic through the outbound to the app")
                assert _ready(cp) is True and _state(cp) == "Available"

            # the app is gone: the proxy's probe fails and its report reaches the log
            wait_for(lambda: _ready(cp) is False, timeout=60, interval=0.2,
                     what="health.ready false in the API")
            wait_for(lambda: _state(cp) == "Unavailable", timeout=60, interval=0.2,
                     what="the MeshService to become Unavailable")
            wait_for(lambda: not _endpoint_in_eds(envoy, inbound), timeout=60, interval=0.2,
                     what="the endpoint to leave the proxy's EDS")

            with http_backend("127.0.0.1", app, "web-1 app"):
                wait_for(lambda: _ready(cp) is True, timeout=60, interval=0.2,
                         what="health.ready true again in the API")
                wait_for(lambda: _state(cp) == "Available", timeout=60, interval=0.2,
                         what="the MeshService to become Available again")
                wait_for(lambda: fetch(f"http://127.0.0.1:{outbound}/") == "web-1 app",
                         timeout=60, what="traffic to the app again")
                assert _endpoint_in_eds(envoy, inbound)
        # one event per change: no flapping at start-up, no event per report
        assert asyncio.run(_readiness_history(cp)) == [True, False, True]
