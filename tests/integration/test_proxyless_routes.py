"""MeshHTTPRoute for proxyless gRPC with real parts: `meshlog up`, real grpcio servers as
`backend` (v1) and `backend-v2`, and grpcio's own xDS client (`xds:///backend:<port>`) as
Dataplane `client-1`, with no Envoy in between (xds_gateway.resources.proxyless_routes).

With a MeshHTTPRoute about `backend` selecting the client, a call with `x-version: v2`
reaches backend-v2 (a header match, gRFC A28), a call to `Split` reaches both backends (a
50/50 `weighted_clusters`), a call to `Prefixed` reaches backend-v2 (a PathPrefix, sent as
gRPC's `safe_regex`), a call to `Gone` (a backendRef that does not resolve: Envoy's 500) fails
UNAVAILABLE, and other calls reach backend v1 (the default route); with the route deleted
every call reaches v1 again. grpcio accepting the header route shows it accepted the whole
RouteConfiguration (a NACK refuses all of it). The config's arrival is polled by calls, as
tests/integration/test_proxyless_policies.py does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from tests.harness import ControlPlane, free_port, grpc_server, meshlog_up, wait_for
from tests.integration._proxyless import BACKEND, grpc_dataplane, proxyless_client

pytestmark = pytest.mark.integration

SERVICE = "meshlog.test.Routes"
WHO = f"/{SERVICE}/Who"
SPLIT = f"/{SERVICE}/Split"
PREFIXED = f"/{SERVICE}/Prefixed"
GONE = f"/{SERVICE}/Gone"
BACKEND_V2 = "127.0.0.3"


def _backend(host: str, port: int, name: bytes) -> contextlib.AbstractContextManager[None]:
    return grpc_server(host, port, SERVICE, {
        method: lambda _r, _c: name for method in ("Who", "Split", "Prefixed", "Gone")})


def _who(channel: grpc.Channel, method: str = WHO, version: str | None = None) -> bytes:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(method)
    metadata = None if version is None else (("x-version", version),)
    answer: bytes = call(b"", timeout=30, metadata=metadata)
    return answer


@contextlib.contextmanager
def _mesh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
          ) -> Iterator[tuple[ControlPlane, grpc.Channel, int]]:
    """`meshlog up --no-auth`, both backends (`backend-v2` a MeshService of its own) and a
    channel as `client-1` that has reached backend v1."""
    port = free_port(BACKEND)
    with (meshlog_up(tmp_path / "cp", "--no-auth") as cp,
          _backend(BACKEND, port, b"v1"), _backend(BACKEND_V2, port, b"v2")):
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(grpc_dataplane("backend-v2-1", BACKEND_V2, port, "backend-v2"))
        with proxyless_client(cp, monkeypatch, port,
                              lambda channel: _who(channel) == b"v1") as channel:
            yield cp, channel, port


def test_a_header_match_and_a_weighted_split_route_proxyless_calls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, monkeypatch) as (cp, channel, port):
        assert _who(channel, version="v2") == b"v1"  # no route yet

        cp.apply({"type": "MeshHTTPRoute", "mesh": "default", "name": "versions", "spec": {
            "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "client"}},
            "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
                {"matches": [{"headers": [{"type": "Exact", "name": "x-version",
                                           "value": "v2"}]}],
                 "default": {"backendRefs": [
                     {"kind": "MeshService", "name": "backend-v2", "weight": 1}]}},
                {"matches": [{"headers": [  # gRPC adds `:authority` after routing
                    {"type": "Exact", "name": ":authority", "value": f"backend:{port}"},
                    {"type": "Exact", "name": "X-Version", "value": "v3"}]}],  # any case
                 "default": {"backendRefs": [
                     {"kind": "MeshService", "name": "backend-v2", "weight": 1}]}},
                {"matches": [{"path": {"type": "Exact", "value": SPLIT}}],
                 "default": {"backendRefs": [
                     {"kind": "MeshService", "name": "backend", "weight": 1},
                     {"kind": "MeshService", "name": "backend-v2", "weight": 1}]}},
                {"matches": [{"path": {"type": "PathPrefix", "value": PREFIXED}}],
                 "default": {"backendRefs": [
                     {"kind": "MeshService", "name": "backend-v2", "weight": 1}]}},
                {"matches": [{"path": {"type": "Exact", "value": GONE}}],
                 "default": {"backendRefs": [
                     {"kind": "MeshService", "name": "nowhere", "weight": 1}]}}]}]}})
        wait_for(lambda: _who(channel, version="v2") == b"v2",
                 timeout=60, what="a call with x-version: v2 to reach backend-v2")

        assert {_who(channel) for _ in range(8)} == {b"v1"}
        assert {_who(channel, version="v1") for _ in range(8)} == {b"v1"}
        assert _who(channel, version="v3") == b"v2"  # as Envoy: the call's authority matches
        assert _who(channel, PREFIXED) == b"v2"  # a PathPrefix, as gRPC reads it
        with pytest.raises(grpc.RpcError) as gone:  # a backend that does not resolve
            _who(channel, GONE)
        assert gone.value.code() == grpc.StatusCode.UNAVAILABLE
        reached: set[bytes] = set()

        def both() -> bool:
            reached.add(_who(channel, SPLIT))
            return reached == {b"v1", b"v2"}

        wait_for(both, timeout=60, what="the 50/50 split to reach both backends")

        assert cp.api.delete("/meshes/default/meshhttproutes/versions").status_code == 200
        wait_for(lambda: _who(channel, version="v2") == b"v1",
                 timeout=60, what="a call with x-version: v2 to reach v1 without the route")
