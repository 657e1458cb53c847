"""Quorum loss on a real 3-node JetStream cluster (R3 stream and buckets), with `meshlog api`,
`meshlog projector` and `meshlog gateway` as separate processes given every node's URL, and a
real Envoy sidecar carrying real HTTP traffic through its outbound listener.

Two of the three nodes are SIGKILLed. Meanwhile: a write through the API is a 503 whose RFC
7807 problem names JetStream's unavailability; the projector stands down (its lease cannot be
renewed) but keeps running; the gateway keeps its ADS stream and Envoy its config, so no
request fails. The nodes come back (same ports, same stores) and everything resumes by
itself: the write is stored, the projector folds it, the gateway pushes it, and Envoy sends
traffic to the backend it registered.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from events.subjects import EVENTS_STREAM
from services.cli.bootstrap import sidecar_bootstrap
from services.runtime.nats_cluster import NatsCluster, run_nats_cluster
from services.runtime.spawn import popen
from tests.harness import (
    VENV_BIN,
    Envoy,
    Exited,
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    run_envoy,
    run_gateway_process,
    stop_process,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKENDS = {"backend-1": "127.0.0.2", "backend-2": "127.0.0.3"}
WEB = "127.0.0.4"


def _dataplane(name: str, address: str, port: int, service: str,
               outbound: tuple[int, int] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": "Dataplane", "mesh": "default", "name": name,
                           "networking": {"address": address, "inbound": [
                               {"port": port, "name": "http", "protocol": "http",
                                "tags": {"kuma.io/service": service}}]}}
    if outbound is not None:
        doc["networking"]["outbound"] = [{"port": outbound[0], "backendRef": {
            "kind": "MeshService", "name": "backend", "port": outbound[1]}}]
    return doc


@contextlib.contextmanager
def _meshlog(workdir: Path, name: str, args: list[str], ready: str) -> Iterator[str]:
    """`meshlog <args>` in its own session; yields the first group of `ready` (a regex) once
    its log shows it; SIGTERM at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    with open(log_path, "ab") as log:
        proc = popen([str(VENV_BIN / "meshlog"), *args], stdout=log,
                     stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def started() -> str | None:
            text = log_path.read_text()
            if proc.poll() is not None:
                raise Exited(f"meshlog {name} exited {proc.returncode}: {text[-3000:]}")
            match = re.search(ready, text)
            return match.group(1) if match else None

        yield wait_for(started, timeout=60, what=f"meshlog {name}")
        assert proc.poll() is None, f"meshlog {name} exited: {log_path.read_text()[-3000:]}"
    finally:
        stop_process(proc, timeout=30)


class Traffic(threading.Thread):
    """Requests on fresh connections through the sidecar's outbound listener until stopped;
    remembers which backend answered and every failure."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ok = 0
        self.seen: set[str] = set()
        self.failed: list[str | None] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            answer = fetch(self.url)
            if answer in BACKENDS:
                self.ok += 1
                self.seen.add(answer)
            else:
                self.failed.append(answer)
            self._halt.wait(0.02)  # pacing the load on a 2-core machine, not synchronising

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def _connected(envoy: Envoy) -> bool:
    return envoy.stats("control_plane.connected_state").get(
        "control_plane.connected_state") == 1


def _rejected(envoy: Envoy) -> dict[str, int]:
    return {name: value for name, value in envoy.stats("update_rejected").items()
            if name.endswith("update_rejected") and value}


async def _replicas(cluster: NatsCluster) -> dict[str, int]:
    from events import connect_nats

    nc = await connect_nats(cluster.urls, name="test", reconnect=False)
    try:
        js = nc.jetstream()
        return {name: (await js.stream_info(name)).config.num_replicas or 1 for name in (
            EVENTS_STREAM, "KV_meshlog_projections", "KV_meshlog_insights")}
    finally:
        await nc.close()


async def test_quorum_loss_is_503s_while_envoy_traffic_flows_and_all_resumes(
        tmp_path: Path) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    outbound = free_port()
    async with run_nats_cluster(tmp_path / "nats") as cluster:
        urls = ("--nats-url", cluster.urls, "--stream-replicas", "3")
        db = ("--database", f"sqlite:///{tmp_path / 'readmodels.db'}",
              "--data-dir", str(tmp_path / "cp"))
        work = tmp_path / "processes"
        with contextlib.ExitStack() as stack:
            api_url = stack.enter_context(_meshlog(
                work, "api", ["api", *urls, *db, "--api-port", "0"],
                r"API listening on (http://\S+)"))
            projector = stack.enter_context(_meshlog(
                work, "projector", ["projector", *urls, *db, "--lease-ttl", "2s",
                                    "--metrics-port", "0"],
                r"projector health on (http://\S+) "))
            gateway = stack.enter_context(run_gateway_process(cluster.urls, work, "gateway",
                                                              "--stream-replicas", "3"))
            api = stack.enter_context(httpx.Client(base_url=api_url, timeout=30))
            probe = stack.enter_context(httpx.Client(base_url=projector, timeout=5))
            stack.enter_context(http_backend(BACKENDS["backend-1"], port, "backend-1"))
            stack.enter_context(http_backend(BACKENDS["backend-2"], port, "backend-2"))

            def put(doc: dict[str, Any], key: str | None = None) -> httpx.Response:
                path = ("/meshes/default" if doc["type"] == "Mesh" else
                        f"/meshes/default/dataplanes/{doc['name']}")
                return api.put(path, json=doc,
                               headers={"Idempotency-Key": key} if key else {})

            def setup_write(doc: dict[str, Any]) -> None:
                """A write before the outage. The R3 stream the processes just made may still
                change leader in its first seconds on a loaded machine (a 503): tried again
                with its Idempotency-Key, as a client does; stored once (a 200 when an attempt
                answered 503 was stored after all)."""
                response = wait_for(lambda: (lambda r: r if r.status_code != 503 else None)(
                    put(doc, key=f"setup-{doc['name']}")), timeout=60, interval=0.5,
                    what=f"{doc['name']} stored")
                assert response.status_code in (200, 201), response.text

            setup_write({"type": "Mesh", "name": "default"})
            setup_write(_dataplane("backend-1", BACKENDS["backend-1"], port, "backend"))
            setup_write(_dataplane("web-1", WEB, free_port(WEB), "web", outbound=(outbound, port)))
            assert await _replicas(cluster) == {
                EVENTS_STREAM: 3, "KV_meshlog_projections": 3, "KV_meshlog_insights": 3}
            token = api.post("/tokens/dataplane", json={"mesh": "default", "name": "web-1"})
            assert token.status_code == 200, token.text
            envoy = stack.enter_context(run_envoy(sidecar_bootstrap(
                mesh="default", name="web-1", xds_host="127.0.0.1", xds_port=gateway.port,
                admin_port=0, token=token.text), tmp_path / "envoy", "web-1"))
            url = f"http://127.0.0.1:{outbound}/"
            wait_for(lambda: fetch(url) == "backend-1", timeout=30,
                     what="traffic through the sidecar's outbound listener")
            wait_for(lambda: probe.get("/ready").status_code == 200,
                     what="the projector active")

            traffic = Traffic(url)
            traffic.start()
            try:
                # 1. two of three nodes die: no quorum for the stream or the buckets
                before = traffic.ok
                for name in ("n1", "n2"):
                    await cluster.kill(name)
                backend_2 = _dataplane("backend-2", BACKENDS["backend-2"], port, "backend")
                answers: list[httpx.Response] = []

                def refused() -> httpx.Response | None:
                    answers.append(put(backend_2, key="backend-2"))
                    problem = answers[-1]
                    return problem if "quorum lost" in problem.text else None

                problem = wait_for(refused, timeout=60, interval=0.5,
                                   what="the API refusing a write for lost quorum")
                assert all(a.status_code == 503 for a in answers), [
                    (a.status_code, a.text) for a in answers]
                assert problem.headers["content-type"] == "application/problem+json"
                assert problem.headers["retry-after"]
                body = problem.json()
                assert body["status"] == 503 and body["title"] == "JetStream unavailable"
                assert body["detail"].startswith("JetStream is unavailable")

                # the projector cannot renew its lease: it stands down, and keeps running
                wait_for(lambda: probe.get("/ready").status_code == 503, timeout=30,
                         what="the projector standing down")
                # the gateway keeps its stream and Envoy its config: traffic flows
                wait_for(lambda: traffic.ok >= before + 50, timeout=60,
                         what="requests during the outage")
                assert _connected(envoy)
                assert traffic.seen == {"backend-1"}

                # 2. the nodes come back (same ports, same stores): all resumes by itself
                await cluster.start("n1", "n2")

                def stored_again() -> httpx.Response | None:
                    r = put(backend_2, key="backend-2")
                    return r if r.status_code in (200, 201) else None

                stored = wait_for(stored_again, timeout=60, interval=0.5,
                                  what="the API storing the write again")
                assert stored.json()["version"] > 3
                wait_for(lambda: probe.get("/ready").status_code == 200, timeout=60,
                         what="the projector active again")
                wait_for(lambda: "backend-2" in traffic.seen, timeout=60,
                         what="Envoy sending traffic to the backend registered after")
                assert _connected(envoy)
            finally:
                traffic.stop()
            assert traffic.failed == [], \
                f"{len(traffic.failed)} of {traffic.ok} requests failed: {traffic.failed[:5]}"
            assert _rejected(envoy) == {}
