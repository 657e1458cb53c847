"""The identity agent of a proxyless gRPC client (`meshlog grpc-identity`).

gRPC takes its mesh certificate only from the certificate providers of its own bootstrap
(gRFC A29), so this agent does for it what Envoy does for itself: it opens an ADS stream to a
gateway as the client's Dataplane (node `<mesh>.<name>`, its dataplane token in the
`authorization` metadata, over TLS when the gateway serves it), asks by SDS for Kuma's two
secrets, `identity_cert:secret:<mesh>` and `mesh_ca:secret:<mesh>`, and writes them as
three PEM files the bootstrap's `file_watcher` provider reads:

- `cert.pem`: the workload certificate (SPIFFE URI SAN `spiffe://<mesh>/<service>`);
- `key.pem`: its private key (mode 0600);
- `ca.pem`: the mesh's trust bundle (every CA the Mesh lists).

gRPC's provider reads the key and the certificate one after the other and never checks that
they match (grpc-core's FileWatcherCertificateProvider compares mtimes only): a pair it reads
serves every new handshake until its next read. So the three files of one write go into a
new directory `.gen-*`, and the names are symlinks through `.data`, one symlink switched by
one rename (as Kubernetes' AtomicWriter does): both paths always name one pair. The stream
stays open: each secret the gateway pushes
(a renewal, a CA change) is written when it arrives and ACKed after. A lost gateway is
retried with backoff; a refused token ends the agent with the gateway's reason.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from envoy.config.core.v3.base_pb2 import Node
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import Secret
from envoy.service.discovery.v3.discovery_pb2 import DiscoveryRequest, DiscoveryResponse
from msgspec import Struct

from services.errors import ConfigError

__all__ = ["CERTIFICATE_PROVIDER", "IdentityFiles", "IdentityOptions", "grpc_bootstrap",
           "rpc_status", "run_identity_agent", "write_atomically"]

log = logging.getLogger(__name__)

_ADS = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
CERTIFICATE_PROVIDER = "meshlog"
"""The certificate provider instance the gateway's clusters for gRPC name
(xds_gateway.resources.tls.GRPC_CERTIFICATE_PROVIDER: the two must stay equal)."""
_REFUSED = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.INVALID_ARGUMENT)
_WARN_AFTER_S = 30
_FIRST_BACKOFF_S = 0.5
_USER_AGENT = "meshlog-grpc-identity"
"""xds_gateway.resources.node.IDENTITY_AGENT (equal, tested): the gateway publishes no insight
for this stream, so the client's own stream stays its Dataplane's insight."""


class IdentityFiles(Struct, frozen=True):
    cert: Path
    key: Path
    ca: Path

    @classmethod
    def in_dir(cls, directory: Path) -> IdentityFiles:
        return cls(directory / "cert.pem", directory / "key.pem", directory / "ca.pem")


class IdentityOptions(Struct, frozen=True, kw_only=True):
    mesh: str
    name: str
    xds_address: str
    files: IdentityFiles
    token: str | None = None
    ca_cert: bytes | None = None
    """The gateways' CA (their xDS serving certificate's): TLS to the gateway; None:
    plaintext."""


def write_atomically(path: Path, data: bytes, mode: int = 0o644) -> None:
    """`path` holds `data` whole, or its old content: never a part (temp file, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grpc_bootstrap(options: IdentityOptions, *, token_file: str | None,
                   refresh_interval: str = "10s") -> dict[str, Any]:
    """A gRPC xDS bootstrap (GRPC_XDS_BOOTSTRAP) for the client: the gateway, the node and
    the `certificate_providers` entry the gateway's clusters name, reading the agent's
    files every `refresh_interval`. With `token_file`, gRPC sends the token as call
    credentials (gRFC A97: over TLS only, and only with
    GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true)."""
    server: dict[str, Any] = {"server_uri": options.xds_address,
                              "server_features": ["xds_v3"]}
    if options.ca_cert is None:
        server["channel_creds"] = [{"type": "insecure"}]
    else:
        server["channel_creds"] = [{"type": "tls", "config": {
            "ca_certificate_file": str(options.files.ca.parent / "xds-ca.pem")}}]
    if token_file is not None:
        server["call_creds"] = [{"type": "jwt_token_file",
                                 "config": {"jwt_token_file": token_file}}]
    return {
        "xds_servers": [server],
        "node": {"id": f"{options.mesh}.{options.name}"},
        "certificate_providers": {CERTIFICATE_PROVIDER: {
            "plugin_name": "file_watcher",
            "config": {"certificate_file": str(options.files.cert),
                       "private_key_file": str(options.files.key),
                       "ca_certificate_file": str(options.files.ca),
                       "refresh_interval": refresh_interval}}},
    }


def _names(mesh: str) -> tuple[str, str]:
    return f"identity_cert:secret:{mesh}", f"mesh_ca:secret:{mesh}"


def _write(files: IdentityFiles, mesh: str, secrets: dict[str, Secret]) -> bool:
    """Write what `secrets` hold; False while the gateway has not both (no certificate yet:
    the Dataplane is not registered, or its mesh has no mTLS)."""
    identity_name, ca_name = _names(mesh)
    identity, ca = secrets.get(identity_name), secrets.get(ca_name)
    if identity is None or ca is None:
        return False
    tls = identity.tls_certificate
    contents = [(files.ca.name, ca.validation_context.trusted_ca.inline_bytes, 0o644),
                (files.key.name, tls.private_key.inline_bytes, 0o600),
                (files.cert.name, tls.certificate_chain.inline_bytes, 0o644)]
    empty = [name for name, data, _mode in contents if not data]
    if empty:
        # gRPC would read an empty file as no certificate: keep the last pair written
        log.error("the gateway sent the identity of mesh %s with no bytes for %s: not "
                  "written, the files keep the last identity", mesh, ", ".join(empty))
        return False
    _publish(files.cert.parent, contents)
    return True


_DATA = ".data"


def _publish(directory: Path, contents: list[tuple[str, bytes, int]]) -> None:
    """`directory`'s names in `contents` switch to their new bytes at once: written into a new
    `.gen-*` directory, then `.data` (which each name links through) renamed onto it."""
    generation = Path(tempfile.mkdtemp(dir=directory, prefix=".gen-"))
    try:
        generation.chmod(0o755)  # as a plain directory: the key's own mode protects it
        for name, data, mode in contents:
            fd = os.open(generation / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        _link(directory / _DATA, generation.name)
    except BaseException:
        shutil.rmtree(generation, ignore_errors=True)
        raise
    for name, _data, _mode in contents:
        path = directory / name
        if not path.is_symlink() or os.readlink(path) != f"{_DATA}/{name}":
            _link(path, f"{_DATA}/{name}")  # once (or over a plain file of an older agent)
    for old in directory.glob(".gen-*"):
        if old != generation:
            shutil.rmtree(old, ignore_errors=True)


def _link(path: Path, target: str) -> None:
    """`path` is a symlink to `target`, switched by one rename."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class _Stream:
    """One ADS stream asking for the two secrets, ACKing each response."""

    def __init__(self, options: IdentityOptions) -> None:
        self.options = options
        self.requests: queue.Queue[DiscoveryRequest | None] = queue.Queue()
        self.answered = False
        """The gateway sent a response on this stream (it served: a later end is not an
        outage to back off from)."""

    def _requests(self) -> Iterator[DiscoveryRequest]:
        while (request := self.requests.get()) is not None:
            yield request

    def _request(self, version: str = "", nonce: str = "") -> DiscoveryRequest:
        o = self.options
        return DiscoveryRequest(
            node=Node(id=f"{o.mesh}.{o.name}", user_agent_name=_USER_AGENT),
            type_url=_SECRET, resource_names=list(_names(o.mesh)),
            version_info=version, response_nonce=nonce)

    def run(self, channel: grpc.Channel, written: Callable[[], None],
            stop: threading.Event) -> None:
        call = channel.stream_stream(
            _ADS, request_serializer=DiscoveryRequest.SerializeToString,
            response_deserializer=DiscoveryResponse.FromString)
        metadata: tuple[tuple[str, str | bytes], ...] = (
            () if self.options.token is None else (("authorization", self.options.token),))
        self.requests.put(self._request())
        responses = call(self._requests(), metadata=metadata)
        ended = threading.Event()

        def cancel_on_stop() -> None:
            while not ended.is_set():
                if stop.wait(0.2):
                    responses.cancel()
                    return

        threading.Thread(target=cancel_on_stop, daemon=True).start()
        secrets: dict[str, Secret] = {}
        try:
            for response in responses:
                self.answered = True
                if response.type_url != _SECRET:
                    continue
                # SotW on a named type: a response may hold only what changed (xds-rules.md)
                for any_ in response.resources:
                    secret = Secret()
                    any_.Unpack(secret)
                    secrets[secret.name] = secret
                if _write(self.options.files, self.options.mesh, secrets):
                    log.info("wrote the identity of %s.%s (version %s) to %s",
                             self.options.mesh, self.options.name, response.version_info,
                             self.options.files.cert.parent)
                    written()
                self.requests.put(self._request(response.version_info, response.nonce))
        finally:
            ended.set()
            self.requests.put(None)


def rpc_status(exc: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    """The code and details of a failed call (a sync stream's error is also its `Call`)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    return (code() if callable(code) else None,
            (details() if callable(details) else None) or str(exc))


def _channel(options: IdentityOptions) -> grpc.Channel:
    if options.ca_cert is None:
        return grpc.insecure_channel(options.xds_address)
    return grpc.secure_channel(options.xds_address,
                               grpc.ssl_channel_credentials(root_certificates=options.ca_cert))


def run_identity_agent(options: IdentityOptions, *, once: bool = False,
                       timeout: float | None = None, stop: threading.Event | None = None,
                       written: Callable[[], None] = lambda: None) -> None:
    """Keep `options.files` holding the Dataplane's identity until `stop` (or, `once`, until
    the first write). A refusal of the gateway (token, node) is a ConfigError naming it; a
    gateway that cannot be reached is retried, with backoff up to 10 s. `timeout`: a
    ConfigError when nothing was written within that many seconds."""
    stop = stop or threading.Event()
    first = threading.Event()
    timers = [threading.Timer(_WARN_AFTER_S, _warn_no_certificate, (options, first))]
    if timeout is not None:
        timers.append(threading.Timer(timeout, stop.set))
    for timer in timers:
        timer.daemon = True
        timer.start()
    try:
        _run(options, once, stop, first, written)
    finally:
        for timer in timers:
            timer.cancel()
    if timeout is not None and not first.is_set():
        raise ConfigError(
            f"no certificate for Dataplane {options.mesh}.{options.name} from the gateway at "
            f"{options.xds_address} within {timeout:g} s: is the Dataplane registered, and "
            f"does Mesh {options.mesh!r} have mTLS on?")


def _warn_no_certificate(options: IdentityOptions, first: threading.Event) -> None:
    if not first.is_set():
        log.warning("no certificate for Dataplane %s.%s from %s after %d s: is the Dataplane "
                    "registered, and does Mesh %r have mTLS on?", options.mesh, options.name,
                    options.xds_address, _WARN_AFTER_S, options.mesh)


def _run(options: IdentityOptions, once: bool, stop: threading.Event,
         first: threading.Event, written: Callable[[], None]) -> None:
    # the key's directory: its owner's only when made here (the app reads the files as the
    # agent's user, as it must the key's 0600)
    options.files.cert.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if options.ca_cert is not None:
        write_atomically(options.files.ca.parent / "xds-ca.pem", options.ca_cert)

    def on_write() -> None:
        first.set()
        written()
        if once:
            stop.set()

    backoff = _FIRST_BACKOFF_S
    while not stop.is_set():
        stream = _Stream(options)
        with _channel(options) as channel:
            try:
                stream.run(channel, on_write, stop)
            except OSError as exc:
                # a full disk, a directory made read-only: the files keep the last identity;
                # a new stream gets the secrets again and the write is tried again
                log.error("cannot write the identity of %s.%s to %s (%s); the files keep the "
                          "last identity written; retrying in %.1f s", options.mesh,
                          options.name, options.files.cert.parent, exc, backoff)
            except grpc.RpcError as exc:
                code, details = rpc_status(exc)
                if code == grpc.StatusCode.CANCELLED and stop.is_set():
                    break
                if code in _REFUSED:
                    raise ConfigError(f"the gateway at {options.xds_address} refused "
                                      f"{options.mesh}.{options.name}: {details}") from None
                if stream.answered:  # served, then ended (max connection age, a restart)
                    backoff = _FIRST_BACKOFF_S
                log.warning("xDS stream to %s ended (%s: %s); retrying in %.1f s",
                            options.xds_address, code.name if code else "?", details, backoff)
        if stop.wait(backoff):
            break
        backoff = min(backoff * 2, 10.0)
