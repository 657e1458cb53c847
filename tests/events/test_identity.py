"""Identity building blocks: sealing, the mesh CA, workload certificates, and the CA command
against a real nats-server (issue 11)."""

from __future__ import annotations

import asyncio
import datetime
import stat
from pathlib import Path
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from events import (
    CaCreated,
    InvalidResource,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    ca_purpose,
    ca_subject,
    decode_event,
    decode_resource,
    resource_subject,
)
from events.commands import Commands, NoSecretKey
from events.identity import SealedSecretError, SecretKey
from events.identity.pki import (
    NOT_BEFORE_SKEW_MS,
    LoadedCa,
    check_provided_ca,
    create_ca,
    issue_workload,
    uri_sans,
)
from xds_gateway.resources.tls import sni

NOW = 1_800_000_000_000


# --- sealing ----------------------------------------------------------------------------------


def test_a_sealed_secret_opens_only_with_its_key_and_purpose() -> None:
    key = SecretKey.generate()
    sealed = key.seal(b"the CA key", purpose="ca:default/ca-1")
    assert b"the CA key" not in sealed.encode()
    assert key.open(sealed, purpose="ca:default/ca-1") == b"the CA key"
    with pytest.raises(SealedSecretError, match="sealed for another purpose"):
        key.open(sealed, purpose="ca:other/ca-1")
    other = SecretKey.generate()
    with pytest.raises(SealedSecretError, match=f"sealed with secret key {key.key_id}"):
        other.open(sealed, purpose="ca:default/ca-1")
    assert "the CA key" not in repr(key)


def test_the_secret_key_file_is_made_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secret.key"
    first = SecretKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SecretKey.load_or_create(path).key_id == first.key_id
    path.write_text("not base64!\n")
    with pytest.raises(SealedSecretError, match="is not base64"):
        SecretKey.load(path)


# --- CA and workload certificates -------------------------------------------------------------


def _ca() -> tuple[str, bytes]:
    return create_ca("default", "ca-1", NOW)


def test_a_builtin_ca_is_an_ec_p256_authority_of_its_mesh() -> None:
    cert_pem, key_pem = _ca()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "default"
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    uris = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://default"]
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > datetime.timedelta(days=3650)


