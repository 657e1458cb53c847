"""Proxyless gRPC with real parts: `meshlog up`, real grpcio servers and grpcio's own xDS client.

Two grpcio servers are registered as the Dataplanes of MeshService `backend`; a client
Dataplane `client-1` calls `xds:///backend:<port>` with a bootstrap (GRPC_XDS_BOOTSTRAP_CONFIG)
pointing at the gateway and node id `default.client-1`, with no Envoy in between
(xds-rules.md #13). Deregistering the backend it hits moves its calls to the other one.

Over TLS (`meshlog up --xds-tls`) the client trusts the control plane's CA (`channel_creds`
`tls`) and sends its dataplane token as call credentials (gRFC A97's `jwt_token_file`), and
tokens are required. Over plaintext gRPC sends no call credentials at all, so that case runs
`--no-auth`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.harness import (
    GRPC_NAME_METHOD,
    ControlPlane,
    free_port,
    free_port_on_all,
    grpc_backend,
    meshlog_up,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKENDS = {"backend-1": "127.0.0.2", "backend-2": "127.0.0.3"}


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "protocol": "grpc", "tags": {"kuma.io/service": service}}]}}


def _who(channel: grpc.Channel) -> str | None:
    try:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_NAME_METHOD)
        return call(b"", timeout=10).decode()  # a slow answer on a loaded machine is one
    except grpc.RpcError:
        return None


def _calls_follow_the_backends(cp: ControlPlane, port: int) -> None:
    """Calls through `xds:///backend:<port>` reach both backends, then only the one left
    after the other is deregistered."""
    with grpc.insecure_channel(f"xds:///backend:{port}") as channel:
        seen: set[str] = set()

        def both_seen() -> bool:
            seen.add(_who(channel) or "")
            return set(BACKENDS) <= seen

        wait_for(both_seen, timeout=60, what="calls through xds:/// reaching both backends")

        hit = wait_for(lambda: _who(channel), what="a call answered")
        assert hit in BACKENDS
        other = next(b for b in BACKENDS if b != hit)
        assert cp.api.delete(f"/meshes/default/dataplanes/{hit}").status_code == 200
        wait_for(lambda: all(_who(channel) == other for _ in range(10)), timeout=60,
                 what=f"calls to move from {hit} to {other}")


@contextlib.contextmanager
def _mesh(tmp_path: Path, *up: str) -> Iterator[tuple[ControlPlane, int]]:
    """`meshlog up`, both grpcio backends and the client's Dataplane `client-1`."""
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", *up) as cp, \
            grpc_backend(BACKENDS["backend-1"], port, "backend-1"), \
            grpc_backend(BACKENDS["backend-2"], port, "backend-2"):
        cp.apply({"type": "Mesh", "name": "default"})
        for name, address in BACKENDS.items():
            cp.apply(_dataplane(name, address, port, "backend"))
        cp.apply(_dataplane("client-1", "127.0.0.5", free_port("127.0.0.5"), "client"))
        yield cp, port


def test_xds_client_over_tls_sends_its_token_and_follows_deregistration(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _mesh(tmp_path, "--xds-tls") as (cp, port):
        token_file = cp.token_file("client-1", tmp_path / "client")
        # grpcio reads call credentials from the bootstrap only with this set (gRFC A97)
        monkeypatch.setenv("GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", "true")
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps({
            "xds_servers": [{
                "server_uri": f"localhost:{cp.xds_port}",
                "channel_creds": [{"type": "tls", "config": {
                    "ca_certificate_file": cp.where["xds_ca_cert"]}}],
                "call_creds": [{"type": "jwt_token_file", "config": {
                    "jwt_token_file": str(token_file)}}],
                "server_features": ["xds_v3"]}],
            "node": {"id": "default.client-1"},
        }))
        _calls_follow_the_backends(cp, port)
    log = (cp.data_dir / "up.log").read_text()
    assert "no dataplane token" not in log and "--no-auth" not in log


def test_xds_client_over_plaintext_needs_no_auth(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # --no-auth: gRPC sends call credentials (a dataplane token, gRFC A97) only over a secure
    # channel (grpcio 1.85: "Established channel does not have a sufficient security level to
    # transfer call credential")
    with _mesh(tmp_path, "--no-auth") as (cp, port):
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps({
            "xds_servers": [{"server_uri": f"127.0.0.1:{cp.xds_port}",
                             "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": "default.client-1"},
        }))
        _calls_follow_the_backends(cp, port)
    assert "--no-auth: the xDS gateway on" in (cp.data_dir / "up.log").read_text()
