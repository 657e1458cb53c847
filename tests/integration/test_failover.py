"""Two `meshlog gateway` processes behind a real Envoy TCP load balancer, three real Envoy
sidecars bootstrapped through it, real traffic all along: drain one gateway with SIGTERM,
bring it back, SIGKILL the other. No request fails, every sidecar reconnects, and none of
them modifies a cluster or a listener (xds-rules.md #12: versions are content-derived, so a
reconnect to another replica is a no-op) nor rejects an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.bench._lb import LB_CLUSTER
from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    Envoy,
    LoadBalancer,
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    meshlog_up,
    run_envoy,
    run_gateway_process,
    run_lb_envoy,
    wait_for,
)
from tests.xds_gateway._ads import AdsClient, Projection, dataplane, event_for
from xds_gateway import Gateway
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

BACKEND = "127.0.0.2"
SIDECARS = {"web-1": "127.0.0.4", "web-2": "127.0.0.5", "web-3": "127.0.0.6"}
DRAIN_GRACE = "3"


def _dataplane(name: str, address: str, port: int, service: str, outbound_port: int | None = None,
               backend_port: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "Dataplane", "mesh": "default", "name": name,
                           "networking": {"address": address, "inbound": [
                               {"port": port, "name": "http", "protocol": "http",
                                "tags": {"kuma.io/service": service}}]}}
    if outbound_port is not None:
        doc["networking"]["outbound"] = [{"port": outbound_port, "backendRef": {
            "kind": "MeshService", "name": "backend", "port": backend_port}}]
    return doc


class Client(threading.Thread):
    """Requests on fresh connections through one sidecar's outbound listener until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ok = 0
        self.failed: list[str | None] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            answer = fetch(self.url)
            if answer == "backend":
                self.ok += 1
            else:
                self.failed.append(answer)
            self._halt.wait(0.02)  # pacing the load on a 2-core machine, not synchronising

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def _connections(lb: LoadBalancer, port: int) -> int:
    """Open connections the LB holds to the gateway on `port` (health checks not counted)."""
    prefix = f"{LB_CLUSTER}::127.0.0.1:{port}::cx_active::"
    for line in lb.envoy.admin.get("/clusters").text.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix):])
    return 0


def _all_connected(envoys: list[Envoy]) -> bool:
    return all(e.stats("control_plane.connected_state").get(
        "control_plane.connected_state") == 1 for e in envoys)


def _churn(envoys: list[Envoy]) -> dict[str, int]:
    """Counters that must stay 0: config modified or rejected on reconnects."""
    out = {}
    for i, envoy in enumerate(envoys):
        for name, value in envoy.stats("cluster_manager|listener_manager").items():
            if name.endswith(("cluster_modified", "listener_modified", "update_rejected")):
                out[f"envoy{i}.{name}"] = value
    return out


def _terminate(proc: subprocess.Popen[bytes], sig: int) -> int:
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=int(DRAIN_GRACE) + 10)


def test_gateways_fail_over_without_failed_requests_or_config_churn(tmp_path: Path) -> None:
    port = free_port_on_all([BACKEND])
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.101.0.0/16") as cp, \
            http_backend(BACKEND, port, "backend"), contextlib.ExitStack() as stack:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", BACKEND, port, "backend"))
        outbound = free_port()
        for i, (name, address) in enumerate(SIDECARS.items()):
            cp.apply(_dataplane(name, address, free_port(address), "web",
                                outbound_port=outbound if i == 0 else None,
                                backend_port=port))

        gw = tmp_path / "gateways"
        creds = ("--nats-creds", str(cp.creds("gateway")))
        a = stack.enter_context(run_gateway_process(cp.where["nats"], gw, "gw-a", *creds,
                                                    "--drain-grace", DRAIN_GRACE))
        b = stack.enter_context(run_gateway_process(cp.where["nats"], gw, "gw-b", *creds,
                                                    "--drain-grace", DRAIN_GRACE))
        lb = stack.enter_context(run_lb_envoy([a.port, b.port], tmp_path / "lb"))
        envoys = [stack.enter_context(run_envoy(
            sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                              xds_port=lb.port, admin_port=0,
                              token=cp.dataplane_token(name)), tmp_path / "envoy", name))
            for name in SIDECARS]
        url = f"http://127.0.0.1:{outbound}/"
        wait_for(lambda: fetch(url) == "backend", timeout=60,
                 what="traffic through web-1's outbound listener")
        wait_for(lambda: _all_connected(envoys), what="every sidecar connected")
        # round robin put sidecars on both gateways, so both failures below matter
        assert _connections(lb, a.port) >= 1 and _connections(lb, b.port) >= 1

        client = Client(url)
        client.start()
        try:
            # 1. drain gateway a: GOAWAY, its streams ended, exit 0; its sidecars move to b
            assert _terminate(a.proc, signal.SIGTERM) == 0, a.log.read_text()[-2000:]
            assert "drained" in a.log.read_text()
            # bounds, not speeds: Envoy retries its xDS stream with a jittered exponential
            # backoff (0.5 s doubling up to 30 s), and attempts the LB still sends to a
            # draining or dead gateway on a loaded machine make it back off further
            wait_for(lambda: _connections(lb, b.port) == len(envoys) and _all_connected(envoys),
                     timeout=60, what="every sidecar reconnected to gateway b")

            # 2. a comes back on its port; the LB sees it healthy again
            a = stack.enter_context(run_gateway_process(
                cp.where["nats"], gw, "gw-a", *creds, "--drain-grace", DRAIN_GRACE, port=a.port))
            wait_for(lambda: lb.healthy_gateways() == 2, what="gateway a healthy in the LB")

            # 3. gateway b dies without a word; every sidecar reconnects to a
            before = client.ok
            os.killpg(b.proc.pid, signal.SIGKILL)
            b.proc.wait(timeout=10)
            wait_for(lambda: _connections(lb, a.port) == len(envoys) and _all_connected(envoys),
                     timeout=60, what="every sidecar reconnected to gateway a")
            wait_for(lambda: client.ok >= before + 10, what="requests after the failovers")
        finally:
            client.stop()

        assert client.failed == [], f"{len(client.failed)} of {client.ok} requests failed"
        churn = _churn(envoys)
        assert len(churn) >= 3 * len(envoys), churn  # the counters exist, so 0 means 0
        assert all(v == 0 for v in churn.values()), churn


