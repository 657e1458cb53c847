"""A MeshRetry's `http` section in a real Envoy: a backend that fails the first request of
each path with 503 and answers the next one is a 503 to the client without a MeshRetry, and
a 200 once a MeshRetry with `numRetries: 2, retryOn: [5xx]` applies to web's outbound to it
(the sidecar retried; resources.retries)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Envoy, answering_backend, free_port, meshlog_up, wait_for
from tests.integration._policy_envoy import (
    BACKEND,
    active_route,
    get,
    web_to_backend,
)

pytestmark = pytest.mark.integration



@contextlib.contextmanager
def _flaky_backend(host: str, port: int) -> Iterator[None]:
    """An HTTP server that answers the first GET of each path 503, the later ones 200."""
    seen: set[str] = set()
    lock = threading.Lock()

    def answer(path: str) -> tuple[int, bytes]:
        with lock:
            first = path not in seen
            seen.add(path)
        return (503, b"flaky") if first else (200, b"ok")

    with answering_backend(host, port, answer):
        yield


def _retry_policy(envoy: Envoy, listener: str) -> dict[str, Any] | None:
    """The retry policy of `listener`'s route ({} when it is active without one, None when
    it is not active)."""
    route = active_route(envoy.config_dump("dynamic_listeners"), listener)
    return None if route is None else route.get("retry_policy", {})


def test_a_retry_turns_a_first_503_into_a_200(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _flaky_backend(BACKEND, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        assert _retry_policy(envoy, listener) == {}

        answer = get(f"http://{vip}:{port}/without")
        assert (answer.status_code, answer.text) == (503, "flaky")

        cp.apply({"type": "MeshRetry", "mesh": "default", "name": "web-to-backend",
                  "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                           "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"http": {"numRetries": 2,
                                                        "retryOn": ["5xx"]}}}]}})
        wait_for(lambda: (_retry_policy(envoy, listener) or {}).get("num_retries") == 2,
                 timeout=60, what="the MeshRetry's retry policy in Envoy")

        answer = get(f"http://{vip}:{port}/with")
        assert (answer.status_code, answer.text) == (200, "ok")
        assert envoy.stats("upstream_rq_retry").get(
            f"cluster.default_backend___msvc_{port}.upstream_rq_retry") == 1
