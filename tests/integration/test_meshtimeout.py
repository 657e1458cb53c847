"""A MeshTimeout's `http.requestTimeout` in a real Envoy: a backend that answers after 3 s is
answered by the sidecar itself with Kuma's 504 `upstream request timeout` once a MeshTimeout
of 1 s applies to web's outbound to it, and reached as before without one (meshlog sets no
request timeout by default, resources.timeouts)."""

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
ANSWER_AFTER_S = 3.0
"""How long the backend takes: over the MeshTimeout's 1 s, well under any default."""


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "main", "protocol": "http",
                 "tags": {"kuma.io/service": service}}]}}


@contextlib.contextmanager
def _slow_backend(host: str, port: int) -> Iterator[None]:
    """An HTTP server that answers every GET `ANSWER_AFTER_S` after it came in (the delay is
    what is tested, not a wait for something else)."""
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if stop.wait(ANSWER_AFTER_S):
                return  # the test is over
            body = b"slow"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer((host, port), Handler)):
        try:
            yield
        finally:
            stop.set()  # a handler still waiting answers nothing


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(url)


def _route_timeout(config: dict[str, Any], listener: str) -> str | None:
    """The route timeout of `listener` in Envoy's listeners config dump, once it is active."""
    for entry in config.get("configs", []):
        active = entry.get("active_state", {}).get("listener", {})
        if active.get("name") == listener:
            hcm = active["filter_chains"][0]["filters"][0]["typed_config"]
            timeout: str = hcm["route_config"]["virtual_hosts"][0]["routes"][0]["route"][
                "timeout"]
            return timeout
    return None


def test_a_request_timeout_ends_a_slow_request_with_504(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _slow_backend(BACKEND, port):
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
            assert _route_timeout(envoy.config_dump("dynamic_listeners"), listener) == "0s"

            answer = _get(f"http://{vip}:{port}/")
            assert (answer.status_code, answer.text) == (200, "slow")

            cp.apply({"type": "MeshTimeout", "mesh": "default", "name": "web-to-backend",
                      "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                               "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                       "default": {"http": {"requestTimeout": "1s"}}}]}})
            wait_for(lambda: _route_timeout(envoy.config_dump("dynamic_listeners"),
                                            listener) == "1s",
                     timeout=60, what="the MeshTimeout's route timeout in Envoy")

            answer = _get(f"http://{vip}:{port}/")  # on a new connection: the listener
            # changed, and Envoy closes the old one's connections (drain)
            assert (answer.status_code, answer.text) == (504, "upstream request timeout")
            assert envoy.stats("upstream_rq_timeout").get(
                f"cluster.default_backend___msvc_{port}.upstream_rq_timeout") == 1
