"""Proxyless gRPC with real parts: `meshlog up`, real grpcio servers and grpcio's own xDS client.

Two grpcio servers are registered as the Dataplanes of MeshService `backend`; a client
Dataplane `client-1` calls `xds:///backend:<port>` with a bootstrap (GRPC_XDS_BOOTSTRAP_CONFIG)
pointing at the gateway and node id `default.client-1`, with no Envoy in between
(xds-rules.md #13). Deregistering the backend it hits moves its calls to the other one.
The control plane runs `--no-auth`: see below.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from tests.harness import free_port, free_port_on_all, meshlog_up, wait_for

pytestmark = pytest.mark.integration

METHOD = "/meshlog.test.Echo/Who"
BACKENDS = {"backend-1": "127.0.0.2", "backend-2": "127.0.0.3"}


@contextlib.contextmanager
def grpc_backend(host: str, port: int, name: str) -> Iterator[None]:
    """A grpcio server answering METHOD with its own name."""
    handler = grpc.method_handlers_generic_handler("meshlog.test.Echo", {
        "Who": grpc.unary_unary_rpc_method_handler(lambda request, context: name.encode()),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    try:
        yield
    finally:
        server.stop(grace=None)


def _dataplane(name: str, address: str, port: int, service: str) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "protocol": "grpc", "tags": {"kuma.io/service": service}}]}}


def _who(channel: grpc.Channel) -> str | None:
    try:
        return channel.unary_unary(METHOD)(b"", timeout=2).decode()
    except grpc.RpcError:
        return None


def test_xds_client_reaches_backends_and_follows_deregistration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    # --no-auth: gRPC sends call credentials (a dataplane token, gRFC A97) only over a secure
    # channel, and the gateway serves plaintext (grpcio 1.85: "Established channel does not
    # have a sufficient security level to transfer call credential")
    with meshlog_up(tmp_path / "cp", "--no-auth") as cp, \
            grpc_backend(BACKENDS["backend-1"], port, "backend-1"), \
            grpc_backend(BACKENDS["backend-2"], port, "backend-2"):
        cp.apply({"type": "Mesh", "name": "default"})
        for name, address in BACKENDS.items():
            cp.apply(_dataplane(name, address, port, "backend"))
        cp.apply(_dataplane("client-1", "127.0.0.5", free_port("127.0.0.5"), "client"))

        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps({
            "xds_servers": [{"server_uri": f"127.0.0.1:{cp.xds_port}",
                             "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "default.client-1"},
        }))
        with grpc.insecure_channel(f"xds:///backend:{port}") as channel:
            seen: set[str] = set()
            wait_for(lambda: seen.add(_who(channel) or "") or set(BACKENDS) <= seen,
                     timeout=20, what="calls through xds:/// reaching both backends")

            hit = _who(channel)
            assert hit in BACKENDS
            other = next(b for b in BACKENDS if b != hit)
            assert cp.api.delete(f"/meshes/default/dataplanes/{hit}").status_code == 200
            wait_for(lambda: all(_who(channel) == other for _ in range(10)), timeout=10,
                     what=f"calls to move from {hit} to {other}")
        assert "--no-auth: the xDS gateway on" in (cp.data_dir / "up.log").read_text()
