"""A MeshRetry's `http` section in a real Envoy: a backend that fails the first request of
each path with 503 and answers the next one is a 503 to the client without a MeshRetry, and
a 200 once a MeshRetry with `numRetries: 2, retryOn: [5xx]` applies to web's outbound to it
(the sidecar retried; resources.retries). The same for the `grpc` section and a call
cancelled first."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import (
    GRPC_NAME_METHOD,
    Envoy,
    answering_backend,
    failing_first,
    free_port,
    grpc_server,
    meshlog_up,
    wait_for,
)
from tests.integration._policy_envoy import BACKEND, active_route, get, web_to_backend

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


def test_entries_merged_across_policies_are_a_config_envoy_accepts(tmp_path: Path) -> None:
    """A mesh-wide policy and one for backend, each valid, whose merge once made a back-off
    Envoy refuses (maxInterval below baseInterval: the whole listener update rejected); the
    backend entry's `perTryTimeout: 0s` lifts the mesh-wide one, and its status code alone
    keeps Kuma's default conditions, so the first 503 is retried."""
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _flaky_backend(BACKEND, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        cp.apply({"type": "MeshRetry", "mesh": "default", "name": "mesh-wide", "spec": {
            "to": [{"targetRef": {"kind": "Mesh"}, "default": {"http": {
                "perTryTimeout": "1s", "backOff": {"baseInterval": "1s"}}}}]}})
        cp.apply({"type": "MeshRetry", "mesh": "default", "name": "backend", "spec": {
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "default": {
                "http": {"numRetries": 3, "perTryTimeout": "0s", "retryOn": ["503"],
                         "backOff": {"maxInterval": "100ms"}}}}]}})
        wait_for(lambda: (_retry_policy(envoy, listener) or {}).get("num_retries") == 3,
                 timeout=60, what="the merged retry policy in Envoy")

        policy = _retry_policy(envoy, listener) or {}
        assert policy["retry_back_off"] == {"base_interval": "0.100s",
                                            "max_interval": "0.100s"}
        assert policy["per_try_timeout"] == "0s"
        assert envoy.stats("listener_manager.lds").get(
            "listener_manager.lds.update_rejected") == 0
        answer = get(f"http://{vip}:{port}/merged")
        assert (answer.status_code, answer.text) == (200, "ok")


def _flaky_grpc_backend(host: str, port: int) -> contextlib.AbstractContextManager[None]:
    """A gRPC server whose one method (`GRPC_NAME_METHOD`) ends the first call of each
    request body CANCELLED and answers the later ones `ok`."""
    return grpc_server(host, port, "meshlog.test.Echo",
                       {"Name": failing_first(grpc.StatusCode.CANCELLED)})


def test_a_grpc_retry_on_canceled_turns_a_first_cancelled_call_into_an_answer(
        tmp_path: Path) -> None:
    """Kuma's `Canceled` is Envoy's `cancelled` (Kuma writes `canceled`, which Envoy
    ignores: no retry). Each call on a channel of its own: a connection keeps the routes of
    the listener it was accepted by until Envoy drains it."""
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _flaky_grpc_backend(BACKEND, port), \
            web_to_backend(cp, tmp_path, port, "grpc") as (envoy, vip, listener):
        with pytest.raises(grpc.RpcError) as failed:
            _call(f"{vip}:{port}", b"without")
        assert failed.value.code() == grpc.StatusCode.CANCELLED

        cp.apply({"type": "MeshRetry", "mesh": "default", "name": "web-to-backend",
                  "spec": {"to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": {"grpc": {"numRetries": 2,
                                                        "retryOn": ["Canceled"]}}}]}})
        wait_for(lambda: (_retry_policy(envoy, listener) or {}).get("num_retries") == 2,
                 timeout=60, what="the MeshRetry's gRPC retry policy in Envoy")

        assert (_retry_policy(envoy, listener) or {})["retry_on"] == "cancelled"
        assert _call(f"{vip}:{port}", b"with") == b"ok"


def _call(target: str, request: bytes) -> bytes:
    with grpc.insecure_channel(target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_NAME_METHOD)
        return call(request, timeout=10)
