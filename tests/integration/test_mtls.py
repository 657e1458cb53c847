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
import datetime
import json
import socket
import sqlite3
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    GRPC_NAME_METHOD,
    ControlPlane,
    Envoy,
    fetch,
    free_port,
    grpc_backend,
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
              service_port: int | None = None, reaches_nothing: bool = False,
              protocol: str | None = None) -> dict[str, Any]:
    """`reaches_nothing`: no outbound listeners. Sidecars on one host share loopback, and
    two Envoys with a listener on the same VIP:port would share its connections
    (SO_REUSEPORT): web's requests would leave half the time from backend's sidecar, with
    backend's identity."""
    inbound: dict[str, Any] = {"port": port, "tags": {"kuma.io/service": service}}
    if protocol is not None:
        inbound["protocol"] = protocol
    if service_port is not None:
        inbound["servicePort"] = service_port
    networking: dict[str, Any] = {"address": address, "inbound": [inbound]}
    if reaches_nothing:
        networking["transparentProxying"] = {"reachableBackends": {"refs": [
            {"kind": "MeshService", "name": "nothing"}]}}
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def allow(name: str, from_service: str, *, to: str = "backend") -> dict[str, Any]:
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": {
        "targetRef": {"kind": "MeshService", "name": to},
        "from": [{"targetRef": {"kind": "MeshService", "name": from_service},
                  "default": {"action": "Allow"}}]}}


class Mesh:
    """The control plane, the backend app and both sidecars, started."""

    def __init__(self, cp: ControlPlane, backend: Envoy, web: Envoy, inbound: int, url: str,
                 backend_app_port: int):
        self.cp = cp
        self.backend_app_port = backend_app_port
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
        return cast("dict[str, Any]", json.loads(row[0]))


@contextlib.contextmanager
def running_mesh(tmp_path: Path, mesh_doc: dict[str, Any], *, delta: bool = False,
                 protocol: str | None = None) -> Iterator[Mesh]:
    """`protocol`: backend's inbound's (`grpc`: the app is a gRPC server, else HTTP)."""
    app_port = free_port("127.0.0.1")
    inbound = free_port(BACKEND_IP)
    app = (grpc_backend("127.0.0.1", app_port, "backend-app") if protocol == "grpc" else
           http_backend("127.0.0.1", app_port, "backend-app", keep_alive=True))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, app:
        cp.apply(mesh_doc)
        cp.apply(dataplane("backend-1", BACKEND_IP, inbound, "backend", service_port=app_port,
                           reaches_nothing=True, protocol=protocol))
        cp.apply(dataplane("web-1", WEB_IP, free_port(WEB_IP), "web"))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        boots = {name: sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                                         xds_port=cp.xds_port, admin_port=0, delta=delta,
                                         token=cp.dataplane_token(name))
                 for name in ("backend-1", "web-1")}
        # backend's DNS listener (transparent proxying) on a free port, not the fixed 15053
        boots["backend-1"]["node"].setdefault("metadata", {})["dataplane.dns.port"] = str(
            free_port("127.0.0.1"))
        with run_envoy(boots["backend-1"], tmp_path / "envoy", "backend-1") as backend, \
                run_envoy(boots["web-1"], tmp_path / "envoy", "web-1") as web:
            wait_for(lambda: f"inbound:{BACKEND_IP}:{inbound}" in backend.listeners(),
                     timeout=30, what="backend's inbound listener (warm: secrets arrived)")
            wait_for(lambda: f"outbound:{vip}:{inbound}" in web.listeners(), timeout=30,
                     what="web's outbound listener to backend's VIP")
            yield Mesh(cp, backend, web, inbound, f"http://{vip}:{inbound}/", app_port)


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


def denied(m: Mesh, dataplane: str) -> bool:
    """Whether backend's sidecar cuts off a client holding `dataplane`'s certificate after
    the handshake (RBAC), without an answer."""
    try:
        _, answer = through_backend_sidecar(m, dataplane)
    except (OSError, ssl.SSLError):
        return True
    return "backend-app" not in answer


def served_certs(envoy: Envoy) -> list[dict[str, Any]]:
    """The workload certificates Envoy holds (admin /certs), with SANs and serial."""
    certs = envoy.admin.get("/certs").json().get("certificates", [])
    return [c for entry in certs for c in entry.get("cert_chain", [])]


