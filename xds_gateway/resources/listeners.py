"""Listeners: one per inbound (to its local cluster) and one per reachable MeshService port.

An outbound to a port whose `appProtocol` is `http`, `http2` or `grpc` is proxied at L7 (an
HttpConnectionManager routing every request to the port's cluster, as Kuma's outbound
does; a MeshHTTPRoute replaces that route with its own, `http_routes.py`), so requests, not
connections, are balanced over the endpoints: a keep-alive HTTP/1.1 client or one gRPC
channel (one HTTP/2 connection) reaches every endpoint. So is an inbound
of such a protocol (its `protocol`, or its `kuma.io/protocol` tag), to its local cluster, as
Kuma's: HTTP counters per inbound, and MeshTrafficPermission as an HTTP filter, so a denied
client gets a 403 rather than a reset connection. Any other protocol is proxied at L4
(tcp_proxy). No request timeout is set (Envoy's
default is 15 s, from Kuma's default MeshTimeout too; meshlog creates no policies, and a
stream or long poll that worked over L4 must keep working): a stream idle for 30 minutes
ends, Kuma's default `streamIdleTimeout` (a MeshTimeout sets them: `timeouts.py`).
WebSocket upgrades pass. Outbound listeners on a VIP set `freebind`, so Envoy can bind a VIP
that is not (yet) a local address instead of rejecting the whole LDS update.

With mTLS on (`InboundTls`), an inbound terminates the mesh's mTLS (`tls.downstream_tls`)
and runs the RBAC filter (MeshTrafficPermission) first, on the client certificate's SAN (at
L7, the same rules as the first HTTP filter):

- STRICT: one filter chain, mTLS + RBAC; a plaintext client is refused at the handshake. Its
  ALPN is `kuma`, or `h2` for a proxyless gRPC client (`tls.downstream_tls`), which offers
  nothing else.
- PERMISSIVE: `tls_inspector` and three chains: TLS with ALPN `kuma` (mesh mTLS + RBAC),
  other TLS (the app's own, passed through), and plaintext. RBAC sits on the mTLS chain only:
  Kuma put it on the plaintext chain too (#8152) and so denied every plaintext client.
  A proxyless gRPC client's TLS (ALPN `h2`, no SNI of ours: gRFC A29) could not be told from
  the app's own, so in a PERMISSIVE mesh gRPC clients speak plaintext (`snapshot.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.protocol_pb2 import Http1ProtocolOptions
from envoy.config.listener.v3.listener_components_pb2 import (
    Filter,
    FilterChain,
    FilterChainMatch,
    ListenerFilter,
)
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import (
    Route,
    RouteAction,
    RouteMatch,
    VirtualHost,
)
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from envoy.extensions.filters.http.router.v3.router_pb2 import Router
from envoy.extensions.filters.listener.tls_inspector.v3.tls_inspector_pb2 import TlsInspector
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
    HttpFilter,
)
from envoy.extensions.filters.network.rbac.v3.rbac_pb2 import RBAC
from envoy.extensions.filters.network.tcp_proxy.v3.tcp_proxy_pb2 import TcpProxy
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.wrappers_pb2 import BoolValue
from msgspec import Struct

from events import MeshMultiZoneServicePort, MeshServicePort
from xds_gateway.resources.rbac import http_rbac_filter, rbac_filter
from xds_gateway.resources.tls import KUMA_ALPN, downstream_tls

__all__ = ["HTTP2_PROTOCOLS", "HTTP_PROTOCOLS", "InboundTls", "edit_filters",
           "forwarding_routes", "inbound_listener", "outbound_listener", "port_protocol",
           "sni_listener", "tcp_listener", "tcp_proxy_filter"]

_HCM = "envoy.filters.network.http_connection_manager"
_TCP_PROXY = "envoy.filters.network.tcp_proxy"

HTTP_PROTOCOLS = frozenset({"http", "http2", "grpc"})
"""The `appProtocol`s whose outbound is proxied at L7."""
HTTP2_PROTOCOLS = frozenset({"http2", "grpc"})
"""The `appProtocol`s whose endpoints are spoken to in HTTP/2 (`clusters.eds_cluster`)."""
_STREAM_IDLE_TIMEOUT = Duration(seconds=30 * 60)


def port_protocol(ports: Sequence[MeshServicePort | MeshMultiZoneServicePort], port: int
                  ) -> str:
    """The `appProtocol` of `port` among a service's `ports` (`tcp` if it is not there)."""
    return next((p.app_protocol for p in ports if p.port == port), "tcp")


class InboundTls(Struct, frozen=True):
    mesh: str
    mode: str
    """STRICT or PERMISSIVE (the Mesh's enabled backend)."""
    rbac: RBAC
    """Who may call (`rbac.inbound_rbac`): the network RBAC filter of the mTLS chain."""


def _packed(message: Message) -> Any:
    config = Any()
    config.Pack(message)
    return config


