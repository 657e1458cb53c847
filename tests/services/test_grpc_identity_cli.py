"""`meshlog grpc-identity`: its flags, the gRPC bootstrap it prints and its errors. The agent
itself against a real gateway, Envoy and grpcio client: tests/integration/
test_proxyless_mtls.py."""

from __future__ import annotations

import datetime
import json
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.runtime import grpc_identity
from services.runtime.grpc_identity import write_atomically
from tests.harness import VENV_BIN
from tests.services.test_token_cli import _token_file
from xds_gateway.resources.node import IDENTITY_AGENT
from xds_gateway.resources.tls import GRPC_CERTIFICATE_PROVIDER


def _ca(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateways")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(hours=1)).sign(key, hashes.SHA256()))
    path = tmp_path / "xds-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "meshlog"), "grpc-identity", *args],
                          capture_output=True, text=True, timeout=60)


def test_the_bootstrap_declares_the_provider_the_gateway_names(tmp_path: Path) -> None:
    """Mesh and name from the token; the token as gRPC's call credentials (gRFC A97)."""
    token = _token_file(tmp_path)
    result = _run("--out", str(tmp_path / "id"), "--token-file", str(token),
                  "--xds-address", "xds.example:5678", "--ca-cert-file", str(_ca(tmp_path)),
                  "--print-bootstrap")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["node"] == {"id": "default.web-1"}
    (server,) = doc["xds_servers"]
    assert server["server_uri"] == "xds.example:5678"
    assert server["channel_creds"][0]["type"] == "tls"
    assert server["call_creds"] == [{"type": "jwt_token_file",
                                     "config": {"jwt_token_file": str(token)}}]
    provider = doc["certificate_providers"][GRPC_CERTIFICATE_PROVIDER]
    assert provider["plugin_name"] == "file_watcher"
    assert provider["config"]["private_key_file"] == str(tmp_path / "id" / "key.pem")
    assert not (tmp_path / "id").exists()  # printing connects to nothing, writes nothing


def test_errors_name_the_flag(tmp_path: Path) -> None:
    no_name = _run("--out", str(tmp_path / "id"), "--print-bootstrap")
    assert no_name.returncode == 2 and "--name is required" in no_name.stderr
    other = _run("--out", str(tmp_path / "id"), "--name", "api-1", "--token-file",
                 str(_token_file(tmp_path)), "--print-bootstrap")
    assert other.returncode == 2 and "not --name 'api-1'" in other.stderr
    interval = _run("--out", str(tmp_path), "--name", "a", "--refresh-interval", "soon",
                    "--print-bootstrap")
    assert interval.returncode == 2 and "--refresh-interval: 'soon'" in interval.stderr


def test_a_token_for_grpc_needs_tls_to_the_gateway(tmp_path: Path) -> None:
    """gRPC sends call credentials over a secure channel only: with `insecure` channel
    creds its xDS stream fails UNAUTHENTICATED ("Established channel does not have a
    sufficient security level to transfer call credential"), so such a bootstrap is refused
    by name, not written."""
    result = _run("--out", str(tmp_path / "id"), "--token-file", str(_token_file(tmp_path)),
                  "--print-bootstrap")
    assert result.returncode == 2, result.stdout
    assert "--token-file needs --ca-cert-file" in result.stderr


def test_an_out_or_bootstrap_path_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    """Not a traceback: the flag, the path and why (the agent connects to nothing)."""
    (tmp_path / "a-file").write_text("")
    out = _run("--name", "a", "--out", str(tmp_path / "a-file" / "id"), "--xds-address",
               "127.0.0.1:1", "--once", "--timeout", "1")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"--out {tmp_path / 'a-file' / 'id'}: cannot create it" in out.stderr
    boot = _run("--name", "a", "--out", str(tmp_path / "id"), "--bootstrap-file",
                str(tmp_path / "no-dir" / "b.json"), "--xds-address", "127.0.0.1:1", "--once",
                "--timeout", "1")
    assert boot.returncode == 2 and "Traceback" not in boot.stderr, boot.stderr
    assert f"--bootstrap-file {tmp_path / 'no-dir' / 'b.json'}: cannot write it" in boot.stderr


def test_a_file_is_replaced_whole_and_a_key_is_private(tmp_path: Path) -> None:
    key = tmp_path / "key.pem"
    key.write_text("old")
    write_atomically(key, b"new", 0o600)
    assert key.read_bytes() == b"new" and key.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key.pem"]  # no temp file left


def test_the_agent_names_what_the_gateway_knows() -> None:
    assert grpc_identity._USER_AGENT == IDENTITY_AGENT
    assert grpc_identity.CERTIFICATE_PROVIDER == GRPC_CERTIFICATE_PROVIDER