def trusted_cas(envoy: Envoy) -> int:
    """How many CAs every TLS context of `envoy` trusts (the smallest count)."""
    certs = envoy.admin.get("/certs").json().get("certificates", [])
    return min((len(entry.get("ca_cert", [])) for entry in certs), default=0)


def serials(envoy: Envoy) -> set[int]:
    """Serial numbers of the workload certificates `envoy` holds (its admin shows them in
    hex, with the leading zero of the DER integer when there is one)."""
    return {int(c["serial_number"], 16) for c in served_certs(envoy)}


def ssl_handshakes(envoy: Envoy, prefix: str) -> int:
    return sum(v for k, v in envoy.stats("ssl.handshake").items() if k.startswith(prefix))


class Traffic:
    """Requests through web's sidecar to backend, without pause, on a background thread:
    each on a new connection (new mTLS handshakes), and on one connection kept open for the
    whole run (it must not be dropped: web's sidecar holds one mTLS connection to backend's
    for it)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.kept_ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        host, port = httpx.URL(self.url).host, httpx.URL(self.url).port
        assert port is not None
        with socket.create_connection((host, port), timeout=5) as kept:
            reader = kept.makefile("rb")
            while not self._stop.is_set():
                try:
                    with httpx.Client(timeout=5) as client:
                        body = client.get(self.url).text
                except httpx.HTTPError as exc:
                    body = f"{type(exc).__name__}: {exc}"
                self._count("new", body)
                try:
                    kept.sendall(b"GET / HTTP/1.1\r\nHost: backend\r\n\r\n")
                    body = _read_response(reader)
                except OSError as exc:
                    body = f"{type(exc).__name__}: {exc}"
                self._count("kept", body)
                if "dropped" in body or "Error" in body:
                    return  # the kept connection is gone: counted once
                time.sleep(0.01)

    def carries(self, more: int, what: str) -> None:
        """Wait until `more` further requests have succeeded on new connections and on the
        kept one: traffic went through this step (counted, not timed: a loaded machine sends
        fewer requests per second, never fewer per step)."""
        new, kept = self.ok - self.kept_ok, self.kept_ok

        def carried() -> bool:
            assert not self.failures, self.failures[:5]
            return self.ok - self.kept_ok >= new + more and self.kept_ok >= kept + more

        wait_for(carried, timeout=60, interval=0.05, what=f"{more} more requests {what}")

    def _count(self, kind: str, body: str) -> None:
        if body == "backend-app":
            self.ok += 1
            self.kept_ok += kind == "kept"
        else:
            self.failures.append(f"{kind}: {body}")

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
def test_strict_mtls_between_sidecars_and_only_what_a_permission_allows(
        tmp_path: Path, delta: bool) -> None:
    with running_mesh(tmp_path, mesh("STRICT"), delta=delta) as m:
        m.cp.apply(dataplane("other-1", "127.0.0.5", free_port("127.0.0.5"), "other"))
        # no MeshTrafficPermission: with mTLS on, nothing is allowed (Kuma >= 2.6)
        assert fetch(m.url) in (None, "")
        wait_for(lambda: sum(m.backend.stats("rbac.denied").values()) >= 1, timeout=30,
                 what="the backend sidecar's RBAC to deny web")

        m.cp.apply(allow("web-to-backend", "web"))
        assert wait_for(lambda: fetch(m.url), timeout=30,
                        what="web -> backend once allowed") == "backend-app"
        # mTLS on both ends: web's cluster originated it, backend's listener terminated it
        assert ssl_handshakes(m.web, "cluster.default_backend___msvc_") >= 1
        assert ssl_handshakes(m.backend, "listener.") >= 1
        # the server's identity, as a workload sees it
        uris, answer = through_backend_sidecar(m, "web-1")
        assert "spiffe://default/backend" in uris and "backend-app" in answer
        # RBAC decides on the client certificate's SAN: other is not allowed
        assert wait_for(lambda: denied(m, "other-1"), timeout=30, what="other to be denied")
        # STRICT: a plaintext client gets nothing
        assert plaintext_answer(m) is None
        # the API says who issued web's certificate and until when, and never shows a key
        overview = m.cp.api.get("/meshes/default/dataplanes/web-1/_overview")
        assert overview.json()["dataplaneInsight"]["mTLS"]["issuedBackend"] == "ca-1"
        assert "PRIVATE KEY" not in overview.text
        assert "PRIVATE KEY" not in m.cp.api.get("/meshes/default").text


def _operators_rsa_ca() -> tuple[str, str]:
    """An operator's own root CA (RSA, as a corporate PKI hands out): (cert, key) PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_strict_mtls_with_an_operators_provided_ca(tmp_path: Path) -> None:
    """A `provided` backend (the operator's RSA root, inline): real Envoys get workload
    certificates it signed, and mTLS and RBAC work on them as with a builtin CA."""
    ca_cert, ca_key = _operators_rsa_ca()
    doc = {"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "corp", "backends": [
        {"name": "corp", "type": "provided", "mode": "STRICT",
         "conf": {"cert": {"inlineString": ca_cert}, "key": {"inlineString": ca_key}}}]}}
    with running_mesh(tmp_path, doc) as m:
        m.cp.apply(allow("web-to-backend", "web"))
        assert wait_for(lambda: fetch(m.url), timeout=30,
                        what="web -> backend over mTLS") == "backend-app"
        assert ssl_handshakes(m.web, "cluster.default_backend___msvc_") >= 1
        assert ssl_handshakes(m.backend, "listener.") >= 1
        root = x509.load_pem_x509_certificate(ca_cert.encode())
        leaf = x509.load_pem_x509_certificate(m.identity("web-1")["cert"].encode())
        assert leaf.issuer == root.subject
        public = root.public_key()
        assert isinstance(public, rsa.RSAPublicKey) and leaf.signature_hash_algorithm
        public.verify(leaf.signature, leaf.tbs_certificate_bytes, padding.PKCS1v15(),
                      leaf.signature_hash_algorithm)
        uris, answer = through_backend_sidecar(m, "web-1")  # backend's, as a workload sees it
        assert "spiffe://default/backend" in uris and "backend-app" in answer
        assert plaintext_answer(m) is None  # STRICT
        assert "PRIVATE KEY" not in m.cp.api.get("/meshes/default").text


