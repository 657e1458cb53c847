"""MeshTimeout and MeshRetry for proxyless gRPC with real parts: `meshlog up`, a real grpcio
server as `backend` and grpcio's own xDS client (`xds:///backend:<port>`) as Dataplane
`client-1`, with no Envoy in between (xds_gateway.resources.proxyless_policies).

- A 3 s call answers without a MeshTimeout and ends DEADLINE_EXCEEDED once one with
  `requestTimeout: 1s` selects the client (the route's `max_stream_duration`, gRFC A31; the
  client's own deadline is 30 s), and answers again once the policy is deleted.
- A call the backend ends UNAVAILABLE the first time is UNAVAILABLE without a MeshRetry and
  answered once a MeshRetry's `grpc` section with `retryOn: [Unavailable]` selects the client
  (the route's `retry_policy`, gRFC A44: grpcio retried it).

The config's arrival is polled by calls, as tests/integration/test_proxyless_grpc.py does: a
call behaves the new way once grpcio has the new route. The slow method's sleep is the
behaviour under test (a call that takes 3 s), not synchronisation.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import (
    ControlPlane,
    failing_first,
    free_port,
    grpc_server,
    meshlog_up,
    wait_for,
)
from tests.integration._proxyless import BACKEND, proxyless_client

pytestmark = pytest.mark.integration

SLOW_METHOD = "/meshlog.test.Policies/Slow"
FLAKY_METHOD = "/meshlog.test.Policies/Flaky"
SLOW_S = 3.0
CLIENT_DEADLINE_S = 30.0


def _backend(host: str, port: int) -> contextlib.AbstractContextManager[None]:
    """A gRPC server with two methods: `Slow` answers `slow` after SLOW_S, `Flaky` ends the
    first call of each request body UNAVAILABLE and answers the later ones `ok`."""

    def slow(_request: bytes, _context: grpc.ServicerContext) -> bytes:
        time.sleep(SLOW_S)  # the behaviour under test: a call that takes SLOW_S
        return b"slow"

    return grpc_server(host, port, "meshlog.test.Policies",
                       {"Slow": slow, "Flaky": failing_first(grpc.StatusCode.UNAVAILABLE)})


@contextlib.contextmanager
def _mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[ControlPlane, grpc.Channel]]:
    """`meshlog up --no-auth` (gRPC sends no token over plaintext), the backend, the client's
    Dataplane and a channel to `xds:///backend:<port>` that has reached the backend."""
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--no-auth") as cp, _backend(BACKEND, port):
        cp.apply({"type": "Mesh", "name": "default"})
        # the second call of a body answers: the channel has its config and the backend
        with proxyless_client(cp, monkeypatch, port, lambda channel: _code(
                channel, FLAKY_METHOD, b"ready") == grpc.StatusCode.OK) as channel:
            yield cp, channel


def _code(channel: grpc.Channel, method: str, request: bytes) -> grpc.StatusCode:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    try:
        call(request, timeout=CLIENT_DEADLINE_S)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def _for_client(cp: ControlPlane, kind: str, name: str, default: dict[str, Any]) -> None:
    """A policy of `kind` selecting the client, with `default` for its outbound to backend."""
    cp.apply({"type": kind, "mesh": "default", "name": name,
              "spec": {"targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "client"}},
                       "to": [{"targetRef": {"kind": "MeshService", "name": "backend"},
                               "default": default}]}})


def test_a_request_timeout_caps_a_proxyless_calls_deadline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, monkeypatch) as (cp, channel):
        assert _code(channel, SLOW_METHOD, b"") == grpc.StatusCode.OK

        _for_client(cp, "MeshTimeout", "client-timeout", {"http": {"requestTimeout": "1s"}})
        wait_for(lambda: _code(channel, SLOW_METHOD, b"")
                 == grpc.StatusCode.DEADLINE_EXCEEDED,
                 timeout=60, what="the MeshTimeout to cap the slow call")

        assert cp.api.delete("/meshes/default/meshtimeouts/client-timeout").status_code == 200
        wait_for(lambda: _code(channel, SLOW_METHOD, b"") == grpc.StatusCode.OK,
                 timeout=60, what="the slow call to answer without the MeshTimeout")


def test_a_grpc_retry_on_unavailable_turns_a_first_unavailable_into_an_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, monkeypatch) as (cp, channel):
        assert _code(channel, FLAKY_METHOD, b"without") == grpc.StatusCode.UNAVAILABLE

        _for_client(cp, "MeshRetry", "client-retry",
                    {"grpc": {"numRetries": 2, "retryOn": ["Unavailable"]}})
        bodies = (f"with-{n}".encode() for n in itertools.count())
        # each a first call: UNAVAILABLE until grpcio has the retry policy, then answered
        wait_for(lambda: _code(channel, FLAKY_METHOD, next(bodies)) == grpc.StatusCode.OK,
                 timeout=60, what="the MeshRetry to retry the first UNAVAILABLE")