def _http_connection_manager(cluster: str, rbac: RBAC | None = None, *, http2: bool = False
                             ) -> Filter:
    """Every request, whatever its host and path, to `cluster`; with `rbac`, only those of
    the clients it allows (`rbac.http_rbac_filter`). The codec is found per connection (TLS's
    ALPN, else HTTP/2's preface), unless `http2`: the mesh mTLS chain of an inbound of an
    `http2` or `grpc` app, which negotiates ALPN `kuma`, not `h2`."""
    http_filters = [] if rbac is None else [http_rbac_filter(rbac)]
    http_filters.append(HttpFilter(name="envoy.filters.http.router",
                                   typed_config=_packed(Router())))
    return Filter(name=_HCM, typed_config=_packed(
        HttpConnectionManager(
            stat_prefix=cluster.replace(":", "_"),
            codec_type=HttpConnectionManager.HTTP2 if http2 else HttpConnectionManager.AUTO,
            route_config=RouteConfiguration(name=cluster, virtual_hosts=[VirtualHost(
                name=cluster, domains=["*"], routes=[Route(
                    match=RouteMatch(prefix="/"),
                    route=RouteAction(cluster=cluster, timeout=Duration(seconds=0)))])]),
            http_filters=http_filters,
            # an HTTP/1.0 client may send no Host: it is routed (any host matches) as this
            http_protocol_options=Http1ProtocolOptions(accept_http_10=True,
                                                       default_host_for_http_10=cluster),
            # a WebSocket's upgrade passes, then its bytes as over L4 (as Kuma's)
            upgrade_configs=[HttpConnectionManager.UpgradeConfig(upgrade_type="websocket")],
            stream_idle_timeout=_STREAM_IDLE_TIMEOUT,
        )))


def _tcp_proxy(cluster: str) -> Filter:
    return Filter(name=_TCP_PROXY, typed_config=_packed(
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


def outbound_listener(name: str, address: str, port: int, cluster: str, protocol: str, *,
                      bind: bool = True, freebind: bool = False) -> Listener:
    """An outbound to `cluster`: L7 for the `HTTP_PROTOCOLS`, else L4."""
    proxy = (_http_connection_manager(cluster) if protocol in HTTP_PROTOCOLS
             else _tcp_proxy(cluster))
    return _listener(name, address, port, [FilterChain(filters=[proxy])], bind=bind,
                     freebind=freebind)


def inbound_listener(name: str, address: str, port: int, cluster: str,
                     tls: InboundTls | None, protocol: str = "tcp") -> Listener:
    """An inbound: plaintext without mTLS, else as the module docstring says; at L7 for the
    `HTTP_PROTOCOLS`, with the mTLS chain's RBAC as an HTTP filter."""
    l7, h2 = protocol in HTTP_PROTOCOLS, protocol in HTTP2_PROTOCOLS

    def proxy() -> Filter:  # plaintext: HTTP/2 by its preface, so HTTP/1.1 clients pass too
        return _http_connection_manager(cluster) if l7 else _tcp_proxy(cluster)

    if tls is None:
        return _listener(name, address, port, [FilterChain(filters=[proxy()])])
    mtls = FilterChain(filters=[_http_connection_manager(cluster, tls.rbac, http2=h2)] if l7 else
                       [rbac_filter(tls.rbac), _tcp_proxy(cluster)],
                       transport_socket=downstream_tls(tls.mesh, grpc=tls.mode == "STRICT"))
    if tls.mode == "STRICT":
        return _listener(name, address, port, [mtls])
    mtls.filter_chain_match.CopyFrom(FilterChainMatch(transport_protocol="tls",
                                                      application_protocols=[KUMA_ALPN]))
    listener = _listener(name, address, port, [
        mtls,
        # the app's own TLS passes through as it is
        FilterChain(filter_chain_match=FilterChainMatch(transport_protocol="tls"),
                    filters=[_tcp_proxy(cluster)]),
        FilterChain(filter_chain_match=FilterChainMatch(transport_protocol="raw_buffer"),
                    filters=[proxy()]),
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


def edit_filters(listener: Listener, *, tcp_proxy: Callable[[TcpProxy], None] | None = None,
                 hcm: Callable[[HttpConnectionManager], None] | None = None) -> Listener:
    """`listener` with the tcp_proxy and the HttpConnectionManager of each of its filter
    chains changed in place by `tcp_proxy` and `hcm` (each unpacked and packed again once):
    how a policy sets what it sets on an outbound's or an inbound's listener."""
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            config = network_filter.typed_config
            if network_filter.name == _TCP_PROXY and tcp_proxy is not None:
                message: Message = TcpProxy()
                config.Unpack(message)
                tcp_proxy(message)
            elif network_filter.name == _HCM and hcm is not None:
                message = HttpConnectionManager()
                config.Unpack(message)
                hcm(message)
            else:
                continue
            config.Pack(message)
    return listener


def forwarding_routes(hcm: HttpConnectionManager) -> Iterator[RouteAction]:
    """The route actions of `hcm`'s routes that forward to clusters: not a MeshHTTPRoute's
    direct 500, where a retry, a timeout or a hash policy would make Envoy refuse it."""
    for host in hcm.route_config.virtual_hosts:
        for route in host.routes:
            if route.HasField("route"):
                yield route.route