def test_permissive_accepts_plaintext_and_checks_mtls_clients(tmp_path: Path) -> None:
    with running_mesh(tmp_path, mesh("PERMISSIVE")) as m:
        m.cp.apply(dataplane("other-1", "127.0.0.5", free_port("127.0.0.5"), "other"))
        m.cp.apply(allow("web-to-backend", "web"))
        assert wait_for(lambda: fetch(m.url), timeout=30, what="web -> backend") == \
            "backend-app"
        assert ssl_handshakes(m.backend, "listener.") >= 1  # web still speaks mTLS
        # plaintext is accepted, and no RBAC stands on its chain (Kuma #8152)
        answer = wait_for(lambda: plaintext_answer(m), timeout=30, what="a plaintext answer")
        assert "backend-app" in answer
        # the mTLS chain still runs RBAC
        assert wait_for(lambda: denied(m, "other-1"), timeout=30, what="other to be denied")


def test_rotation_under_traffic_drops_no_request(tmp_path: Path) -> None:
    with running_mesh(tmp_path, mesh("STRICT", expiration="10s")) as m:
        m.cp.apply(allow("web-to-backend", "web"))
        wait_for(lambda: fetch(m.url) == "backend-app", timeout=30, what="traffic")
        seen = [serials(m.backend) | serials(m.web)]
        with Traffic(m.url) as traffic:
            for rotation in range(3):
                # a new window every 8 s (4/5 of 10 s): both sidecars get new certificates
                wait_for(lambda: (serials(m.backend) | serials(m.web)).isdisjoint(seen[-1]),
                         timeout=30, interval=0.2, what=f"rotation {rotation + 1}")
                seen.append(serials(m.backend) | serials(m.web))
                traffic.carries(10, f"on the certificates of rotation {rotation + 1}")
        assert traffic.failures == [], traffic.failures[:5]