def _total_connections(lb: LoadBalancer, port: int) -> int:
    prefix = f"{LB_CLUSTER}::127.0.0.1:{port}::cx_total::"
    for line in lb.envoy.admin.get("/clusters").text.splitlines():
        if line.startswith(prefix):
            return int(line[len(prefix):])
    return 0


def test_max_connection_age_moves_a_stream_across_replicas(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.102.0.0/16") as cp, \
            contextlib.ExitStack() as stack:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web"))
        gw = tmp_path / "gateways"
        ports = [stack.enter_context(run_gateway_process(
            cp.where["nats"], gw, name, "--nats-creds", str(cp.creds("gateway")),
            "--max-connection-age", "1", "--drain-grace", "1")).port
            for name in ("gw-a", "gw-b")]
        lb = stack.enter_context(run_lb_envoy(ports, tmp_path / "lb"))
        envoy = stack.enter_context(run_envoy(
            sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                              xds_port=lb.port, admin_port=0,
                              token=cp.dataplane_token("web-1")), tmp_path / "envoy", "web-1"))
        # rule 14: GOAWAY at the age, the stream ended after the grace, the reconnect goes
        # through the LB to the next replica (round robin): the stream visits both
        wait_for(lambda: all(_total_connections(lb, p) >= 2 for p in ports), timeout=60,
                 what="the sidecar's stream to reconnect to both gateways, twice each")
        wait_for(lambda: _all_connected([envoy]), what="the sidecar connected")
        churn = _churn([envoy])
        assert len(churn) >= 3 and all(v == 0 for v in churn.values()), churn


def _draining(gateway: Gateway) -> bool:
    # read through a call: mypy would keep `gateway.draining` narrowed to False across awaits
    return gateway.draining


async def test_drain_ends_every_open_stream_cleanly_without_sitting_out_the_grace() -> None:
    gateway = Gateway(None, port=0, drain_grace_s=60, no_auth=True)
    gateway.view.apply(Projection().fold([
        event_for({"type": "Mesh", "name": "default"}),
        event_for(dataplane("web-1", "10.0.0.9", 7070, "web"))]))
    serving = asyncio.create_task(gateway.serve())
    await gateway.serving.wait()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        clients = [AdsClient(channel) for _ in range(3)]
        for client in clients:
            client.send(CLUSTER, node_id="default.web-1")
            assert (await client.recv()).type_url == CLUSTER
        assert not _draining(gateway)
        serving.cancel()  # what SIGTERM does to the gateway process
        await asyncio.sleep(0)  # let the cancellation reach serve()'s finally
        assert gateway.draining  # readiness says 503 from here on
        # rule 14: each stream ends with OK (the client reconnects, through the LB), long
        # before the 60 s grace would have cancelled it
        for client in clients:
            assert await asyncio.wait_for(client.call.code(), 10) == grpc.StatusCode.OK
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(serving, 10)


def test_meshlog_up_drains_its_gateway_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web"))
        with run_envoy(sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                         xds_port=cp.xds_port, admin_port=0,
                                         token=cp.dataplane_token("web-1")),
                       tmp_path / "envoy", "web-1") as envoy:
            wait_for(lambda: _all_connected([envoy]), what="the sidecar connected")
            os.killpg(cp.proc.pid, signal.SIGTERM)
            assert cp.proc.wait(timeout=20) == 0
            wait_for(lambda: not _all_connected([envoy]), what="the sidecar to see the end")
    log = (tmp_path / "cp" / "up.log").read_text()
    assert "draining 1 ADS streams" in log and "drained" in log, log[-2000:]
