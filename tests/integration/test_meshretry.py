"""A MeshRetry's `http` section in a real Envoy: a backend that fails the first request of
each path with 503 and answers the next one is a 503 to the client without a MeshRetry, and
a 200 once a MeshRetry with `numRetries: 2, retryOn: [5xx]` applies to web's outbound to it
(the sidecar retried; resources.retries)."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import free_port, meshlog_up, run_envoy, serving, wait_for

pytestmark = pytest.mark.integration

BACKEND = "127.0.0.2"


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "main", "protocol": "http",
                 "tags": {"kuma.io/service": service}}]}}


@contextlib.contextmanager
def _flaky_backend(host: str, port: int) -> Iterator[None]:
    """An HTTP server that answers the first GET of each path 503, the later ones 200."""
    seen: set[str] = set()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with lock:
                first = self.path not in seen
                seen.add(self.path)
            body = b"flaky" if first else b"ok"
            self.send_response(503 if first else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer((host, port), Handler)):
        yield


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(url)


def _retry_policy(config: dict[str, Any], listener: str) -> dict[str, Any] | None:
    """The route's retry policy of `listener` in Envoy's listeners config dump ({} when it
    is active without one, None when it is not active)."""
    for entry in config.get("configs", []):
        active = entry.get("active_state", {}).get("listener", {})
        if active.get("name") == listener:
            hcm = active["filter_chains"][0]["filters"][0]["typed_config"]
            policy: dict[str, Any] = hcm["route_config"]["virtual_hosts"][0]["routes"][0][
                "route"].get("retry_policy", {})
            return policy
    return None


def test_a_retry_turns_a_first_503_into_a_200(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _flaky_backend(BACKEND, port):
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", BACKEND, port, "backend"))
        cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web"))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        listener = f"outbound:{vip}:{port}"
        bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-1"))
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            wait_for(lambda: envoy.stats("default_backend___msvc_").get(
                f"cluster.default_backend___msvc_{port}.membership_healthy") == 1,
                timeout=60, what="the backend in the cluster")
            assert _retry_policy(envoy.config_dump("dynamic_listeners"), listener) == {}

            answer = _get(f"http://{vip}:{port}/without")
            assert (answer.status_code, answer.text) == (503, "flaky")

            cp.apply({"type": "MeshRetry", "mesh": "default", "name": "web-to-backend",
                      "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                               "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                       "default": {"http": {"numRetries": 2,
                                                            "retryOn": ["5xx"]}}}]}})
            wait_for(lambda: (_retry_policy(envoy.config_dump("dynamic_listeners"), listener)
                              or {}).get("num_retries") == 2,
                     timeout=60, what="the MeshRetry's retry policy in Envoy")

            answer = _get(f"http://{vip}:{port}/with")
            assert (answer.status_code, answer.text) == (200, "ok")
            assert envoy.stats("upstream_rq_retry").get(
                f"cluster.default_backend___msvc_{port}.upstream_rq_retry") == 1
