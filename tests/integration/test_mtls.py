"""Mesh mTLS with real Envoy sidecars, real backends and real traffic (issue 11).

Layout on loopback: the `backend` app listens on 127.0.0.1:<app>; its sidecar (Dataplane
`backend-1`, address 127.0.0.2) terminates the mesh's mTLS on 127.0.0.2:<inbound>. The `web`
sidecar (Dataplane `web-1`, 127.0.0.4) has an outbound listener on backend's VIP (inside
127.0.0.0/8, so Envoy binds it without iptables) and originates mTLS to backend's sidecar.
A Python TLS client with a workload certificate read from the read-model store plays a
workload that is not a sidecar, to see the server's certificate and RBAC from outside.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    ControlPlane,
    Envoy,
    fetch,
    free_port,
    http_backend,
    meshlog_up,
    run_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKEND_IP = "127.0.0.2"
WEB_IP = "127.0.0.4"


def mesh(mode: str = "STRICT", *, backends: tuple[str, ...] = ("ca-1",), enabled: str = "ca-1",
         expiration: str = "24h") -> dict[str, Any]:
    return {"type": "Mesh", "name": "default", "mtls": {
        "enabledBackend": enabled,
        "backends": [{"name": b, "type": "builtin", "mode": mode,
                      "dpCert": {"rotation": {"expiration": expiration}}} for b in backends]}}


def dataplane(name: str, address: str, port: int, service: str, *,
              service_port: int | None = None) -> dict[str, Any]:
    inbound: dict[str, Any] = {"port": port, "tags": {"kuma.io/service": service}}
    if service_port is not None:
        inbound["servicePort"] = service_port
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [inbound]}}


def allow(name: str, from_service: str, *, to: str = "backend") -> dict[str, Any]:
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": {
        "targetRef": {"kind": "MeshService", "name": to},
        "from": [{"targetRef": {"kind": "MeshService", "name": from_service},
                  "default": {"action": "Allow"}}]}}


class Mesh:
    """The control plane, the backend app and both sidecars, started."""

    def __init__(self, cp: ControlPlane, backend: Envoy, web: Envoy, inbound: int, url: str):
        self.cp = cp
        self.backend = backend
        self.web = web
        self.inbound = inbound
        self.url = url

    def identity(self, dataplane: str) -> dict[str, Any]:
        """The workload certificate row of `dataplane`, from the read-model store."""
        db = sqlite3.connect(self.cp.data_dir / "readmodels.db")
        try:
            row = db.execute("SELECT body FROM rows WHERE collection = 'identity' AND key = ?",
                             (f"default/{dataplane}",)).fetchone()
        finally:
            db.close()
        assert row is not None, f"no identity row for {dataplane}"
        return json.loads(row[0])


@contextlib.contextmanager
def running_mesh(tmp_path: Path, mesh_doc: dict[str, Any]) -> Iterator[Mesh]:
    app_port = free_port("127.0.0.1")
    inbound = free_port(BACKEND_IP)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend("127.0.0.1", app_port, "backend-app"):
        cp.apply(mesh_doc)
        cp.apply(dataplane("backend-1", BACKEND_IP, inbound, "backend", service_port=app_port))
        cp.apply(dataplane("web-1", WEB_IP, free_port(WEB_IP), "web"))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        boots = {name: sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                                         xds_port=cp.xds_port, admin_port=0)
                 for name in ("backend-1", "web-1")}
        with run_envoy(boots["backend-1"], tmp_path / "envoy", "backend-1") as backend, \
                run_envoy(boots["web-1"], tmp_path / "envoy", "web-1") as web:
            wait_for(lambda: f"inbound:{BACKEND_IP}:{inbound}" in backend.listeners(),
                     timeout=20, what="backend's inbound listener (warm: secrets arrived)")
            wait_for(lambda: f"outbound:{vip}:{inbound}" in web.listeners(), timeout=20,
                     what="web's outbound listener to backend's VIP")
            yield Mesh(cp, backend, web, inbound, f"http://{vip}:{inbound}/")


def tls_client(m: Mesh, dataplane: str, *, alpn: str = "kuma") -> ssl.SSLContext:
    """A client context holding `dataplane`'s workload certificate and trusting the mesh."""
    ident = m.identity(dataplane)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # meshlog checks URI SANs, not host names
    with tempfile.TemporaryDirectory() as d:
        cert, key = Path(d, "cert.pem"), Path(d, "key.pem")
        cert.write_text(ident["cert"])
        key.write_text(ident["key"])
        ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cadata=trust_roots(m))
    ctx.set_alpn_protocols([alpn])
    return ctx


def trust_roots(m: Mesh) -> str:
    db = sqlite3.connect(m.cp.data_dir / "readmodels.db")
    try:
        (body,) = db.execute("SELECT body FROM rows WHERE collection = 'trust' "
                             "AND key = 'default'").fetchone()
    finally:
        db.close()
    return "".join(json.loads(body)["roots"])


def http_over(sock: socket.socket) -> str:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: backend\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data.decode(errors="replace")


def peer_uris(sock: ssl.SSLSocket) -> list[str]:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)


def through_backend_sidecar(m: Mesh, dataplane: str) -> tuple[list[str], str]:
    """(the backend sidecar's URI SANs, the HTTP answer) for a client holding `dataplane`'s
    certificate."""
    ctx = tls_client(m, dataplane)
    with socket.create_connection((BACKEND_IP, m.inbound), timeout=5) as raw, \
            ctx.wrap_socket(raw) as sock:
        return peer_uris(sock), http_over(sock)


def plaintext_answer(m: Mesh) -> str | None:
    """What a plaintext client gets from backend's sidecar; None if it is cut off."""
    try:
        with socket.create_connection((BACKEND_IP, m.inbound), timeout=5) as sock:
            answer = http_over(sock)
    except OSError:
        return None
    return answer or None


def test_strict_mtls_between_sidecars_and_deny_by_default(tmp_path: Path) -> None:
    with running_mesh(tmp_path, mesh("STRICT")) as m:
        # no MeshTrafficPermission: with mTLS on, nothing is allowed (Kuma >= 2.6)
        assert fetch(m.url) in (None, "")
        wait_for(lambda: sum(m.backend.stats("rbac.denied").values()) >= 1, timeout=5,
                 what="the backend sidecar's RBAC to deny web")
        handshakes = sum(v for k, v in m.backend.stats("ssl.handshake").items()
                         if k.startswith("listener."))
        assert handshakes >= 1, m.backend.stats("ssl")
