"""Outbounds to `http` and `grpc` ports balance requests, not connections: a real Envoy
sidecar, two real backends of one service, and one client connection through the VIP.

Over L4 (tcp_proxy, any other `appProtocol`) a connection is pinned to the endpoint it was
opened to, so a keep-alive HTTP/1.1 client or a gRPC channel (one HTTP/2 connection) reaches
one backend only; over L7 each request is routed on its own.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    GRPC_NAME_METHOD,
    ControlPlane,
    Envoy,
    free_port,
    free_port_on_all,
    grpc_backend,
    http_backend,
    meshlog_up,
    run_envoy,
    serving,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKENDS = {"backend-1": "127.0.0.2", "backend-2": "127.0.0.3"}


def _dataplane(name: str, address: str, port: int, service: str, protocol: str
               ) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "main", "protocol": protocol,
                 "tags": {"kuma.io/service": service}}]}}


@contextlib.contextmanager
def _upgrade_backend(host: str, port: int) -> Iterator[None]:
    """An HTTP/1.1 server that switches every request to WebSocket (101) and then echoes the
    bytes it gets: what a WebSocket handshake and its frames need of the path between."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            while self.rfile.readline() not in (b"\r\n", b""):
                pass  # the request's headers
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\n\r\n")
            while data := self.request.recv(4096):
                self.request.sendall(data)

    with serving(socketserver.ThreadingTCPServer((host, port), Handler)):
        yield


@contextlib.contextmanager
def _sidecar_of_web(cp: ControlPlane, tmp_path: Path, port: int, protocol: str
                    ) -> Iterator[tuple[Envoy, str]]:
    """Both backends registered with `protocol`, and web's Envoy once it has backend's VIP
    listener; yields the Envoy and the VIP."""
    cp.apply({"type": "Mesh", "name": "default"})
    for name, address in BACKENDS.items():
        cp.apply(_dataplane(name, address, port, "backend", protocol))
    cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web", "http"))
    vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=cp.xds_port, admin_port=0,
                                  token=cp.dataplane_token("web-1"))
    with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
        wait_for(lambda: f"outbound:{vip}:{port}" in envoy.listeners(), timeout=60,
                 what="the backend VIP listener in Envoy")
        # both endpoints in EDS before counting who answers
        wait_for(lambda: envoy.stats("default_backend___msvc_").get(
            f"cluster.default_backend___msvc_{port}.membership_healthy") == 2,
            timeout=60, what="both backends in the cluster")
        yield envoy, vip


def test_one_keep_alive_http_connection_reaches_every_endpoint(tmp_path: Path) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend(BACKENDS["backend-1"], port, "backend-1", keep_alive=True), \
            http_backend(BACKENDS["backend-2"], port, "backend-2", keep_alive=True), \
            _sidecar_of_web(cp, tmp_path, port, "http") as (envoy, vip), \
            httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as client:
        answers = [client.get(f"http://{vip}:{port}/").text for _ in range(40)]
        assert set(answers) == {"backend-1", "backend-2"}, answers
        # one connection from the client to Envoy carried them all
        assert envoy.stats("downstream_cx_total").get(
            f"http.default_backend___msvc_{port}.downstream_cx_total") == 1


def test_one_grpc_channel_reaches_every_endpoint_in_http2(tmp_path: Path) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            grpc_backend(BACKENDS["backend-1"], port, "backend-1"), \
            grpc_backend(BACKENDS["backend-2"], port, "backend-2"), \
            _sidecar_of_web(cp, tmp_path, port, "grpc") as (_envoy, vip), \
            grpc.insecure_channel(f"{vip}:{port}") as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_NAME_METHOD)
        answers = {call(b"", timeout=10) for _ in range(40)}
        assert answers == {b"backend-1", b"backend-2"}, answers


def test_a_websocket_upgrade_passes_and_then_its_bytes(tmp_path: Path) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _upgrade_backend(BACKENDS["backend-1"], port), \
            _upgrade_backend(BACKENDS["backend-2"], port), \
            _sidecar_of_web(cp, tmp_path, port, "http") as (_envoy, vip), \
            socket.create_connection((vip, port), timeout=10) as conn:
        conn.sendall(f"GET /chat HTTP/1.1\r\nHost: backend:{port}\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        reader = conn.makefile("rb")
        assert reader.readline().startswith(b"HTTP/1.1 101"), "the upgrade was refused"
        while reader.readline() not in (b"\r\n", b""):
            pass
        conn.sendall(b"\x81\x05hello")  # a frame, as bytes the upgraded stream carries
        assert reader.read(7) == b"\x81\x05hello"


def test_an_http_1_0_request_without_a_host_is_routed(tmp_path: Path) -> None:
    """Old clients and probes speak HTTP/1.0 and may send no Host header: the L7 outbound
    takes them (Envoy refuses HTTP/1.0 unless told, and one without a Host unless it has a
    default host for it)."""
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend(BACKENDS["backend-1"], port, "backend-1"), \
            http_backend(BACKENDS["backend-2"], port, "backend-2"), \
            _sidecar_of_web(cp, tmp_path, port, "http") as (_envoy, vip), \
            socket.create_connection((vip, port), timeout=10) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer
        assert answer.endswith((b"backend-1", b"backend-2")), answer

