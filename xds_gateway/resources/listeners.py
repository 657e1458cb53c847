"""Listeners: one per inbound (to its local cluster) and one per reachable MeshService port.

Traffic is proxied at L4 (tcp_proxy). Outbound listeners on a VIP set `freebind`, so Envoy
can bind a VIP that is not (yet) a local address instead of rejecting the whole LDS update.

With mTLS on (`InboundTls`), an inbound terminates the mesh's mTLS (`tls.downstream_tls`)
and runs the RBAC filter (MeshTrafficPermission) first, on the client certificate's SAN:

- STRICT: one filter chain, mTLS + RBAC; a plaintext client is refused at the handshake.
- PERMISSIVE: `tls_inspector` and three chains: TLS with ALPN `kuma` (mesh mTLS + RBAC),
  other TLS (the app's own, passed through), and plaintext. RBAC sits on the mTLS chain only:
  Kuma put it on the plaintext chain too (#8152) and so denied every plaintext client.
"""

from __future__ import annotations

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.listener.v3.listener_components_pb2 import (
    Filter,
    FilterChain,
    FilterChainMatch,
    ListenerFilter,
)
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2 import TlsInspector
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy
from google.protobuf.any_pb2 import Any
from google.protobuf.wrappers_pb2 import BoolValue
from msgspec import Struct

from xds_gateway.resources.rbac import rbac_filter
from xds_gateway.resources.tls import KUMA_ALPN, downstream_tls

__all__ = ["InboundTls", "inbound_listener", "sni_listener", "tcp_listener",
           "tcp_proxy_filter"]


class InboundTls(Struct, frozen=True):
    mesh: str
    mode: str
    """STRICT or PERMISSIVE (the Mesh's enabled backend)."""
    rbac: RBAC
    """Who may call (`rbac.inbound_rbac`): the network RBAC filter of the mTLS chain."""


def _packed(message: TcpProxy | RBAC | TlsInspector) -> Any:
    config = Any()
    config.Pack(message)
    return config


def _tcp_proxy(cluster: str) -> Filter:
    return Filter(name="envoy.filters.network.tcp_proxy", typed_config=_packed(
        TcpProxy(stat_prefix=cluster.replace(":", "_"), cluster=cluster)))


def _listener(name: str, address: str, port: int, chains: list[FilterChain], *,
              bind: bool = True, freebind: bool = False) -> Listener:
    listener = Listener(
        name=name,
        address=Address(socket_address=SocketAddress(address=address, port_value=port)),
        filter_chains=chains,
        traffic_direction=0,
    )
    if not bind:
        listener.bind_to_port.CopyFrom(BoolValue(value=False))
    if freebind:
        listener.freebind.CopyFrom(BoolValue(value=True))
    return listener


def tcp_listener(name: str, address: str, port: int, cluster: str, *,
                 bind: bool = True, freebind: bool = False) -> Listener:
    return _listener(name, address, port, [FilterChain(filters=[_tcp_proxy(cluster)])],
                     bind=bind, freebind=freebind)


def inbound_listener(name: str, address: str, port: int, cluster: str,
                     tls: InboundTls | None) -> Listener:
    """An inbound: plaintext without mTLS, else as the module docstring says."""
    if tls is None:
        return tcp_listener(name, address, port, cluster)
    mtls = FilterChain(filters=[rbac_filter(tls.rbac), _tcp_proxy(cluster)],
                       transport_socket=downstream_tls(tls.mesh))
    if tls.mode == "STRICT":
        return _listener(name, address, port, [mtls])
    mtls.filter_chain_match.CopyFrom(FilterChainMatch(transport_protocol="tls",
                                                      application_protocols=[KUMA_ALPN]))
    listener = _listener(name, address, port, [
        mtls,
        FilterChain(filter_chain_match=FilterChainMatch(transport_protocol="tls"),
                    filters=[_tcp_proxy(cluster)]),
        FilterChain(filter_chain_match=FilterChainMatch(transport_protocol="raw_buffer"),
                    filters=[_tcp_proxy(cluster)]),
    ])
    listener.listener_filters.append(ListenerFilter(
        name="envoy.filters.listener.tls_inspector", typed_config=_packed(TlsInspector())))
    return listener


def tcp_proxy_filter(cluster: str) -> Filter:
    return _tcp_proxy(cluster)


def sni_listener(name: str, address: str, port: int, chains: list[FilterChain]) -> Listener:
    """A listener that picks its filter chain by the SNI of a TLS ClientHello
    (`tls_inspector`), never terminating TLS: a zone ingress (`ingress.py`)."""
    listener = _listener(name, address, port, chains)
    listener.listener_filters.append(ListenerFilter(
        name="envoy.filters.listener.tls_inspector", typed_config=_packed(TlsInspector())))
    return listener
