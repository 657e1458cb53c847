"""`meshlog up --xds-tls`'s own CA and serving certificate (services.runtime.xds_certificate):
made once in the data dir and kept; the serving certificate issued again by the same CA when
the hosts change; nothing replaced silently when the CA's files are broken."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import stat
from pathlib import Path

import pytest
from cryptography import x509

from services.errors import ConfigError
from services.runtime.xds_certificate import XDS_TLS_DIR, ensure_xds_certificate, xds_hosts

HOSTS = xds_hosts("127.0.0.1", "cp-1.example")


def _sans(path: Path) -> set[str]:
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {*sans.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in sans.get_values_for_type(x509.IPAddress))}


def test_hosts_are_loopback_the_host_name_and_a_specific_xds_host() -> None:
    assert xds_hosts("0.0.0.0", "cp-1") == ["localhost", "127.0.0.1", "::1", "cp-1"]
    assert xds_hosts("10.1.2.3", "cp-1") == ["localhost", "127.0.0.1", "::1", "cp-1",
                                             "10.1.2.3"]


def test_made_once_private_and_kept(tmp_path: Path) -> None:
    files = ensure_xds_certificate(tmp_path, HOSTS)
    folder = tmp_path / XDS_TLS_DIR
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for private in (files.key_file, folder / "ca.key"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert _sans(files.cert_file) == {"localhost", "127.0.0.1", "::1", "cp-1.example"}
    ca = x509.load_pem_x509_certificate(files.ca_file.read_bytes())
    served = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    served.verify_directly_issued_by(ca)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > datetime.timedelta(days=3600)

    before = {p: p.read_bytes() for p in folder.iterdir()}
    again = ensure_xds_certificate(tmp_path, HOSTS)
    assert again == files
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


def test_new_hosts_get_a_new_certificate_from_the_same_ca(tmp_path: Path) -> None:
    files = ensure_xds_certificate(tmp_path, HOSTS)
    ca, served = files.ca_file.read_bytes(), files.cert_file.read_bytes()
    moved = ensure_xds_certificate(tmp_path, [*HOSTS, "10.1.2.3"])
    assert moved.ca_file.read_bytes() == ca
    assert moved.cert_file.read_bytes() != served
    assert "10.1.2.3" in _sans(moved.cert_file)
    x509.load_pem_x509_certificate(moved.cert_file.read_bytes()).verify_directly_issued_by(
        x509.load_pem_x509_certificate(ca))
    assert str(ipaddress.ip_address("::1")) in _sans(moved.cert_file)


def test_a_ca_near_its_end_is_a_warning_and_past_it_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=365 * 9)
    files = ensure_xds_certificate(tmp_path, HOSTS, now=long_ago)
    served = files.cert_file.read_bytes()
    with caplog.at_level(logging.WARNING, logger="meshlog.up"):
        ensure_xds_certificate(tmp_path, HOSTS)
    assert f"xDS TLS: the CA {files.ca_file} expires at " in caplog.text
    assert files.cert_file.read_bytes() == served  # valid until the CA's end: kept
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=400)
    with pytest.raises(ConfigError, match=f"--xds-tls: the CA {files.ca_file} expired at "):
        ensure_xds_certificate(tmp_path, HOSTS, now=later)


@pytest.mark.parametrize("broken", ["ca.key", "ca.crt"])
def test_a_ca_half_gone_is_an_error_not_a_new_ca(tmp_path: Path, broken: str) -> None:
    ensure_xds_certificate(tmp_path, HOSTS)
    folder = tmp_path / XDS_TLS_DIR
    (folder / broken).unlink()
    with pytest.raises(ConfigError) as refused:
        ensure_xds_certificate(tmp_path, HOSTS)
    assert f"{folder / broken} is missing" in str(refused.value)
    assert f"remove {folder} to make a new CA" in str(refused.value)
    assert not (folder / broken).exists()


def test_a_garbled_ca_is_an_error_naming_the_file(tmp_path: Path) -> None:
    ensure_xds_certificate(tmp_path, HOSTS)
    ca = tmp_path / XDS_TLS_DIR / "ca.crt"
    ca.write_text("garbage\n")
    with pytest.raises(ConfigError, match=f"--xds-tls: {ca}: not a readable PEM certificate"):
        ensure_xds_certificate(tmp_path, HOSTS)
