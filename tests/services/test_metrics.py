"""`/metrics` of a real `meshlog up` (embedded NATS, projector, gateway, API), parsed with
prometheus_client's own parser: the values move when the projector folds, when a proxy
connects and ACKs, and when it NACKs."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from tests.harness import (
    VENV_BIN,
    ControlPlane,
    free_port,
    meshlog_up,
    popen,
    run_gateway_process,
    stop_process,
    wait_for,
)
from tests.services._scrape import Samples, scrape, value
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER, LISTENER

pytestmark = pytest.mark.integration

def _dp(name: str, service: str, port: int, ip: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": {
        "address": ip, "inbound": [{"port": port, "tags": {"kuma.io/service": service}}]}}


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("metrics")) as plane:
        yield plane


def _metrics(cp: ControlPlane) -> Samples:
    return scrape(cp.where["api"] + "/metrics")


def test_every_part_of_meshlog_up_is_on_the_api_endpoint(cp: ControlPlane) -> None:
    samples = _metrics(cp)
    names = {name for name, _ in samples}
    for name in ("meshlog_projector_last_folded_sequence", "meshlog_projector_lag_events",
                 "meshlog_xds_streams", "meshlog_xds_cache_lookups_total",
                 "meshlog_nats_connected", "meshlog_read_model_sequence"):
        assert name in names, name
    for connection in ("meshlog-api", "meshlog-projector", "meshlog-gateway"):
        assert value(samples, "meshlog_nats_connected", connection=connection) == 1


def test_the_projector_sequence_rises_when_it_folds(cp: ControlPlane) -> None:
    before = value(_metrics(cp), "meshlog_projector_last_folded_sequence")
    cp.apply({"type": "Mesh", "name": "default"})
    cp.apply(_dp("web-1", "web", 7070, "10.0.0.9"))

    def folded() -> Samples | None:
        samples = _metrics(cp)
        moved = value(samples, "meshlog_projector_last_folded_sequence") >= before + 2
        return samples if moved else None

    samples = wait_for(folded, what="the projector's sequence to rise")
    assert value(samples, "meshlog_projector_batch_events_count") >= 1
    assert value(samples, "meshlog_projector_commit_seconds_count") >= 1
    assert value(samples, "meshlog_projector_lag_events") == 0
    assert value(samples, "meshlog_api_requests_total", method="PUT",
                 route="/meshes/{mesh}/{plural}/{name}") >= 1


def test_api_requests_are_counted_by_route_and_status(cp: ControlPlane) -> None:
    route = "/meshes/{mesh}/{plural}/{name}"
    before = value(_metrics(cp), "meshlog_api_requests_total", route=route, status="404")
    assert cp.api.get("/meshes/default/dataplanes/nobody").status_code == 404
    samples = _metrics(cp)
    assert value(samples, "meshlog_api_requests_total", route=route, status="404") == before + 1
    assert value(samples, "meshlog_api_request_duration_seconds_count", method="GET",
                 route=route, status="404") >= 1


def test_a_proxy_that_connects_acks_and_nacks_moves_the_gateway_counters(
        cp: ControlPlane) -> None:
    cp.apply({"type": "Mesh", "name": "default"})
    cp.apply(_dp("backend-1", "backend", 8080, "10.0.0.1"))
    token = cp.dataplane_token("backend-1")
    before = _metrics(cp)

    def moved(name: str, by: float = 1, **labels: str) -> None:
        wait_for(lambda: value(_metrics(cp), name, **labels) >= value(before, name, **labels)
                 + by or None, what=f"{name} {labels} to move")

    async def proxy() -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
            client = AdsClient(channel, (("authorization", token),))
            client.send(CLUSTER, node_id="default.backend-1")
            client.ack(await client.recv())
            client.send(LISTENER)
            lds = await client.recv()
            # the API is scraped from a thread: this loop keeps the stream going meanwhile
            await asyncio.to_thread(moved, "meshlog_xds_streams", protocol="sotw")
            await asyncio.to_thread(moved, "meshlog_xds_subscribed_streams", protocol="sotw",
                                    type_url=CLUSTER)
            await asyncio.to_thread(moved, "meshlog_xds_responses_total", type_url=CLUSTER)
            await asyncio.to_thread(moved, "meshlog_xds_acks_total", type_url=CLUSTER)
            client.send(LISTENER, version="", nonce=lds.nonce, error="bind: address in use")
            await asyncio.to_thread(moved, "meshlog_xds_nacks_total", protocol="sotw",
                                    type_url=LISTENER)
            # a change while connected is pushed: the push latency is observed
            cp_apply = asyncio.to_thread(cp.apply, _dp("db-1", "db", 5432, "10.0.0.3"))
            await cp_apply
            await asyncio.to_thread(moved, "meshlog_xds_push_latency_seconds_count")
            client.close()

    asyncio.run(proxy())
    after = _metrics(cp)
    assert value(after, "meshlog_xds_snapshot_build_seconds_count") > 0
    assert value(after, "meshlog_xds_cache_lookups_total", cache="resource") > 0
    # the closed stream's counts stay in the counters
    wait_for(lambda: value(_metrics(cp), "meshlog_xds_streams", protocol="sotw")
             == value(before, "meshlog_xds_streams", protocol="sotw") or None,
             what="the stream to close")
    assert value(_metrics(cp), "meshlog_xds_nacks_total", type_url=LISTENER) >= 1


def test_separate_projector_and_gateway_processes_serve_their_own_metrics(
        cp: ControlPlane, tmp_path: Path) -> None:
    cp.apply({"type": "Mesh", "name": "default"})
    metrics_port, health_port = free_port(), free_port()
    log_path = tmp_path / "projector.log"
    with open(log_path, "wb") as log:
        projector = popen([str(VENV_BIN / "meshlog"), "projector", "--nats-url",
                           cp.where["nats"], "--nats-creds", str(cp.creds("projector")),
                           "--database", f"sqlite:///{tmp_path / 'rm.db'}",
                           "--data-dir", str(cp.data_dir), "--metrics-port", str(metrics_port)],
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            folded = wait_for(lambda: _fetched(url, "meshlog_projector_last_folded_sequence"),
                              what="the projector process's /metrics")
            assert folded > 0
            samples = scrape(url)
            assert value(samples, "meshlog_nats_connected", connection="meshlog-projector") == 1
            assert "meshlog_api_requests_total" not in {name for name, _ in samples}
            assert ("meshlog_projector_skipped_events_total",
                    frozenset({("projector", "main")})) in samples
        finally:
            stop_process(projector, signal.SIGTERM)
    with run_gateway_process(cp.where["nats"], tmp_path, "gw", "--nats-creds",
                             str(cp.creds("gateway")), "--health-port", str(health_port)):
        samples = scrape(f"http://127.0.0.1:{health_port}/metrics")
        assert value(samples, "meshlog_nats_connected", connection="meshlog-gateway") == 1
        assert value(samples, "meshlog_xds_view_checkpoint") > 0
        assert value(samples, "meshlog_xds_streams", protocol="sotw") == 0
        # every reason from the start, at 0: an alert's rate() sees the first refusal
        assert ("meshlog_xds_token_refusals_total",
                frozenset({("reason", "no_token")})) in samples
        assert value(samples, "meshlog_xds_token_refusals_total") == 0


def _fetched(url: str, name: str) -> float | None:
    try:
        return value(scrape(url), name) or None
    except httpx.TransportError:
        return None
