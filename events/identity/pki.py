"""Certificates: a mesh's certificate authority and its workloads' certificates.

Both are EC P-256 (an issue costs ~0.12 ms in `cryptography`; Kuma's RSA-2048 leaf costs
45 ms, reference/security.md §5); an operator's `provided` CA may also be RSA.

A CA is made once per mesh backend, by the command side, and recorded in the log with its key
sealed (`events.identity.sealing`): replay and every replica see that one CA.

A workload certificate is a **pure function** of the CA, the identity (mesh, Dataplane, URI
SANs) and the validity window: its key is derived from the CA key (HMAC-SHA256 over the
inputs, reduced to a P-256 scalar) and it is signed with deterministic ECDSA (RFC 6979). So
the projector issues it once per rotation and every replay issues the very same bytes (DESIGN
invariant 4), and every gateway serves a reconnecting proxy the same secret (invariant 7).
Nobody without the CA key can predict a derived key.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_VALIDITY_MS",
    "NOT_BEFORE_SKEW_MS",
    "IssuedCertificate",
    "LoadedCa",
    "check_provided_ca",
    "create_ca",
    "issue_workload",
    "normalize_key",
    "not_after_ms",
    "uri_sans",
]

CA_VALIDITY_MS = 10 * 365 * 24 * 3600 * 1000
"""Kuma's builtin CA lives ten years."""
NOT_BEFORE_SKEW_MS = 10_000
"""A workload certificate is valid from 10 s before its window (Kuma: clocks differ)."""
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_DERIVATION = b"meshlog workload certificate v1\x00"


def _time(ms: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ms // 1000, datetime.UTC)


def create_ca(mesh: str, backend: str, now_ms: int) -> tuple[str, bytes]:
    """A new self-signed CA for `mesh`'s `backend`: (certificate PEM, private key PKCS#8 PEM).
    Random: the command side makes it once and records it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlog"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Mesh"),
        x509.NameAttribute(NameOID.COMMON_NAME, mesh),
    ])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16)) >> 1)
        .not_valid_before(_time(now_ms - 60_000))
        .not_valid_after(_time(now_ms + CA_VALIDITY_MS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"spiffe://{mesh}")]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def not_after_ms(cert_pem: str) -> int:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return int(cert.not_valid_after_utc.timestamp()) * 1000


def uri_sans(mesh: str, tags: dict[str, set[str]]) -> list[str]:
    """Kuma's workload identity: `spiffe://<mesh>/<service>` per `kuma.io/service` value and
    `kuma://<tag>/<value>` per tag value, sorted."""
    uris = {f"spiffe://{mesh}/{service}" for service in tags.get("kuma.io/service", ())}
    uris |= {f"kuma://{k}/{v}" for k, values in tags.items() for v in values}
    return sorted(uris)


class IssuedCertificate:
    """A workload certificate chain and its key, PEM."""

    __slots__ = ("chain", "key", "not_after", "not_before")

    def __init__(self, chain: str, key: str, not_before: int, not_after: int) -> None:
        self.chain = chain
        self.key = key
        self.not_before = not_before
        self.not_after = not_after


class LoadedCa:
    """A CA parsed once (loading an RSA key validates it: ~45 ms), to issue many
    certificates with."""

    __slots__ = ("cert", "key", "not_after_ms", "secret")

    def __init__(self, cert_pem: str, key_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ValueError("a mesh CA key must be an EC or RSA key")
        self.key = key
        self.cert = x509.load_pem_x509_certificate(cert_pem.encode())
        self.not_after_ms = int(self.cert.not_valid_after_utc.timestamp()) * 1000
        self.secret = key.private_bytes(serialization.Encoding.DER,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
        """What workload keys are derived from."""


def issue_workload(ca: LoadedCa, *, mesh: str, dataplane: str, uris: list[str],
                   not_before_ms: int, not_after_ms: int) -> IssuedCertificate:
    """The certificate of Dataplane `dataplane` for the window [`not_before_ms`,
    `not_after_ms`] (capped at the CA's own expiry, which must be later than
    `not_before_ms`): same inputs, same bytes."""
    if not uris:
        raise ValueError("a workload certificate needs at least one URI SAN")
    ca_cert, ca_key = ca.cert, ca.key
    not_after_ms = min(not_after_ms, ca.not_after_ms)
    if not_after_ms <= not_before_ms:
        raise ValueError(f"the CA expired at {not_after_ms} ms, before the window starts")
    inputs = json.dumps([mesh, dataplane, uris, not_before_ms, not_after_ms]).encode()
    digest = hmac.new(ca.secret, _DERIVATION + inputs, hashlib.sha512).digest()
    # 512 bits reduced modulo the ~256-bit order: the bias is negligible (FIPS 186-5 A.2.1)
    scalar = int.from_bytes(digest) % (_P256_ORDER - 1) + 1
    key = ec.derive_private_key(scalar, ec.SECP256R1())
    serial = int.from_bytes(hashlib.sha256(b"serial\x00" + digest).digest()[:16]) >> 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(_time(not_before_ms - NOT_BEFORE_SKEW_MS))
        .not_valid_after(_time(not_after_ms))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        # an empty subject: the SANs are the identity, and then critical (RFC 5280 4.2.1.6)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(u) for u in uris]), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
    )
    if isinstance(ca_key, rsa.RSAPrivateKey):  # PKCS#1 v1.5 is deterministic already
        cert = builder.sign(ca_key, hashes.SHA256(), rsa_padding=padding.PKCS1v15())
    else:
        cert = builder.sign(ca_key, hashes.SHA256(), ecdsa_deterministic=True)
    chain = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return IssuedCertificate(chain, key_pem, not_before_ms - NOT_BEFORE_SKEW_MS, not_after_ms)


def check_provided_ca(cert_pem: str, key_pem: str) -> list[tuple[str, str]]:
    """What is wrong with an operator's CA, as (field, message) pairs: PEM that does not parse,
    a certificate that is no CA, a key of another type or one that does not match."""
    problems: list[tuple[str, str]] = []
    cert = key = None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError as exc:
        problems.append(("cert", f"is not a PEM certificate ({exc})"))
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        problems.append(("key", f"is not an unencrypted PEM private key ({exc})"))
    if key is not None and not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        problems.append(("key", f"is a {type(key).__name__}: meshlog signs with EC or RSA"))
        key = None
    if cert is not None:
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            problems.append(("cert", "is not a CA certificate (basicConstraints CA:TRUE)"))
        now = datetime.datetime.now(datetime.UTC)
        if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
            problems.append(("cert", f"is not valid now: it is valid from "
                                     f"{cert.not_valid_before_utc.isoformat()} to "
                                     f"{cert.not_valid_after_utc.isoformat()}"))
        if key is not None and cert.public_key() != key.public_key():
            problems.append(("key", "does not belong to the certificate"))
    return problems


def normalize_key(key_pem: str) -> bytes:
    """An operator's key as PKCS#8 PEM, the form the log seals."""
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("meshlog signs with EC or RSA keys")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
