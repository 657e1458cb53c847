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

import pytest

from tests.harness import Envoy, free_port, meshlog_up, serving, wait_for
from tests.integration._policy_envoy import BACKEND, active_route, get, web_to_backend

pytestmark = pytest.mark.integration

ANSWER_AFTER_S = 3.0
"""How long the backend takes: over the MeshTimeout's 1 s, well under any default."""


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


def _route_timeout(envoy: Envoy, listener: str) -> str | None:
    """The route timeout of `listener`, once it is active."""
    route = active_route(envoy.config_dump("dynamic_listeners"), listener)
    return None if route is None else str(route["timeout"])


def test_a_request_timeout_ends_a_slow_request_with_504(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _slow_backend(BACKEND, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        assert _route_timeout(envoy, listener) == "0s"

        answer = get(f"http://{vip}:{port}/")
        assert (answer.status_code, answer.text) == (200, "slow")

        cp.apply({"type": "MeshTimeout", "mesh": "default", "name": "web-to-backend",
                  "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                           "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"http": {"requestTimeout": "1s"}}}]}})
        wait_for(lambda: _route_timeout(envoy, listener) == "1s",
                 timeout=60, what="the MeshTimeout's route timeout in Envoy")

        answer = get(f"http://{vip}:{port}/")  # on a new connection: the listener
        # changed, and Envoy closes the old one's connections (drain)
        assert (answer.status_code, answer.text) == (504, "upstream request timeout")
        assert envoy.stats("upstream_rq_timeout").get(
            f"cluster.default_backend___msvc_{port}.upstream_rq_timeout") == 1
