"""Envoy bootstrap for a sidecar (`meshlog dataplane bootstrap`), authored with envoy-data-plane.

The config points Envoy's ADS at a gateway (or the load balancer in front of several), with
the node id `<mesh>.<dataplane name>` the gateway uses to find the proxy's Dataplane, and the
proxy's dataplane token in the `authorization` metadata of its ADS and HDS streams, as
kuma-dp's bootstrap has it (`ads_config.grpc_services[].initial_metadata`; the raw token, no
`Bearer`). Envoy shows its bootstrap in the admin API's config dump, so that token is as
private as the admin port.

With a CA (`--ca-cert-file`, for a gateway serving TLS) the ADS cluster (HDS shares it) gets
kuma-dp's TLS transport socket: an UpstreamTlsContext with SNI the xDS host, TLS 1.2 at least,
and its validation context in the static secret `cp_validation_ctx`: the CA inline as
`trusted_ca`, and the gateway's certificate must name the xDS host (a DNS or IP SAN), so a
certificate the same CA issued to another host does not pass.
Authoring goes through envoy-data-plane's typed Bootstrap so a misspelt field fails here, not
in Envoy.
"""

from __future__ import annotations

import base64
import ipaddress
import json
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap
from envoy_data_plane.envoy.extensions.transport_sockets.tls import v3 as _tls  # noqa: F401 - registers the Any type used below
from envoy_data_plane.envoy.extensions.upstreams.http import v3 as _http_options  # noqa: F401 - registers the Any type used below

from services.errors import ConfigError
from xds_gateway.proxies.registration import DATAPLANE_KEY
from xds_gateway.resources.ingress import ZONE_INGRESS_NODE

__all__ = ["CP_VALIDATION_CONTEXT", "read_ca_cert_file", "sidecar_bootstrap",
           "zone_ingress_bootstrap"]

CP_VALIDATION_CONTEXT = "cp_validation_ctx"
"""The static secret with the control plane's CA (kuma-dp's name)."""


