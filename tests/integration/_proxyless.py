"""What the proxyless gRPC policy tests share: the `backend` and `client-1` Dataplanes of a
`meshlog up`, and grpcio's own xDS client as `client-1` (`xds:///backend:<port>`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from tests.harness import ControlPlane, free_port, wait_for

BACKEND = "127.0.0.2"


def grpc_dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "protocol": "grpc", "tags": {"kuma.io/service": service}}]}}


@contextlib.contextmanager
def proxyless_client(cp: ControlPlane, monkeypatch: pytest.MonkeyPatch, port: int,
                     ready: Callable[[grpc.Channel], bool]) -> Iterator[grpc.Channel]:
    """Dataplanes `backend-1` (BACKEND:`port`) and `client-1` in mesh `default` (which must
    exist), and a channel to `xds:///backend:<port>` as `client-1`, once `ready(channel)`
    (a call that answered: the client has its config and the backend)."""
    cp.apply(grpc_dataplane("backend-1", BACKEND, port, "backend"))
    cp.apply(grpc_dataplane("client-1", "127.0.0.5", free_port("127.0.0.5"), "client"))
    monkeypatch.setenv("GRPC_XDS_BOOTSTRAP_CONFIG", json.dumps({
        "xds_servers": [{"server_uri": f"127.0.0.1:{cp.xds_port}",
                         "channel_creds": [{"type": "insecure"}],
                         "server_features": ["xds_v3"]}],
        "node": {"id": "default.client-1"},
    }))
    with grpc.insecure_channel(f"xds:///backend:{port}") as channel:
        wait_for(lambda: ready(channel), timeout=60, what="a call through xds:/// answered")
        yield channel
