"""Mesh mTLS for proxyless gRPC clients, with real parts: `meshlog up --xds-tls` (tokens
required), a real Envoy sidecar in front of a grpcio backend in a STRICT mesh, the real
`meshlog grpc-identity` agent writing the client's certificate files and bootstrap, and
grpcio's own xDS client with `grpc.xds_channel_credentials` (gRFC A29).

Layout on loopback: the gRPC app on 127.0.0.1:<app>, its sidecar (Dataplane `backend-1`,
127.0.0.2) terminating the mesh's mTLS on 127.0.0.2:<inbound>; the client is Dataplane
`client-1` (service `client`), which a MeshTrafficPermission allows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental
import pytest
from cryptography import x509

from services.cli.bootstrap import sidecar_bootstrap
from services.errors import ConfigError
from services.runtime.grpc_identity import (
    IdentityFiles,
    IdentityOptions,
    rpc_status,
    run_identity_agent,
)
from tests.harness import (
    GRPC_NAME_METHOD,
    VENV_BIN,
    ControlPlane,
    Envoy,
    free_port,
    grpc_backend,
    meshlog_up,
    run_envoy,
    stop_process,
    wait_for,
)
from tests.integration.test_mtls import allow, dataplane, mesh, ssl_handshakes

pytestmark = pytest.mark.integration

BACKEND_IP = "127.0.0.2"
CLIENT_IP = "127.0.0.5"


@contextlib.contextmanager
def _strict_backend(tmp_path: Path, *, expiration: str = "24h", mode: str = "STRICT"
                    ) -> Iterator[tuple[ControlPlane, int, Envoy]]:
    """A STRICT (or `mode`) mesh whose `backend` is a grpcio app behind a real Envoy, `client-1`
    registered and allowed to call it; yields the control plane, backend's port and its
    sidecar."""
    app_port, inbound = free_port("127.0.0.1"), free_port(BACKEND_IP)
    with meshlog_up(tmp_path / "cp", "--xds-tls", "--vip-cidr", "127.100.0.0/16") as cp, \
            grpc_backend("127.0.0.1", app_port, "backend-app"):
        cp.apply(mesh(mode, expiration=expiration))
        cp.apply(dataplane("backend-1", BACKEND_IP, inbound, "backend",
                           service_port=app_port, reaches_nothing=True, protocol="grpc"))
        cp.apply(dataplane("client-1", CLIENT_IP, free_port(CLIENT_IP), "client",
                           protocol="grpc"))
        cp.apply(allow("client-to-backend", "client"))
        ca = Path(cp.where["xds_ca_cert"]).read_bytes()
        boot = sidecar_bootstrap(mesh="default", name="backend-1", xds_host="127.0.0.1",
                                 xds_port=cp.xds_port, admin_port=0,
                                 token=cp.dataplane_token("backend-1"), ca_cert=ca)
        boot["node"].setdefault("metadata", {})["dataplane.dns.port"] = str(
            free_port("127.0.0.1"))
        with run_envoy(boot, tmp_path / "envoy", "backend-1") as backend:
            wait_for(lambda: f"inbound:{BACKEND_IP}:{inbound}" in backend.listeners(),
                     timeout=30, what="backend's inbound listener (warm: secrets arrived)")
            yield cp, inbound, backend


@contextlib.contextmanager
def _agent(cp: ControlPlane, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """`meshlog grpc-identity` for client-1 as a process; yields its --out and bootstrap."""
    out, boot = tmp_path / "identity", tmp_path / "bootstrap.json"
    token = cp.token_file("client-1", tmp_path / "tokens")
    log = open(tmp_path / "agent.log", "ab")
    proc = subprocess.Popen(
        [str(VENV_BIN / "meshlog"), "grpc-identity", "--mesh", "default", "--name",
         "client-1", "--out", str(out), "--token-file", str(token), "--xds-address",
         f"localhost:{cp.xds_port}", "--ca-cert-file", cp.where["xds_ca_cert"],
         "--bootstrap-file", str(boot), "--refresh-interval", "1s"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: (out / "cert.pem").exists() or proc.poll() is not None, timeout=60,
                 what="the agent's first certificate")
        assert proc.poll() is None, (tmp_path / "agent.log").read_text()
        yield out, boot
    finally:
        stop_process(proc, signal.SIGTERM)
        log.close()
    assert proc.returncode == 0, (tmp_path / "agent.log").read_text()  # SIGTERM: a clean exit


_BARE_CLIENT = """
import sys, time, grpc, grpc.experimental
target, method = sys.argv[1:]
creds = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
last, deadline = "", time.monotonic() + 60
with grpc.secure_channel(target, creds) as channel:
    while time.monotonic() < deadline and "certificate provider" not in last:
        try:
            last = repr(channel.unary_unary(method)(b"", timeout=10))
        except grpc.RpcError as exc:
            last = exc.details()
        time.sleep(0.2)
