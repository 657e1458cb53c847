"""Self-registration with real parts: `meshlog up`, a second `meshlog gateway`, and a real Envoy
whose Dataplane exists only in its bootstrap's node metadata (no API call registers it).

It appears in the API, gets its inbound listener and serves traffic through it; restarting it
within the deregistration delay, also against another gateway, appends nothing to the log;
killing it deregisters it once the delay has passed.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml

from events import DataplaneDeregistered, JetStreamEventLog, connect_nats, decode_event
from events.bus.insights import JetStreamInsights, ProxyInsight
from events.subjects import resource_subject
from tests.harness import (
    VENV_BIN,
    ControlPlane,
    fetch,
    free_port,
    http_backend,
    meshlog_up,
    run_envoy,
    run_gateway_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.integration

DELAY_S = 8
ADDRESS = "127.0.0.5"
SUBJECT = resource_subject("Dataplane", "default", "web-1")


def _bootstrap(dp_file: Path, xds_port: int) -> dict[str, Any]:
    """The sidecar's bootstrap, with its token (in `<dp_file>.token`, next to the file)."""
    out = subprocess.run(
        [str(VENV_BIN / "meshlog"), "dataplane", "bootstrap", "--dataplane-file", str(dp_file),
         "--token-file", f"{dp_file}.token",
         "--xds-address", f"127.0.0.1:{xds_port}", "--admin-port", "0", "-o", "json"],
        check=True, capture_output=True, text=True)
    return cast("dict[str, Any]", json.loads(out.stdout))


async def _read(cp: ControlPlane) -> tuple[Any, int, ProxyInsight | None, dict[str, int]]:
    """The Dataplane subject's last event and sequence, the proxy's insight, and every
    gateway's last reaper sweep."""
    nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds)
    try:
        record = await (await JetStreamEventLog.open(nc)).last(SUBJECT)
        insights = await JetStreamInsights.open(nc)
        proxies, gateways = await insights.snapshot()
    finally:
        await nc.close()
    event = None if record is None else decode_event(
        record.data, seq=record.seq, subject=record.subject,
        schema_version=record.schema_version)
    return (event, record.seq if record else 0, proxies.get(("default", "web-1")),
            {g: beat.swept_at for g, beat in gateways.items()})


def read(cp: ControlPlane) -> tuple[Any, int, ProxyInsight | None, dict[str, int]]:
    return asyncio.run(_read(cp))


def _connected_anew(cp: ControlPlane, before: ProxyInsight) -> ProxyInsight | None:
    insight = read(cp)[2]
    return insight if insight and insight.connected and insight.session != before.session \
        else None


def _kept_past_the_delay(cp: ControlPlane, since_ms: int, seq: int) -> None:
    """Wait until every gateway's reaper swept after the delay had passed, then check the
    Dataplane's subject did not move: no deregistration, no re-registration."""
    deadline_ms = since_ms + DELAY_S * 1000
    wait_for(lambda: all(at > deadline_ms for at in read(cp)[3].values()),
             timeout=DELAY_S + 20, interval=0.2, what="every reaper to sweep past the delay")
    assert read(cp)[1] == seq


def _readiness_url(log: Path) -> str:
    prefix = "gateway readiness on "
    return next(line[len(prefix):] for line in log.read_text().splitlines()
                if line.startswith(prefix))


