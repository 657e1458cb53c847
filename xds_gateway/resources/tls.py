"""mTLS between sidecars: SDS secrets and the TLS contexts of inbound listeners and outbound
clusters, as Kuma builds them (reference/security.md §1).

Secrets travel by SDS over ADS (`sds_config{ads, V3}`) under Kuma's names:

- `identity_cert:secret:<mesh>`: the proxy's workload certificate and key (`IdentityRow`);
- `mesh_ca:secret:<mesh>`: the trust bundle, every CA the Mesh lists (`TrustRow.roots`), so
  that moving to another backend drops no connection (open-source Kuma trusts only the
  enabled backend's CA and cuts over hard).

Envoy warms a listener or cluster until the secrets it names arrive, and replaces a secret in
place: a rotation is a new secret version, and open connections stay up.

Inbound (`downstream`): the client must present a certificate of this mesh (URI SAN prefix
`spiffe://<mesh>/`) signed by a trusted CA. Outbound (`upstream`): meshlog originates mTLS
with ALPN `kuma`, an SNI naming the service and an exact SAN match of the service's identity.

A proxyless gRPC client (`grpc_upstream_tls`) takes no SDS: gRPC reads certificates only from
the certificate providers of its own bootstrap (gRFC A29), which `meshlog grpc-identity`
writes (instance `GRPC_CERTIFICATE_PROVIDER`, a `file_watcher` of the files it keeps). gRPC
offers ALPN `h2` whatever the context says and refuses a handshake that negotiates none, so a
STRICT inbound's mTLS context lists `h2` after `kuma` (`downstream_tls(..., grpc=True)`): the
server picks in its own order, so an Envoy client (which offers `kuma` only) still gets `kuma`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from envoy.config.core.v3.base_pb2 import DataSource, TransportSocket
from envoy.config.core.v3.config_source_pb2 import (
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
)
from envoy.extensions.transport_sockets.tls.v3.common_pb2 import (
    CertificateProviderPluginInstance,
    CertificateValidationContext,
    SubjectAltNameMatcher,
    TlsCertificate,
)
from envoy.extensions.transport_sockets.tls.v3.secret_pb2 import SdsSecretConfig, Secret
from envoy.extensions.transport_sockets.tls.v3.tls_pb2 import (
    CommonTlsContext,
    DownstreamTlsContext,
    UpstreamTlsContext,
)
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import BoolValue

__all__ = [
    "GRPC_CERTIFICATE_PROVIDER",
    "KUMA_ALPN",
    "ca_secret",
    "ca_secret_name",
    "downstream_tls",
    "grpc_upstream_tls",
    "identity_secret",
    "identity_secret_name",
    "sni",
    "sni_name",
    "upstream_tls",
]

KUMA_ALPN = "kuma"
"""The ALPN protocol of mesh mTLS: a PERMISSIVE inbound tells it from the app's own TLS."""
_TLS_SOCKET = "envoy.transport_sockets.tls"
_H2_ALPN = "h2"
GRPC_CERTIFICATE_PROVIDER = "meshlog"
"""The certificate provider instance a proxyless gRPC client's clusters name, for its own
certificate and the mesh's trust bundle: the bootstrap `meshlog grpc-identity` writes
declares it (`certificate_providers`); gRPC NACKs a cluster naming an undeclared one."""


def identity_secret_name(mesh: str) -> str:
    return f"identity_cert:secret:{mesh}"


def ca_secret_name(mesh: str) -> str:
    return f"mesh_ca:secret:{mesh}"


def identity_secret(mesh: str, cert_pem: str, key_pem: str) -> Secret:
    return Secret(name=identity_secret_name(mesh), tls_certificate=TlsCertificate(
        certificate_chain=DataSource(inline_bytes=cert_pem.encode()),
        private_key=DataSource(inline_bytes=key_pem.encode())))


def ca_secret(mesh: str, roots: tuple[str, ...]) -> Secret:
    return Secret(name=ca_secret_name(mesh), validation_context=CertificateValidationContext(
        trusted_ca=DataSource(inline_bytes="".join(roots).encode())))


def sni(mesh: str, service: str, port: int, kind: str = "ms") -> str:
    """Kuma's SNI layout for a MeshService port: `a<hash>.<name>.<port>.<mesh>.ms`, the hash
    (FNV-1a 64 of `<name>;<mesh>;`) keeping names apart that the dotted form would merge;
    `kind` `mzms` for a MeshMultiZoneService (`K:pkg/xds/envoy/tls/sni.go`)."""
    h = 0xCBF29CE484222325
    for byte in f"{service};{mesh};".encode():
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    name = f"a{h:x}.{service}.{port}.{mesh}.{kind}"
    if len(name) > 253:  # an SNI is a DNS name: keep it one, still unique
        name = f"a{h:x}.{hashlib.sha256(name.encode()).hexdigest()[:32]}.{port}.{kind}"
    return name


