"""A MeshTimeout's `http.requestTimeout` in a real Envoy: a backend that answers after 3 s is
answered by the sidecar itself with Kuma's 504 `upstream request timeout` once a MeshTimeout
of 1 s applies to web's outbound to it (`to[]`), or to the backend's own inbound (`from[]`
or `rules[]`, its sidecar between the client and the app), and reached as before without
one (meshlog sets no request timeout by default, resources.timeouts)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import Envoy, answering_backend, free_port, meshlog_up, run_envoy, wait_for
from tests.integration._policy_envoy import (
    BACKEND,
    active_route,
    get,
    web_to_backend,
)

pytestmark = pytest.mark.integration

ANSWER_AFTER_S = 3.0
"""How long the backend takes: over the MeshTimeout's 1 s, well under any default."""


@contextlib.contextmanager
def _slow_backend(host: str, port: int) -> Iterator[None]:
    """An HTTP server that answers every GET `ANSWER_AFTER_S` after it came in (the delay is
    what is tested, not a wait for something else)."""
    stop = threading.Event()

    def answer(path: str) -> tuple[int, bytes] | None:
        return None if stop.wait(ANSWER_AFTER_S) else (200, b"slow")  # set: the test is over

    with answering_backend(host, port, answer):
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


_INBOUND_ENTRY: dict[str, dict[str, Any]] = {
    "from": {"targetRef": {"kind": "Mesh"}, "default": {"http": {"requestTimeout": "1s"}}},
    "rules": {"default": {"http": {"requestTimeout": "1s"}}},
}


@pytest.mark.parametrize("section", ["from", "rules"])
def test_an_inbound_request_timeout_ends_a_slow_request_with_504(tmp_path: Path,
                                                                 section: str) -> None:
    """The backend's sidecar: its inbound on BACKEND:<inbound> to the app on
    127.0.0.1:<app>; the client calls the inbound directly (as another sidecar would). The
    timeout written as a `from[]` entry or as Kuma 2.13+'s `rules[]`."""
    inbound, app = free_port(BACKEND), free_port()
    listener = f"inbound:{BACKEND}:{inbound}"
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _slow_backend("127.0.0.1", app):
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply({"type": "Dataplane", "mesh": "default", "name": "backend-1",
                  "networking": {"address": BACKEND, "inbound": [
                      {"port": inbound, "servicePort": app, "protocol": "http",
                       "tags": {"kuma.io/service": "backend"}}]}})
        bootstrap = sidecar_bootstrap(mesh="default", name="backend-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("backend-1"))
        with run_envoy(bootstrap, tmp_path / "envoy", "backend-1") as envoy:
            wait_for(lambda: _route_timeout(envoy, listener) == "0s",
                     timeout=60, what="backend's inbound listener in Envoy")

            answer = get(f"http://{BACKEND}:{inbound}/")
            assert (answer.status_code, answer.text) == (200, "slow")

            cp.apply({"type": "MeshTimeout", "mesh": "default", "name": "backend-inbound",
                      "spec": {"targetRef": {"kind": "Dataplane", "name": "backend-1"},
                               section: [_INBOUND_ENTRY[section]]}})
            wait_for(lambda: _route_timeout(envoy, listener) == "1s",
                     timeout=60, what="the MeshTimeout's inbound route timeout in Envoy")

            answer = get(f"http://{BACKEND}:{inbound}/")  # a new connection: see above
            assert (answer.status_code, answer.text) == (504, "upstream request timeout")
            assert envoy.stats("upstream_rq_timeout").get(
                f"cluster.localhost_{app}.upstream_rq_timeout") == 1