def read_ca_cert_file(path: str) -> bytes:
    """The PEM certificates in `path` (`--ca-cert-file`), checked to parse; a ConfigError
    naming the file otherwise."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"--ca-cert-file {path}: cannot read it "
                          f"({exc.strerror or type(exc).__name__})") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(f"--ca-cert-file {path}: not a PEM certificate (expected "
                          f"-----BEGIN CERTIFICATE-----)") from None
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def sidecar_bootstrap(*, mesh: str, name: str, xds_host: str, xds_port: int,
                      admin_port: int = 9901, admin_address: str = "127.0.0.1",
                      delta: bool = False, cluster: str | None = None,
                      dataplane: dict[str, Any] | None = None,
                      token: str | None = None, ca_cert: bytes | None = None) -> dict[str, Any]:
    """`dataplane`: a Dataplane document the proxy registers itself with. It travels in the
    node metadata as JSON text under `dataplane.resource`, the key kuma-dp uses; the gateway
    registers it on the first request and deregisters it after the proxy is gone. `token`:
    the proxy's dataplane token (required by gateways unless they run `--no-auth`).
    `ca_cert`: PEM CA of a gateway that serves TLS (module docstring); None: plaintext."""
    try:
        ipaddress.ip_address(xds_host)
        discovery = "STATIC"
    except ValueError:
        discovery = "STRICT_DNS"
    node: dict[str, Any] = {"id": f"{mesh}.{name}", "cluster": cluster or name}
    xds: dict[str, Any] = {"envoyGrpc": {"clusterName": "meshlog_xds"}}
    if token is not None:
        xds["initialMetadata"] = [{"key": "authorization", "value": token}]
    if dataplane is not None:
        node["metadata"] = {DATAPLANE_KEY: json.dumps(dataplane, sort_keys=True)}
    cluster_tls: dict[str, Any] = {}
    static_tls: dict[str, Any] = {}
    if ca_cert is not None:
        cluster_tls, static_tls = _cp_tls(xds_host, ca_cert)
    doc = {
        "node": node,
        "admin": {"address": {"socketAddress": {"address": admin_address,
                                                "portValue": admin_port}}},
        "dynamicResources": {
            "adsConfig": {
                "apiType": "DELTA_GRPC" if delta else "GRPC",
                "transportApiVersion": "V3",
                "setNodeOnFirstMessageOnly": True,
                "grpcServices": [xds],
            },
            "cdsConfig": {"ads": {}, "resourceApiVersion": "V3"},
            "ldsConfig": {"ads": {}, "resourceApiVersion": "V3"},
        },
        # Health Discovery Service on the same gateway: it asks the proxy to probe the
        # inbounds that have a `serviceProbe` and records what the proxy reports
        # (xds_gateway.proxies.hds), as kuma-dp's bootstrap does.
        "hdsConfig": {
            "apiType": "GRPC",
            "transportApiVersion": "V3",
            "setNodeOnFirstMessageOnly": True,
            "grpcServices": [xds],
        },
        "staticResources": {"clusters": [{
            "name": "meshlog_xds",
            "type": discovery,
            "connectTimeout": "1s",
            "typedExtensionProtocolOptions": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/"
                             "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicitHttpConfig": {"http2ProtocolOptions": {
                        "connectionKeepalive": {"interval": "30s", "timeout": "5s"}}},
                },
            },
            "loadAssignment": {
                "clusterName": "meshlog_xds",
                "endpoints": [{"lbEndpoints": [{"endpoint": {"address": {"socketAddress": {
                    "address": xds_host, "portValue": xds_port}}}}]}],
            },
            **cluster_tls,
        }], **static_tls},
    }
    return Bootstrap.from_dict(doc).to_dict()


def _cp_tls(xds_host: str, ca_cert: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ADS cluster's transport socket and the static secret it validates with, as
    kuma-dp's bootstrap has them (`cp_validation_ctx`)."""
    socket = {"transportSocket": {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": {
            "@type": "type.googleapis.com/"
                     "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": xds_host,
            "commonTlsContext": {
                "tlsParams": {"tlsMinimumProtocolVersion": "TLSv1_2"},
                "validationContextSdsSecretConfig": {"name": CP_VALIDATION_CONTEXT},
            },
        },
    }}
    secret = {"secrets": [{
        "name": CP_VALIDATION_CONTEXT,
        "validationContext": {
            "trustedCa": {"inlineBytes": base64.b64encode(ca_cert).decode()},
            "matchTypedSubjectAltNames": [
                {"sanType": "DNS", "matcher": {"exact": xds_host}},
                {"sanType": "IP_ADDRESS", "matcher": {"exact": xds_host}},
            ],
        },
    }]}
    return socket, secret


def zone_ingress_bootstrap(*, name: str, xds_host: str, xds_port: int, admin_port: int = 9901,
                           admin_address: str = "127.0.0.1", delta: bool = False,
                           token: str | None = None, ca_cert: bytes | None = None
                           ) -> dict[str, Any]:
    """The bootstrap of an Envoy acting as the zone ingress `name` (a ZoneIngress registered
    in its zone): node id `_zoneingress.<name>`, which the gateway serves the ingress's SNI
    listener to (xds_gateway/resources/ingress.py). `token`: a zone token of the zone with
    scope ingress, in the ADS stream's `authorization` metadata as a sidecar's dataplane token
    (required by gateways unless they run `--no-auth`). No health checking (it has no
    inbounds of its own). `ca_cert`: as for a sidecar."""
    doc = sidecar_bootstrap(mesh=ZONE_INGRESS_NODE, name=name, xds_host=xds_host,
                            xds_port=xds_port, admin_port=admin_port,
                            admin_address=admin_address, delta=delta, cluster=name,
                            token=token, ca_cert=ca_cert)
    doc.pop("hdsConfig", None)
    return doc
