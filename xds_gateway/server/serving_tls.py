"""The gateway's gRPC port over TLS: `ServingTls`, the control plane's serving certificate and
key from two PEM files (Kuma's `general.tlsCertFile` / `general.tlsKeyFile`), checked once at
start and re-read when they change. `KeyPairFiles` is that check and follow-up without gRPC;
the API's HTTPS (services.runtime.api_tls) serves its own pair with it, under its own flags.

At start (`ServingTls(cert_file, key_file)`) each file must be readable; the certificate file
must hold PEM certificates (the serving certificate first, then any intermediates), valid now;
the key file an unencrypted PEM private key (EC or RSA) that belongs to the first certificate.
Anything else is an `InvalidServingTls` naming the file and what is wrong with it, before
the gateway listens.

grpcio asks for the certificate on every TLS handshake (`grpc.dynamic_ssl_server_credentials`):
when either file has changed since it was last read (modification time, size or inode, so a
rename over it counts), the pair is read and checked again and new connections get it; open
streams keep the connection they have. A pair that fails the check (a half-done rotation,
with the new certificate in place before its key) is not served: the gateway goes on with the
last good pair, logs once what is wrong, and tries again when a file changes next.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
from pathlib import Path
from typing import NamedTuple

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from events import MeshlogError

__all__ = ["InvalidServingTls", "KeyPair", "KeyPairFiles", "ServingTls", "read_key_pair"]

log = logging.getLogger("meshlog.xds")

CERT_FLAG = "--tls-cert-file"
KEY_FLAG = "--tls-key-file"
_XDS_FLAGS = (CERT_FLAG, KEY_FLAG)


class InvalidServingTls(MeshlogError):
    """The serving certificate or key cannot be used; the message names the file."""


class KeyPair(NamedTuple):
    chain: bytes
    """The certificates, PEM, the serving one first."""
    key: bytes
    """The private key, PKCS#8 PEM."""
    not_after: datetime.datetime
    subject: str


def read_key_pair(cert_file: Path, key_file: Path, now: datetime.datetime | None = None, *,
                  flags: tuple[str, str] = _XDS_FLAGS) -> KeyPair:
    """The pair in `cert_file` and `key_file`, checked (module docstring); else an
    InvalidServingTls naming the file and its flag (`flags`: the certificate's, the key's)."""
    cert_flag, key_flag = flags
    certs = _certificates(cert_flag, cert_file)
    key = _private_key(key_flag, key_file)
    leaf = certs[0]
    if leaf.public_key() != key.public_key():
        raise InvalidServingTls(f"{key_flag} {key_file}: the key does not belong to the "
                                f"certificate in {cert_file} ({leaf.subject.rfc4514_string()})")
    moment = now or datetime.datetime.now(datetime.UTC)
    if not leaf.not_valid_before_utc <= moment < leaf.not_valid_after_utc:
        state = "has expired" if moment >= leaf.not_valid_after_utc else "is not valid yet"
        raise InvalidServingTls(
            f"{cert_flag} {cert_file}: the certificate {state}: it is valid from "
            f"{leaf.not_valid_before_utc.isoformat()} to {leaf.not_valid_after_utc.isoformat()}")
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)
    pkcs8 = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption())
    return KeyPair(chain, pkcs8, leaf.not_valid_after_utc, leaf.subject.rfc4514_string())


def _read(flag: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidServingTls(f"{flag} {path}: cannot read it "
                                f"({exc.strerror or type(exc).__name__})") from None


def _certificates(flag: str, path: Path) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read(flag, path))
    except ValueError:
        raise InvalidServingTls(f"{flag} {path}: not a PEM certificate (expected "
                                f"-----BEGIN CERTIFICATE-----)") from None
    return certs


def _private_key(flag: str, path: Path) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(flag, path), password=None)
    except TypeError:
        raise InvalidServingTls(f"{flag} {path}: the key is encrypted; give it "
                                f"unencrypted (mode 0600)") from None
    except ValueError:
        raise InvalidServingTls(f"{flag} {path}: not a PEM private key (expected "
                                f"-----BEGIN PRIVATE KEY----- or an EC or RSA key)") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise InvalidServingTls(f"{flag} {path}: a {type(key).__name__.lstrip('_')}; "
                                f"only EC or RSA keys are served")
    return key


def _stamp(path: Path) -> tuple[int, int, int]:
    status = os.stat(path)
    return status.st_mtime_ns, status.st_size, status.st_ino


class KeyPairFiles:
    """A serving certificate and key file, checked now (an InvalidServingTls naming the file
    and its flag) and followed: `reread` says when they changed into another good pair."""

    def __init__(self, cert_file: Path, key_file: Path, *, flags: tuple[str, str] = _XDS_FLAGS,
                 what: str = "xDS TLS", logger: logging.Logger = log) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._flags = flags
        self._what = what
        self._log = logger
        self._lock = threading.Lock()
        self._stamps = self._current_stamps()
        self.pair = read_key_pair(cert_file, key_file, flags=flags)
        """The pair last read and found good: the one served to new connections."""

    def _current_stamps(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            return _stamp(self.cert_file), _stamp(self.key_file)
        except OSError:
            return None

    def reread(self) -> KeyPair | None:
        """The files' new pair when either changed since it was last read (modification time,
        size or inode) into a good pair, which becomes `pair`; else None (keep serving
        `pair`; a bad pair is logged once, until a file changes again). Thread-safe; never
        raises: a caller in a handshake would fail it."""
        try:
            with self._lock:
                stamps = self._current_stamps()
                if stamps is None or stamps == self._stamps:
                    return None
                self._stamps = stamps
                try:
                    pair = read_key_pair(self.cert_file, self.key_file, flags=self._flags)
                except InvalidServingTls as exc:
                    self._log.warning("%s: keeping the certificate served so far (%s, until "
                                      "%s): %s", self._what, self.pair.subject,
                                      self.pair.not_after.isoformat(), exc)
                    return None
                self.pair = pair
            self._log.info("%s: serving the certificate of %s from %s (%s, valid until %s) "
                           "to new connections", self._what, self.cert_file, self.key_file,
                           pair.subject, pair.not_after.isoformat())
            return pair
        except Exception:
            self._log.exception("%s: reading %s and %s failed; keeping the current "
                                "certificate", self._what, self.cert_file, self.key_file)
            return None


class ServingTls:
    """The serving certificate and key of the gateway's gRPC port (module docstring)."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._files = KeyPairFiles(cert_file, key_file)

    @property
    def pair(self) -> KeyPair:
        """The pair served to new connections."""
        return self._files.pair

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that serve `pair` and follow the files; no client certificate
        is asked for (proxies authenticate with their tokens)."""
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self.pair),
            # grpcio's documented contract: None keeps the current configuration (its stub
            # types the fetcher without the None)
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=False)

    @staticmethod
    def _configuration(pair: KeyPair) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([(pair.key, pair.chain)])

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's fetcher, called on a gRPC core thread at each handshake: a new
        configuration when the files changed into a good pair, else None (keep the current).
        Never raises: that would fail the handshake."""
        pair = self._files.reread()
        return None if pair is None else self._configuration(pair)
