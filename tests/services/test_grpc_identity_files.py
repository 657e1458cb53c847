"""The files `meshlog grpc-identity` keeps, as gRPC's `file_watcher` provider reads them.

grpc-core's FileWatcherCertificateProvider reads `private_key_file` and `certificate_file`
one after the other and never checks that the key belongs to the certificate (only that
neither file's mtime, in seconds, changed while it read: its own TODO says "replace the
timestamp approach with key-match approach"). A pair it reads is handed to every new
handshake until its next refresh. So at no moment may the two paths hold halves of two
different pairs: a renewal (a new derived key, `events.identity.pki`) must switch both at
once."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret

from services.runtime import grpc_identity
from services.runtime.grpc_identity import IdentityFiles
from xds_gateway.resources.tls import ca_secret, identity_secret


def _pair(n: int) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"workload-{n}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(n + 1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(hours=1))
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def _spki(public: object) -> bytes:
    assert isinstance(public, ec.EllipticCurvePublicKey)
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _matching(files: IdentityFiles) -> bool | None:
    """Whether what gRPC would read now is one pair; None while a file is missing."""
    try:
        cert_pem, key_pem = files.cert.read_bytes(), files.key.read_bytes()
    except FileNotFoundError:
        return None
    key = serialization.load_pem_private_key(key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return _spki(x509.load_pem_x509_certificate(cert_pem).public_key()) == _spki(
        key.public_key())


def test_a_renewal_never_shows_a_key_and_a_certificate_of_two_pairs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = IdentityFiles.in_dir(tmp_path / "identity")
    files.cert.parent.mkdir()
    seen: list[bool | None] = []
    rename = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        rename(src, dst)
        seen.append(_matching(files))  # what a reader of the two paths gets right now

    monkeypatch.setattr(os, "replace", replace)  # the agent renames with os.replace
    ca = ca_secret("default", ("-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",))
    for n in range(3):  # the first certificate, then two renewals
        cert, key = _pair(n)
        secrets: dict[str, Secret] = {s.name: s for s in (identity_secret("default", cert, key),
                                                           ca)}
        assert grpc_identity._write(files, "default", secrets)
        seen.append(_matching(files))
        assert files.cert.read_text() == cert and files.key.read_text() == key
    assert False not in seen, seen
    assert files.key.stat().st_mode & 0o777 == 0o600