def sni_name(labels: Mapping[str, str], name: str) -> str:
    """The name Kuma's SNI carries for a service: its name in its own zone
    (`kuma.io/display-name`), so a client's SNI for the remote `backend-<hash>` names
    `backend`, as the ingress of its zone knows it (MADR 055: the hash omits the zone)."""
    return labels.get("kuma.io/display-name", name)


def _sds(name: str) -> SdsSecretConfig:
    return SdsSecretConfig(name=name, sds_config=ConfigSource(
        ads=AggregatedConfigSource(), resource_api_version=ApiVersion.V3))


def _common(mesh: str, san: StringMatcher, alpn: list[str]) -> CommonTlsContext:
    return CommonTlsContext(
        alpn_protocols=alpn,
        tls_certificate_sds_secret_configs=[_sds(identity_secret_name(mesh))],
        combined_validation_context=CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=CertificateValidationContext(
                match_typed_subject_alt_names=[SubjectAltNameMatcher(
                    san_type=SubjectAltNameMatcher.URI, matcher=san)]),
            validation_context_sds_secret_config=_sds(ca_secret_name(mesh))))


def _socket(context: DownstreamTlsContext | UpstreamTlsContext) -> TransportSocket:
    config = Any()
    config.Pack(context)
    return TransportSocket(name=_TLS_SOCKET, typed_config=config)


def downstream_tls(mesh: str, *, grpc: bool = False) -> TransportSocket:
    """An inbound's mTLS: a client certificate of any workload of `mesh` is required (who may
    call is the RBAC filter's decision, on its SAN).

    Session resumption is off: a resumed session skips certificate verification, so a client
    whose certificate has expired, or whose CA was just removed from the trust bundle, could
    go on resuming sessions for the ticket's lifetime; and Envoy does not mark a resumed
    peer certificate as validated (envoyproxy/envoy#42668), which breaks validation-based
    matchers. A full handshake costs one ECDSA P-256 signature and verification.

    `grpc`: a STRICT inbound, which proxyless gRPC clients reach too: ALPN `h2` is offered
    after `kuma` (module docstring)."""
    return _socket(DownstreamTlsContext(
        require_client_certificate=BoolValue(value=True),
        disable_stateless_session_resumption=True,
        disable_stateful_session_resumption=True,
        common_tls_context=_common(mesh, StringMatcher(prefix=f"spiffe://{mesh}/"),
                                   [KUMA_ALPN, _H2_ALPN] if grpc else [KUMA_ALPN])))


def upstream_tls(mesh: str, service_san: str | None, server_name: str) -> TransportSocket:
    """An outbound's mTLS to a service whose workloads hold `service_san` (exact match), or
    any workload of the mesh when the service's identity is not known (None)."""
    san = (StringMatcher(exact=service_san) if service_san is not None
           else StringMatcher(prefix=f"spiffe://{mesh}/"))
    return _socket(UpstreamTlsContext(sni=server_name,
                                      common_tls_context=_common(mesh, san, [KUMA_ALPN])))


def grpc_upstream_tls(mesh: str, service_san: str | None, server_name: str) -> TransportSocket:
    """A proxyless gRPC client's mTLS to a service (gRFC A29): its certificate and the mesh's
    trust bundle from certificate provider instance `GRPC_CERTIFICATE_PROVIDER`, the
    server's SAN matched as Envoy's outbound matches it (`match_subject_alt_names`, the
    field gRPC reads). `server_name` is Kuma's SNI, which gRPC ignores (A29; gRFC A101 would
    take it) and Envoy's inbound does not need."""
    san = (StringMatcher(exact=service_san) if service_san is not None
           else StringMatcher(prefix=f"spiffe://{mesh}/"))
    provider = CertificateProviderPluginInstance(instance_name=GRPC_CERTIFICATE_PROVIDER)
    return _socket(UpstreamTlsContext(sni=server_name, common_tls_context=CommonTlsContext(
        tls_certificate_provider_instance=provider,
        validation_context=CertificateValidationContext(
            ca_certificate_provider_instance=provider,
            match_subject_alt_names=[san]))))