def test_a_workload_certificate_is_the_same_bytes_for_the_same_inputs() -> None:
    ca_cert, ca_key = _ca()
    uris = uri_sans("default", {"kuma.io/service": {"web"}, "version": {"v1"}})
    assert uris == ["kuma://kuma.io/service/web", "kuma://version/v1", "spiffe://default/web"]
    args: dict[str, Any] = {"mesh": "default", "dataplane": "web-1", "uris": uris,
                            "not_before_ms": NOW, "not_after_ms": NOW + 86_400_000}
    ca = LoadedCa(ca_cert, ca_key)
    one, two = issue_workload(ca, **args), issue_workload(LoadedCa(ca_cert, ca_key), **args)
    assert (one.chain, one.key) == (two.chain, two.key)
    other = issue_workload(ca, **{**args, "dataplane": "web-2"})
    assert other.key != one.key and other.chain != one.chain

    cert = x509.load_pem_x509_certificate(one.chain.encode())
    ca_certificate = x509.load_pem_x509_certificate(ca_cert.encode())
    cert.verify_directly_issued_by(ca_certificate)
    assert cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier) == uris
    assert cert.not_valid_before_utc.timestamp() * 1000 == NOW - NOT_BEFORE_SKEW_MS
    assert cert.not_valid_after_utc.timestamp() * 1000 == NOW + 86_400_000
    key = serialization.load_pem_private_key(one.key.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == cert.public_key()


def test_a_workload_certificate_never_outlives_its_ca() -> None:
    ca_cert, ca_key = _ca()
    ca = x509.load_pem_x509_certificate(ca_cert.encode())
    issued = issue_workload(LoadedCa(ca_cert, ca_key), mesh="default", dataplane="web-1",
                            uris=["spiffe://default/web"], not_before_ms=NOW,
                            not_after_ms=NOW + 20 * 365 * 86_400_000)
    cert = x509.load_pem_x509_certificate(issued.chain.encode())
    assert cert.not_valid_after_utc == ca.not_valid_after_utc
    assert issued.not_after == int(ca.not_valid_after_utc.timestamp()) * 1000
    # a window that starts after the CA's expiry has nothing to issue
    with pytest.raises(ValueError, match="the CA expired"):
        issue_workload(LoadedCa(ca_cert, ca_key), mesh="default", dataplane="web-1",
                       uris=["spiffe://default/web"], not_before_ms=issued.not_after + 1,
                       not_after_ms=issued.not_after + 1000)


def _rsa_ca(*, valid_days: int = 365) -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corp root")])
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=1) if valid_days > 0 else now - datetime.timedelta(
        days=10)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(start)
            .not_valid_after(now + datetime.timedelta(days=valid_days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def test_an_operators_rsa_ca_issues_too() -> None:
    ca_cert, ca_key = _rsa_ca()
    assert check_provided_ca(ca_cert, ca_key) == []
    issued = issue_workload(LoadedCa(ca_cert, ca_key.encode()), mesh="default",
                            dataplane="web-1",
                            uris=["spiffe://default/web"], not_before_ms=NOW,
                            not_after_ms=NOW + 3_600_000)
    cert = x509.load_pem_x509_certificate(issued.chain.encode())
    ca = x509.load_pem_x509_certificate(ca_cert.encode())
    ca_public = ca.public_key()
    assert isinstance(ca_public, rsa.RSAPublicKey)
    assert cert.signature_hash_algorithm is not None
    ca_public.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                     cert.signature_hash_algorithm)


def test_a_provided_ca_is_checked_field_by_field() -> None:
    ca_cert, _ = _rsa_ca()
    _, other_key = _rsa_ca()
    assert check_provided_ca(ca_cert, other_key) == [
        ("key", "does not belong to the certificate")]
    expired_cert, expired_key = _rsa_ca(valid_days=-1)
    assert any(field == "cert" and "is not valid now" in message
               for field, message in check_provided_ca(expired_cert, expired_key))
    problems = dict(check_provided_ca("garbage", "garbage"))
    assert "is not a PEM certificate" in problems["cert"]
    assert "is not an unencrypted PEM private key" in problems["key"]
    builtin_cert, builtin_key = _ca()
    leaf = issue_workload(LoadedCa(builtin_cert, builtin_key), mesh="m", dataplane="d",
                          uris=["spiffe://m/d"], not_before_ms=NOW, not_after_ms=NOW + 1000)
    assert ("cert", "is not a CA certificate (basicConstraints CA:TRUE)") in check_provided_ca(
        leaf.chain, leaf.key)


def test_sni_follows_kumas_layout() -> None:
    # reference/security.md §1: Kuma's own example
    assert sni("default", "backend", 80) == "a601e0c00295a9fbe.backend.80.default.ms"
    assert len(sni("m" * 63, "s" * 200, 65535)) <= 253


# --- the CA command, against a real nats-server -----------------------------------------------


def builtin_mesh(*backends: str, enabled: str | None = None) -> Mesh:
    doc: dict[str, Any] = {"type": "Mesh", "name": "default", "mtls": {
        "backends": [{"name": b, "type": "builtin"} for b in backends]}}
    if enabled or backends:
        doc["mtls"]["enabledBackend"] = enabled or backends[0]
    resource = decode_resource(doc)
    assert isinstance(resource, Mesh)
    return resource


async def _cas(log: JetStreamEventLog, backend: str = "ca-1") -> list[CaCreated]:
    out = []
    async for batch in log.read(1, max_batch=100):
        for record in batch:
            if record.subject == ca_subject("default", backend):
                event = decode_event(record.data, seq=record.seq, subject=record.subject)
                assert isinstance(event, CaCreated)
                out.append(event)
        if batch[-1].seq >= await log.last_seq():
            break
    return out


async def test_a_builtin_ca_is_recorded_once_before_its_mesh(
        event_log: JetStreamEventLog) -> None:
    key = SecretKey.generate()
    commands = Commands(event_log, zone="default", secret_key=key)
    await commands.apply(builtin_mesh("ca-1"))
    ca_record = await event_log.last(ca_subject("default", "ca-1"))
    mesh_record = await event_log.last(resource_subject("Mesh", None, "default"))
    assert ca_record is not None and mesh_record is not None
    assert ca_record.seq < mesh_record.seq  # a Mesh never names a CA the log lacks
    # applied again, by a restarted API, by another replica: the same CA
    await commands.apply(msgspec.structs.replace(builtin_mesh("ca-1"), labels={"x": "y"}))
    await Commands(event_log, zone="default", secret_key=key).apply(builtin_mesh("ca-1"))
    (ca,) = await _cas(event_log)
    assert ca.type == "builtin" and "PRIVATE KEY" not in ca.key
    opened = key.open(ca.key, purpose=ca_purpose("default", "ca-1"))
    assert b"PRIVATE KEY" in opened


async def test_replicas_racing_record_one_ca(event_log: JetStreamEventLog) -> None:
    key = SecretKey.generate()
    await asyncio.gather(*(Commands(event_log, zone="default", secret_key=key).apply(
        builtin_mesh("ca-1")) for _ in range(4)))
    assert len(await _cas(event_log)) == 1


async def test_a_deleted_mesh_keeps_its_ca(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default", secret_key=SecretKey.generate())
    await commands.apply(builtin_mesh("ca-1"))
    (before,) = await _cas(event_log)
    await commands.delete("Mesh", None, "default")
    await commands.apply(builtin_mesh("ca-1"))
    assert await _cas(event_log) == [before]


async def test_mtls_without_a_secret_key_is_refused_and_nothing_appended(
        event_log: JetStreamEventLog) -> None:
    with pytest.raises(NoSecretKey, match="--secret-key-file"):
        await Commands(event_log, zone="default").apply(builtin_mesh("ca-1"))
    assert await event_log.last_seq() == 0


async def test_a_provided_key_is_sealed_and_never_stored_in_the_mesh(
        event_log: JetStreamEventLog) -> None:
    key = SecretKey.generate()
    ca_cert, ca_key = _rsa_ca()
    doc = {"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "corp", "backends": [
        {"name": "corp", "type": "provided", "conf": {
            "cert": {"inlineString": ca_cert}, "key": {"inlineString": ca_key}}}]}}
    commands = Commands(event_log, zone="default", secret_key=key)
    resource = decode_resource(doc)
    await commands.apply(resource)
    record = await event_log.last(resource_subject("Mesh", None, "default"))
    assert record is not None
    assert b"PRIVATE KEY" not in record.data
    stored = decode_event(record.data, seq=record.seq, subject=record.subject)
    assert isinstance(stored, MeshApplied) and stored.mesh.mtls is not None
    conf = stored.mesh.mtls.backends[0].conf
    assert conf is not None and conf.key is None and conf.cert is not None
    (ca,) = await _cas(event_log, "corp")
    assert ca.type == "provided" and ca.cert.strip() == ca_cert.strip()
    # the stored form applies again (get -o yaml | apply) and records nothing new
    await commands.apply(stored.mesh)
    assert len(await _cas(event_log, "corp")) == 1
    # a wrong key is refused by field, before anything is appended
    _, wrong = _rsa_ca()
    bad = msgspec.convert(doc, type=dict)
    bad["mtls"]["backends"][0]["conf"] = {"cert": {"inlineString": _rsa_ca()[0]},
                                          "key": {"inlineString": wrong}}
    head = await event_log.last_seq()
    with pytest.raises(InvalidResource,
                       match=r"mtls.backends\[0\].conf.key.inlineString: does not belong"):
        await commands.apply(decode_resource(bad))
    assert await event_log.last_seq() == head


def test_processes_racing_to_make_the_secret_key_end_with_one(tmp_path: Path) -> None:
    import concurrent.futures

    path = tmp_path / "secret.key"
    with concurrent.futures.ProcessPoolExecutor(4) as pool:
        ids = list(pool.map(_key_id_of, [path] * 16))
    assert len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temp file left


def _key_id_of(path: Path) -> str:
    return SecretKey.load_or_create(path).key_id
