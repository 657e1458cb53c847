"""A MeshCircuitBreaker in a real Envoy (resources.circuit_breakers). `connectionLimits`: with a
backend that holds every request until told to answer, three concurrent requests all reach
the backend without a MeshCircuitBreaker; with one whose `maxConnections`,
`maxPendingRequests` and `maxRequests` are 1, the second waits pending in Envoy and the third
is Envoy's 503 overflow at once (the cluster's `upstream_rq_pending_overflow` counts it).
`outlierDetection`: a failing endpoint is ejected. Synchronised on what the backend has
received and on Envoy's admin API, never on time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import (
    Envoy,
    answering_backend,
    free_port,
    free_port_on_all,
    meshlog_up,
    wait_for,
)
from tests.integration._policy_envoy import BACKEND, get, web_to_backend

pytestmark = pytest.mark.integration

LIMITS = {"maxConnections": 1, "maxPendingRequests": 1, "maxRequests": 1}


class _Held:
    """What the holding backend has received, and the gate that lets it answer."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()

    def received(self) -> list[str]:
        with self.lock:
            return list(self.paths)


@contextlib.contextmanager
def _holding_backend(host: str, port: int) -> Iterator[_Held]:
    """An HTTP server that answers a GET 200 once `release` is set; until then it holds it."""
    held = _Held()

    def answer(path: str) -> tuple[int, bytes]:
        with held.lock:
            held.paths.append(path)
        held.release.wait(timeout=60)
        return 200, b"ok"

    with answering_backend(host, port, answer):
        try:
            yield held
        finally:
            held.release.set()


def _thresholds(envoy: Envoy, port: int) -> dict[str, Any] | None:
    """The DEFAULT circuit breaker threshold of backend's cluster in Envoy ({} when the
    cluster is there without one)."""
    dump = envoy.config_dump("dynamic_active_clusters")
    for entry in dump.get("configs", []):
        cluster = entry.get("cluster", {})
        if cluster.get("name") == f"default_backend___msvc_{port}":
            thresholds = cluster.get("circuit_breakers", {}).get("thresholds", [{}])
            found: dict[str, Any] = thresholds[0]
            return found
    return None


def _first_held(held: _Held, url: str, pool: ThreadPoolExecutor) -> Future[httpx.Response]:
    """Send a GET of `url` that the backend holds; return once the backend has it."""
    before = len(held.received())
    answer = pool.submit(get, url)
    wait_for(lambda: len(held.received()) > before or answer.done(), timeout=60,
             what=f"the backend holding {url}")
    return answer


