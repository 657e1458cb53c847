"""MeshCircuitBreaker for proxyless gRPC with real parts: `meshlog up`, a real grpcio server
as `backend` and grpcio's own xDS client (`xds:///backend:<port>`) as Dataplane `client-1`,
with no Envoy in between (xds_gateway.resources.proxyless_policies.for_cluster).

Of two concurrent calls to a backend that holds each call until the test releases it, both
reach the backend without a MeshCircuitBreaker; once one with `connectionLimits.maxRequests:
1` selects the client, the second fails UNAVAILABLE at once, without reaching the backend,
while the first is held (the cluster's `max_requests`, gRFC A32: gRPC's "circuit breaker
drop"); once the policy is deleted both reach it again. The same policy sets outlier
detection by success rate and failure percentage with every field gRPC reads: gRPC would
NACK the whole cluster (and keep the old one, without the limit) if it refused any of them.
Ejection itself is shown on config only (test_proxyless_circuit_breaker_config.py): it
needs gRPC's interval timer and a statistic over several backends.

The calls synchronise on the backend (a condition it notifies when a call arrives, and one
the second call notifies when it ends); the config's arrival is polled by such pairs of
calls, as tests/integration/test_proxyless_policies.py does.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import ControlPlane, free_port, grpc_server, meshlog_up, wait_for
from tests.integration._proxyless import BACKEND, proxyless_client

pytestmark = pytest.mark.integration

HOLD_METHOD = "/meshlog.test.Breaker/Hold"
CLIENT_DEADLINE_S = 30.0
WAIT_S = 20.0
"""At most how long a call or the backend is waited for (a bound, never a pause)."""

_LIMIT_ONE = {
    "connectionLimits": {"maxRequests": 1},
    "outlierDetection": {"interval": "1s", "baseEjectionTime": "2s", "maxEjectionPercent": 50,
                         "detectors": {
                             "successRate": {"minimumHosts": 2, "requestVolume": 3,
                                             "standardDeviationFactor": "1.5"},
                             "failurePercentage": {"minimumHosts": 2, "requestVolume": 3,
                                                   "threshold": 90}}}}


class _Holding:
    """A gRPC method that holds each call until `release`, counting the calls that arrived
    since `reset`."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.arrived = 0
        self._release = threading.Event()

    def hold(self, _request: bytes, _context: grpc.ServicerContext) -> bytes:
        with self.changed:
            self.arrived += 1
            release = self._release  # this round's: a later reset does not strand the call
            self.changed.notify_all()
        release.wait(CLIENT_DEADLINE_S)  # a bound: the test releases every call it makes
        return b"released"

    def reset(self) -> None:
        with self.changed:
            self.arrived = 0
            self._release = threading.Event()

    def release(self) -> None:
        with self.changed:
            self._release.set()

    def wait(self, until: Any) -> bool:
        with self.changed:
            return bool(self.changed.wait_for(until, timeout=WAIT_S))


@contextlib.contextmanager
def _backend(host: str, port: int, holding: _Holding) -> Iterator[None]:
    with grpc_server(host, port, "meshlog.test.Breaker", {"Hold": holding.hold}):
        try:
            yield
        finally:
            holding.release()  # before the server stops: no call is left held


@contextlib.contextmanager
def _mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[ControlPlane, grpc.Channel, _Holding]]:
    """`meshlog up --no-auth` (gRPC sends no token over plaintext), the holding backend, the
    client's Dataplane and a channel to `xds:///backend:<port>` that has reached it."""
    port, holding = free_port(BACKEND), _Holding()
    with meshlog_up(tmp_path / "cp", "--no-auth") as cp, _backend(BACKEND, port, holding):
        cp.apply({"type": "Mesh", "name": "default"})

        def answered(channel: grpc.Channel) -> bool:
            hold: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                HOLD_METHOD)
            holding.release()  # every call answers at once here
            try:
                return hold(b"ready", timeout=CLIENT_DEADLINE_S) == b"released"
            except grpc.RpcError:
                return False

        with proxyless_client(cp, monkeypatch, port, answered) as channel:
            yield cp, channel, holding


def _second_of_two(channel: grpc.Channel, holding: _Holding) -> grpc.RpcError | None:
    """Two calls, the second made while the backend holds the first: the second's error when
    it ends before reaching the backend, None when both reach it. Either way every call is
    released and the first answers."""
    hold: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(HOLD_METHOD)
    holding.reset()
    first = hold.future(b"first", timeout=CLIENT_DEADLINE_S)
    second = None
    try:
        assert holding.wait(lambda: holding.arrived == 1), "the first call reached no backend"
        second = hold.future(b"second", timeout=CLIENT_DEADLINE_S)

        def notify(_call: Any) -> None:
            with holding.changed:
                holding.changed.notify_all()

        second.add_done_callback(notify)
        assert holding.wait(lambda: second.done() or holding.arrived == 2), (
            "the second call neither ended nor reached the backend")
        if holding.arrived == 2:
            return None
        assert not first.done(), "the first call ended while the backend held it"
        error = second.exception()
        assert isinstance(error, grpc.RpcError)
        return error
    finally:
        holding.release()
        assert first.result(timeout=WAIT_S) == b"released"
        if second is not None:
            second.exception(timeout=WAIT_S)  # ended either way (answered or dropped)


def test_max_requests_1_drops_a_second_concurrent_call_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, monkeypatch) as (cp, channel, holding):
        assert _second_of_two(channel, holding) is None  # both reach the backend

        cp.apply({"type": "MeshCircuitBreaker", "mesh": "default", "name": "client-limit",
                  "spec": {"targetRef": {"kind": "MeshSubset",
                                         "tags": {"kuma.io/service": "client"}},
                           "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                                   "default": _LIMIT_ONE}]}})
        dropped = wait_for(lambda: _second_of_two(channel, holding), timeout=60,
                           what="the MeshCircuitBreaker to drop the second call")

        assert dropped.code() == grpc.StatusCode.UNAVAILABLE
        assert "circuit breaker drop" in (dropped.details() or "")
        assert holding.arrived == 1  # the second never reached the backend

        assert cp.api.delete(
            "/meshes/default/meshcircuitbreakers/client-limit").status_code == 200
        wait_for(lambda: _second_of_two(channel, holding) is None, timeout=60,
                 what="both calls to reach the backend without the MeshCircuitBreaker")