def test_a_sidecar_registers_itself_and_goes_after_the_delay(tmp_path: Path) -> None:
    inbound, service = free_port(ADDRESS), free_port()
    dp_file = tmp_path / "web-1.yaml"
    dp_file.write_text(yaml.safe_dump({
        "type": "Dataplane", "mesh": "default", "name": "web-1",
        "networking": {"address": ADDRESS, "inbound": [
            {"port": inbound, "servicePort": service, "tags": {"kuma.io/service": "web"}}]}}))
    with meshlog_up(tmp_path / "cp", "--deregistration-delay", str(DELAY_S)) as cp, \
            http_backend("127.0.0.1", service, "web-1 app"):
        wait_for(lambda: httpx.get(cp.where["gateway_health"] + "/ready").status_code == 200,
                 what="the gateway of meshlog up to be ready")
        cp.apply({"type": "Mesh", "name": "default"})
        Path(f"{dp_file}.token").write_text(cp.dataplane_token("web-1"))  # names the Dataplane
        bootstrap = _bootstrap(dp_file, cp.xds_port)
        # gateway b is up before any restart, so each gap below is one Envoy restart, well
        # within the delay even on a loaded machine (starting a gateway process is not)
        with run_gateway_process(cp.where["nats"], tmp_path / "gw-b", "gw-b",
                                 "--nats-creds", str(cp.creds("gateway")),
                                 "--deregistration-delay", str(DELAY_S)) as gw_b:
            wait_for(lambda: httpx.get(_readiness_url(gw_b.log)).status_code == 200,
                     what="gateway b to be ready")
            with run_envoy(bootstrap, tmp_path / "envoy", "web-1"):
                wait_for(lambda: cp.api.get("/meshes/default/dataplanes/web-1").status_code == 200,
                         what="the self-registered Dataplane in the API")
                listed = subprocess.run(
                    [str(VENV_BIN / "meshlog"), "--api", cp.where["api"], "get", "dataplanes"],
                    check=True, capture_output=True, text=True).stdout
                assert "web-1" in listed
                wait_for(lambda: fetch(f"http://{ADDRESS}:{inbound}/") == "web-1 app",
                         what="traffic through the sidecar's inbound listener")
                event, seq, first, _ = read(cp)
                assert first is not None and first.self_registered and first.user_agent == "envoy"
                assert type(event).__name__ == "DataplaneRegistered" and event.origin == "proxy"

            # restarted within the delay: still registered, nothing appended
            with run_envoy(bootstrap, tmp_path / "envoy", "web-1"):
                again = wait_for(lambda: _connected_anew(cp, first), what="the reconnect")
                _kept_past_the_delay(cp, again.connected_at, seq)
                assert cp.api.get("/meshes/default/dataplanes/web-1").status_code == 200

            # restarted against another gateway within the delay: the same
            with run_envoy(_bootstrap(dp_file, gw_b.port), tmp_path / "envoy", "web-1") \
                    as envoy:
                moved = wait_for(lambda: _connected_anew(cp, again), what="a stream on gateway b")
                assert moved.gateway != again.gateway
                wait_for(lambda: fetch(f"http://{ADDRESS}:{inbound}/") == "web-1 app",
                         what="traffic with config from gateway b")
                _kept_past_the_delay(cp, moved.connected_at, seq)

                # killed: deregistered once the delay has passed
                stop_process(envoy.proc, signal.SIGKILL)
                killed_ms = time.time_ns() // 1_000_000
                wait_for(lambda: cp.api.get("/meshes/default/dataplanes/web-1").status_code == 404,
                         timeout=DELAY_S + 20, interval=0.2, what="the deregistration")
        event, new_seq, insight, _ = read(cp)
        assert isinstance(event, DataplaneDeregistered) and new_seq > seq
        assert event.at >= killed_ms + DELAY_S * 1000 - 1000  # not before the delay
        assert insight is None

        # the registrations and deregistrations proxies caused replay like any other event
        meshlog = str(VENV_BIN / "meshlog")
        live = subprocess.run([meshlog, "export", "--data-dir", str(tmp_path / "cp")],
                              check=True, capture_output=True, text=True).stdout
        target = f"sqlite:///{tmp_path / 'replayed.db'}"
        subprocess.run([meshlog, "replay", "--data-dir", str(tmp_path / "cp"), "--database",
                        target, "-q"], check=True, capture_output=True, text=True)
        assert subprocess.run([meshlog, "export", "--database", target], check=True,
                              capture_output=True, text=True).stdout == live