def test_connection_limits_of_one_make_a_second_concurrent_request_an_overflow(
        tmp_path: Path) -> None:
    port = free_port(BACKEND)
    cluster = f"cluster.default_backend___msvc_{port}"
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _holding_backend(BACKEND, port) as held, \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, _), \
            ThreadPoolExecutor(max_workers=3) as pool:
        assert _thresholds(envoy, port) == {}

        # without a MeshCircuitBreaker: three concurrent requests all reach the backend
        answers = [_first_held(held, f"http://{vip}:{port}/without-{i}", pool)
                   for i in range(3)]
        assert held.received() == ["/without-0", "/without-1", "/without-2"]
        held.release.set()
        assert [a.result().status_code for a in answers] == [200, 200, 200]
        held.release.clear()

        cp.apply({"type": "MeshCircuitBreaker", "mesh": "default", "name": "web-to-backend",
                  "spec": {"targetRef": {"kind": "MeshService", "name": "web"},
                           "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"connectionLimits": LIMITS}}]}})
        wait_for(lambda: (_thresholds(envoy, port) or {}).get("max_requests") == 1,
                 timeout=60, what="the MeshCircuitBreaker's thresholds in Envoy")
        assert _thresholds(envoy, port) == {
            "max_connections": 1, "max_pending_requests": 1, "max_requests": 1,
            "track_remaining": True}

        # with it: one in flight, one pending (Envoy's gauge says so), the third overflows
        first = _first_held(held, f"http://{vip}:{port}/with-1", pool)
        pending = pool.submit(get, f"http://{vip}:{port}/with-2")
        wait_for(lambda: envoy.stats("upstream_rq_pending_active").get(
            f"{cluster}.upstream_rq_pending_active") == 1, what="the second request pending")
        overflow = get(f"http://{vip}:{port}/with-3")  # answered by Envoy at once
        assert overflow.status_code == 503
        assert overflow.headers.get("x-envoy-overloaded") == "true"
        assert held.received()[-1] == "/with-1"  # neither the pending one nor the third
        held.release.set()
        assert [first.result().status_code, pending.result().status_code] == [200, 200]
        wait_for(lambda: envoy.stats("upstream_rq_pending_overflow").get(
            f"{cluster}.upstream_rq_pending_overflow") == 1, what="the overflow counted")
        assert held.received()[-2:] == ["/with-1", "/with-2"]


FAILING = "127.0.0.3"


def _health_flags(envoy: Envoy, port: int) -> dict[str, str]:
    """Each backend host's health flags in admin /clusters (`healthy`, or e.g.
    `/failed_outlier_check`)."""
    cluster = f"default_backend___msvc_{port}"
    parts = (line.split("::") for line in envoy.admin.get("/clusters").text.splitlines())
    return {p[1].rpartition(":")[0]: p[3] for p in parts
            if len(p) == 4 and p[0] == cluster and p[2] == "health_flags"}


def _outlier_detection(envoy: Envoy, port: int) -> dict[str, Any] | None:
    dump = envoy.config_dump("dynamic_active_clusters")
    for entry in dump.get("configs", []):
        cluster = entry.get("cluster", {})
        if cluster.get("name") == f"default_backend___msvc_{port}":
            found: dict[str, Any] | None = cluster.get("outlier_detection")
            return found
    return None


def test_outlier_detection_ejects_the_failing_endpoint(tmp_path: Path) -> None:
    """Two backend endpoints, one answering 503: without a MeshCircuitBreaker round robin
    keeps sending it requests; with `totalFailures.consecutive: 1` its first 503 ejects it
    (admin /clusters: `failed_outlier_check`) and every request then reaches the other."""
    port = free_port_on_all([BACKEND, FAILING])
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            answering_backend(BACKEND, port, lambda path: (200, b"ok")), \
            answering_backend(FAILING, port, lambda path: (503, b"failing")), \
            web_to_backend(cp, tmp_path, port, backends=(BACKEND, FAILING)) as (envoy, vip, _):
        url = f"http://{vip}:{port}/"

        def asked_and_ejected() -> bool:
            get(url)
            return _health_flags(envoy, port).get(FAILING) == "/failed_outlier_check"

        assert _outlier_detection(envoy, port) is None
        # round robin over the two: the failing one is asked, and kept
        assert sorted(get(url).status_code for _ in range(4)) == [
            200, 200, 503, 503]
        assert _health_flags(envoy, port) == {BACKEND: "healthy", FAILING: "healthy"}

        cp.apply({"type": "MeshCircuitBreaker", "mesh": "default", "name": "eject",
                  "spec": {"to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"outlierDetection": {
                                       "baseEjectionTime": "10m", "maxEjectionPercent": 50,
                                       "detectors": {"totalFailures": {"consecutive": 1}}}}}]}})
        wait_for(lambda: _outlier_detection(envoy, port) is not None, timeout=60,
                 what="the MeshCircuitBreaker's outlier detection in Envoy")

        # each check sends one request: the first that reaches the failing host ejects it
        wait_for(asked_and_ejected, what="the failing endpoint ejected")
        assert _health_flags(envoy, port)[BACKEND] == "healthy"
        assert [get(url).status_code for _ in range(4)] == [200] * 4
        assert envoy.stats("outlier_detection.ejections_enforced_consecutive_5xx").get(
            f"cluster.default_backend___msvc_{port}."
            "outlier_detection.ejections_enforced_consecutive_5xx") == 1