print(last)
"""
"""A grpcio client of `target` whose bootstrap (GRPC_XDS_BOOTSTRAP_CONFIG) may lack the
certificate provider: prints the last call's answer or error, once it names the provider."""


def _call(channel: grpc.Channel) -> bytes | str:
    """The answer, or the error's details."""
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(GRPC_NAME_METHOD)
    try:
        return call(b"", timeout=10)
    except grpc.RpcError as exc:
        return rpc_status(exc)[1]


def _answer(channel: grpc.Channel) -> bytes:
    """The answer; an error raised with its details (`wait_for` shows the last)."""
    got = _call(channel)
    if isinstance(got, str):
        raise RuntimeError(got)
    return got


def _xds_channel(target: str) -> grpc.Channel:
    """grpcio's xDS credentials: TLS as the clusters say, plaintext where they say none."""
    fallback: grpc.ChannelCredentials = grpc.experimental.insecure_channel_credentials()  # type: ignore[no-untyped-call]  # grpcio ships it untyped
    return grpc.secure_channel(target, grpc.xds_channel_credentials(fallback))


def test_a_proxyless_client_with_the_agents_identity_calls_a_strict_sidecar(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the bootstrap names the token as call credentials (gRFC A97): grpcio reads them so only
    monkeypatch.setenv("GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", "true")
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    with _strict_backend(tmp_path) as (cp, port, sidecar), \
            _agent(cp, tmp_path) as (out, boot):
        assert (out / "key.pem").stat().st_mode & 0o777 == 0o600
        doc: dict[str, Any] = json.loads(boot.read_text())
        target = f"xds:///backend:{port}"

        # without the certificate providers, gRPC NACKs the clusters naming them (in a process
        # of its own: grpcio keeps one xDS client per target, with the bootstrap it read)
        bare = {k: v for k, v in doc.items() if k != "certificate_providers"}
        refused = subprocess.run(
            [sys.executable, "-c", _BARE_CLIENT, target, GRPC_NAME_METHOD],
            env={**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": json.dumps(bare)},
            capture_output=True, text=True, timeout=120)
        assert "unrecognized certificate provider instance name" in refused.stdout, (
            refused.stdout + refused.stderr)[-3000:]

        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(boot))
        with _xds_channel(target) as channel:
            answer = wait_for(lambda: _answer(channel), timeout=60,
                              what="a call through the sidecar's STRICT mTLS")
            assert answer == b"backend-app"
        # through the sidecar's mTLS chain, where its RBAC let `client` in
        assert ssl_handshakes(sidecar, "listener.") >= 1
        assert sum(sidecar.stats("rbac.allowed").values()) >= 1
        # the sidecar picks ALPN in its own order: an Envoy client (`kuma`) still gets `kuma`
        assert _alpn(out, BACKEND_IP, port, ["h2", "kuma"]) == "kuma"
        assert _alpn(out, BACKEND_IP, port, ["h2"]) == "h2"
        # `h2` lets no one in who has no mesh certificate: the handshake is refused
        assert _refused_without_certificate(out, BACKEND_IP, port)
        wait_for(lambda: sum(sidecar.stats("ssl.fail_verify_no_cert").values()) >= 1,
                 timeout=30, what="the sidecar counting the client without a certificate")


def test_in_a_permissive_mesh_a_proxyless_client_speaks_plaintext(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A PERMISSIVE inbound could not tell gRPC's TLS (ALPN `h2`, no SNI of ours) from the
    app's own, which it passes through: gRPC gets plaintext clusters, its calls the
    plaintext chain, with or without the agent's files."""
    monkeypatch.setenv("GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS", "true")
    monkeypatch.delenv("GRPC_XDS_BOOTSTRAP_CONFIG", raising=False)
    with _strict_backend(tmp_path, mode="PERMISSIVE") as (cp, port, sidecar), \
            _agent(cp, tmp_path) as (_out, boot):
        monkeypatch.setenv("GRPC_XDS_BOOTSTRAP", str(boot))
        with _xds_channel(f"xds:///backend:{port}") as channel:
            answer = wait_for(lambda: _answer(channel), timeout=60,
                              what="a call through the PERMISSIVE inbound")
            assert answer == b"backend-app"
        assert ssl_handshakes(sidecar, "listener.") == 0


def _alpn(identity: Path, host: str, port: int, offered: list[str]) -> str | None:
    """The ALPN protocol a mesh client offering `offered` gets from the inbound at
    host:port (the agent's files as its identity)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # meshlog checks URI SANs, not host names
    ctx.load_cert_chain(identity / "cert.pem", identity / "key.pem")
    ctx.load_verify_locations(identity / "ca.pem")
    ctx.set_alpn_protocols(offered)
    with socket.create_connection((host, port), timeout=10) as raw, \
            ctx.wrap_socket(raw) as tls:
        return tls.selected_alpn_protocol()


def _refused_without_certificate(identity: Path, host: str, port: int) -> bool:
    """A TLS client offering ALPN `h2` (as gRPC does) but no certificate: True when the inbound
    ends the connection (TLS 1.3: the alert comes after the client's handshake)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(identity / "ca.pem")
    ctx.set_alpn_protocols(["h2"])
    try:
        with socket.create_connection((host, port), timeout=10) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            return tls.recv(1) == b""
    except (ssl.SSLError, ConnectionResetError):
        return True


def test_the_agent_writes_the_certificate_the_gateway_renews(tmp_path: Path) -> None:
    """10 s certificates are renewed after 4/5 of their life; the agent, holding its stream,
    writes each new one."""
    with _strict_backend(tmp_path, expiration="10s") as (cp, _port, _sidecar):
        files = IdentityFiles.in_dir(tmp_path / "identity")
        options = IdentityOptions(
            mesh="default", name="client-1", xds_address=f"localhost:{cp.xds_port}",
            files=files, token=cp.dataplane_token("client-1"),
            ca_cert=Path(cp.where["xds_ca_cert"]).read_bytes())
        stop = threading.Event()
        agent = threading.Thread(target=run_identity_agent, args=(options,),
                                 kwargs={"stop": stop}, daemon=True)
        agent.start()
        try:
            first = wait_for(lambda: _serial(files.cert), timeout=60, what="a first cert")
            uri = x509.load_pem_x509_certificate(files.cert.read_bytes()).extensions \
                .get_extension_for_class(x509.SubjectAlternativeName).value \
                .get_values_for_type(x509.UniformResourceIdentifier)
            assert "spiffe://default/client" in uri
            wait_for(lambda: (s := _serial(files.cert)) is not None and s != first,
                     timeout=60, what="the renewed certificate written")
        finally:
            stop.set()
            agent.join(timeout=30)
        assert not agent.is_alive()


def test_a_refused_token_is_one_error_naming_the_dataplane(tmp_path: Path) -> None:
    with meshlog_up(tmp_path / "cp", "--xds-tls") as cp:
        cp.apply({"type": "Mesh", "name": "default"})
        options = IdentityOptions(
            mesh="default", name="client-1", xds_address=f"localhost:{cp.xds_port}",
            files=IdentityFiles.in_dir(tmp_path / "identity"),
            token=cp.dataplane_token("other-1"),
            ca_cert=Path(cp.where["xds_ca_cert"]).read_bytes())
        with pytest.raises(ConfigError, match=r"refused default\.client-1: .*other-1"):
            run_identity_agent(options, once=True, timeout=60)


def _serial(path: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).serial_number
    except (OSError, ValueError):
        return None
