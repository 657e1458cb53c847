"""Clusters: an EDS cluster per MeshService port, a static local cluster per inbound."""

from __future__ import annotations

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import TransportSocket
from envoy.config.core.v3.config_source_pb2 import (
    AggregatedConfigSource,
    ApiVersion,
    ConfigSource,
)
from envoy.config.core.v3.protocol_pb2 import Http2ProtocolOptions
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from envoy.extensions.upstreams.http.v3.http_protocol_options_pb2 import HttpProtocolOptions
from google.protobuf.any_pb2 import Any
from google.protobuf.duration_pb2 import Duration

__all__ = ["eds_cluster", "local_cluster"]

_CONNECT_TIMEOUT = Duration(seconds=5)


_HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
_HTTP2 = Any()
_HTTP2.Pack(HttpProtocolOptions(explicit_http_config=HttpProtocolOptions.ExplicitHttpConfig(
    http2_protocol_options=Http2ProtocolOptions())))


def eds_cluster(name: str, tls: TransportSocket | None = None, *, http2: bool = False
                ) -> Cluster:
    """`tls`: the upstream mTLS of a mesh with mTLS on (`tls.upstream_tls`). `http2`: the
    port's `appProtocol` is `http2` or `grpc`, so requests an L7 outbound routes here go to
    its endpoints in HTTP/2 (the protocol they speak; a tcp_proxy ignores it)."""
    cluster = Cluster(
        name=name,
        type=Cluster.EDS,
        connect_timeout=_CONNECT_TIMEOUT,
        eds_cluster_config=Cluster.EdsClusterConfig(
            eds_config=ConfigSource(ads=AggregatedConfigSource(),
                                    resource_api_version=ApiVersion.V3),
        ),
    )
    if tls is not None:
        cluster.transport_socket.CopyFrom(tls)
    if http2:
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(_HTTP2)
    return cluster


def local_cluster(name: str, address: str, port: int, *, http2: bool = False) -> Cluster:
    """The app of an inbound; `http2`: an L7 inbound of an `http2` or `grpc` app."""
    endpoint = LbEndpoint(endpoint=Endpoint(address=Address(
        socket_address=SocketAddress(address=address, port_value=port))))
    cluster = Cluster(
        name=name,
        type=Cluster.STATIC,
        connect_timeout=_CONNECT_TIMEOUT,
        load_assignment=ClusterLoadAssignment(
            cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]),
    )
    if http2:
        cluster.typed_extension_protocol_options[_HTTP_OPTIONS].CopyFrom(_HTTP2)
    return cluster
