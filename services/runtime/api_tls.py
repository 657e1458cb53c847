"""The HTTP API over TLS: `ApiTls`, the API's serving certificate and key (Kuma's
`apiServer.https.tlsCertFile` / `tlsKeyFile`), and `meshlog up --api-tls`'s own.

`meshlog api` and `meshlog up` serve HTTPS only on `--api-port` with `--api-tls-cert-file` and
`--api-tls-key-file` (Kuma serves HTTPS on 5682 beside HTTP on 5681; here one port serves one
or the other, so no token ever crosses it in clear). The files are checked at start as the
gateway's are (`xds_gateway.server.serving_tls.KeyPairFiles`: readable, PEM, the key the
certificate's, valid now), each error naming the flag and the file, before anything listens.

A renewed pair is served without a restart, as the gateway does for xDS: the listening
`ssl.SSLContext` has an SNI callback, which OpenSSL calls on every ClientHello (with or without
a server name); when either file changed into a good pair it loads a context with that pair,
and the handshake goes on with it (`SSLObject.context`, the stdlib's way to switch certificates
in that callback). Open connections keep what they have. A bad pair (half a rotation) is not
served: the last good one is, and the reason is logged once.

`meshlog up --api-tls` makes its own CA and serving certificate in `<data-dir>/api-tls/` (the
same code and rules as `--xds-tls`'s `xds-tls/`, services.runtime.xds_certificate: the CA made
once and kept, the serving certificate issued again when a host is missing). A CA of its own,
not the xDS one: who trusts it differs (CLI users, not proxies), and either can be replaced
without cutting off the other. The CLI finds `api-tls/ca.crt` through up.json's `api_ca_cert`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path

from services.runtime.config import UpConfig
from services.runtime.xds_certificate import (
    CertificatePurpose,
    XdsCertificate,
    ensure_xds_certificate_in,
    xds_hosts,
)
from xds_gateway.server.serving_tls import InvalidServingTls, KeyPair, KeyPairFiles

__all__ = ["API_TLS", "API_TLS_DIR", "API_TLS_FLAGS", "ApiTls", "ensure_api_certificate",
           "up_api_tls"]

log = logging.getLogger("meshlog.api")

API_TLS_FLAGS = ("--api-tls-cert-file", "--api-tls-key-file")
API_TLS_DIR = "api-tls"
API_TLS = CertificatePurpose("API TLS", "--api-tls", API_TLS_FLAGS,
                             "the CLI trusts it: meshlog --ca-cert-file")


class ApiTls:
    """The API's serving certificate and key (module docstring); `context` is what the
    listening socket serves."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self._files = KeyPairFiles(cert_file, key_file, flags=API_TLS_FLAGS, what="API TLS",
                                   logger=log)
        self.context = _context(self._files.pair, self)
        self.context.sni_callback = self._on_hello
        self._serving = self.context
        """The context of new connections: `context`, or one loaded since from new files."""

    @property
    def pair(self) -> KeyPair:
        """The pair served to new connections."""
        return self._files.pair

    def _on_hello(self, connection: ssl.SSLSocket | ssl.SSLObject, server_name: str | None,
                  context: ssl.SSLContext) -> None:
        """OpenSSL's servername callback, in the handshake: serve the newest good pair.
        Never raises (that would fail the handshake)."""
        pair = self._files.reread()
        if pair is not None:
            try:
                self._serving = _context(pair, self)
            except InvalidServingTls as exc:
                log.warning("API TLS: keeping the certificate served so far: %s", exc)
            except Exception:  # out of memory or file descriptors: never fail the handshake
                log.exception("API TLS: loading %s and %s failed; keeping the certificate "
                              "served so far", self.cert_file, self.key_file)
        if self._serving is not context:
            connection.context = self._serving


def _context(pair: KeyPair, files: ApiTls) -> ssl.SSLContext:
    """A server context serving `pair` (TLS 1.2 at least, HTTP/1.1, no client certificate:
    callers authenticate with user tokens). The stdlib loads a pair from files only: the
    checked bytes are handed over as in-memory files (`_pair_files`), so what is served is what
    was checked, even when the files change meanwhile, and the key is written to no disk."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    with _pair_files(pair) as (chain, key):
        try:
            context.load_cert_chain(chain, key)
        except ssl.SSLError as exc:
            raise InvalidServingTls(f"{API_TLS_FLAGS[0]} {files.cert_file} and "
                                    f"{API_TLS_FLAGS[1]} {files.key_file}: OpenSSL refused "
                                    f"them ({exc.reason or exc})") from None
    return context


@contextlib.contextmanager
def _pair_files(pair: KeyPair) -> Iterator[tuple[str, str]]:
    """Paths OpenSSL reads `pair` from (chain, key), valid inside the `with`. On Linux,
    anonymous memory files (`memfd_create`) opened as /proc/self/fd/N: nothing on any file
    system, gone when closed. Elsewhere, or where the kernel refuses memfd_create (a seccomp
    profile), `_folder_files`."""
    descriptors: list[int] = []
    try:
        try:
            for data in (pair.chain, pair.key):
                descriptors.append(os.memfd_create("meshlog-api-tls", os.MFD_CLOEXEC))
                _write_all(descriptors[-1], data)
        except (AttributeError, OSError):  # no memfd_create here
            descriptors, made = [], descriptors
            for descriptor in made:
                os.close(descriptor)
        if len(descriptors) == 2 and os.path.isdir("/proc/self/fd"):
            yield f"/proc/self/fd/{descriptors[0]}", f"/proc/self/fd/{descriptors[1]}"
            return
    finally:
        for descriptor in descriptors:
            os.close(descriptor)
    with _folder_files(pair) as paths:
        yield paths


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view):]


@contextlib.contextmanager
def _folder_files(pair: KeyPair) -> Iterator[tuple[str, str]]:
    """`_pair_files` without memory files: a temporary folder of this user's only (0700), the
    key 0600 from its creation, both removed when the `with` ends, however it ends."""
    with tempfile.TemporaryDirectory(prefix="meshlog-api-tls-") as folder:  # 0700
        chain, key = Path(folder) / "tls.crt", Path(folder) / "tls.key"
        chain.write_bytes(pair.chain)
        descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(pair.key)
        yield str(chain), str(key)


def ensure_api_certificate(data_dir: Path, api_host: str) -> XdsCertificate:
    """`meshlog up --api-tls`: the data dir's API CA and serving certificate (module
    docstring) for loopback, the host name and `api_host`, made or renewed now."""
    return ensure_xds_certificate_in(data_dir / API_TLS_DIR,
                                     xds_hosts(api_host, socket.gethostname()), purpose=API_TLS)


def up_api_tls(cfg: UpConfig) -> tuple[ApiTls | None, dict[str, str]]:
    """`meshlog up`'s API TLS (`--api-tls-cert-file`, else `--api-tls`, else none), checked
    or made now, and what up.json says of it: the CA the CLI trusts (`api_ca_cert`), or the
    certificate served (`api_tls_cert`: its CA is the operator's to hand out)."""
    if cfg.api_tls_files is not None:
        tls = ApiTls(*cfg.api_tls_files)
        return tls, {"api_tls_cert": str(tls.cert_file)}
    if not cfg.api_tls:
        return None, {}
    files = ensure_api_certificate(cfg.data_dir, cfg.api_host)
    # absolute: the CLI reads it from wherever it runs
    return ApiTls(files.cert_file, files.key_file), {"api_ca_cert": str(files.ca_file.resolve())}