def test_a_ca_change_under_traffic_drops_no_request(tmp_path: Path) -> None:
    with running_mesh(tmp_path, mesh("STRICT")) as m:
        m.cp.apply(allow("web-to-backend", "web"))
        wait_for(lambda: fetch(m.url) == "backend-app", timeout=30, what="traffic")
        old_ca = m.identity("web-1")["cert"]
        with Traffic(m.url) as traffic:
            # 1. trust both, 2. issue from the new one, 3. drop the old one
            m.cp.apply(mesh("STRICT", backends=("ca-1", "ca-2"), enabled="ca-1"))
            wait_for(lambda: len(trust_roots(m).split("END CERTIFICATE")) == 3, timeout=30,
                     what="both CAs in the trust bundle")
            wait_for(lambda: trusted_cas(m.backend) == trusted_cas(m.web) == 2, timeout=30,
                     interval=0.2, what="both sidecars trusting both CAs")
            m.cp.apply(mesh("STRICT", backends=("ca-1", "ca-2"), enabled="ca-2"))
            wait_for(lambda: m.identity("web-1")["cert"] != old_ca, timeout=30,
                     what="certificates from the new CA")
            new_serials = {name: _serial(m.identity(name)["cert"])
                           for name in ("web-1", "backend-1")}
            wait_for(lambda: new_serials["web-1"] in serials(m.web)
                     and new_serials["backend-1"] in serials(m.backend), timeout=30,
                     interval=0.2, what="both sidecars holding certificates of the new CA")
            traffic.carries(10, "on certificates of the new CA, both CAs trusted")
            m.cp.apply(mesh("STRICT", backends=("ca-2",), enabled="ca-2"))
            wait_for(lambda: len(trust_roots(m).split("END CERTIFICATE")) == 2, timeout=30,
                     what="the old CA gone from the trust bundle")
            wait_for(lambda: trusted_cas(m.backend) == trusted_cas(m.web) == 1, timeout=30,
                     interval=0.2, what="both sidecars trusting the new CA only")
            traffic.carries(10, "with the old CA gone")
        assert traffic.failures == [], traffic.failures[:5]


def _read_response(reader: BinaryIO) -> str:
    """The body of one HTTP/1.1 response with a Content-Length, read from `reader`."""
    length = 0
    status = reader.readline()
    if not status:
        return "the kept connection was dropped"
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return reader.read(length).decode()


def _serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_grpc_through_strict_mtls_is_routed_at_l7_in_http2(tmp_path: Path) -> None:
    """web's outbound to backend's `grpc` port is L7: HTTP/2 to backend's sidecar over the
    mesh's mTLS (ALPN `kuma`), whose inbound passes it to the gRPC app."""
    with running_mesh(tmp_path, mesh("STRICT"), protocol="grpc") as m:
        m.cp.apply(allow("web-to-backend", "web"))
        target = m.url.removeprefix("http://").rstrip("/")
        with grpc.insecure_channel(target) as channel:
            call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
                GRPC_NAME_METHOD)

            def answer() -> bytes | None:
                try:
                    return call(b"", timeout=5)
                except grpc.RpcError:
                    return None  # until the permission reaches backend's sidecar

            assert wait_for(answer, timeout=30, what="a gRPC answer through mTLS") == \
                b"backend-app"
        assert ssl_handshakes(m.backend, "listener.") >= 1
        assert any(name.startswith("http.default_backend___msvc_") and count >= 1
                   for name, count in m.web.stats("downstream_rq_total").items())


def test_an_http_inbound_answers_a_denied_client_403(tmp_path: Path) -> None:
    """An `http` inbound is L7: MeshTrafficPermission is its first HTTP filter, so a client
    it denies gets `403 RBAC: access denied` (Kuma's answer) where an L4 inbound resets the
    connection, and an allowed one is served; its counters are the connection manager's."""
    with running_mesh(tmp_path, mesh("STRICT"), protocol="http") as m:
        m.cp.apply(dataplane("other-1", "127.0.0.5", free_port("127.0.0.5"), "other"))
        m.cp.apply(allow("web-to-backend", "web"))
        assert wait_for(lambda: fetch(m.url), timeout=30,
                        what="web -> backend once allowed") == "backend-app"

        def answer_to_other() -> str | None:
            try:
                return through_backend_sidecar(m, "other-1")[1] or None
            except (OSError, ssl.SSLError):
                return None  # until other's certificate is issued

        answer = wait_for(answer_to_other, timeout=30, what="an answer to other")
        assert answer.startswith("HTTP/1.1 403") and "RBAC: access denied" in answer, answer
        assert m.backend.stats("rbac.denied").get("http.localhost_" + str(
            m.backend_app_port) + ".rbac.denied", 0) >= 1

