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
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from google.protobuf.duration_pb2 import Duration

__all__ = ["eds_cluster", "local_cluster"]

_CONNECT_TIMEOUT = Duration(seconds=5)


def eds_cluster(name: str, tls: TransportSocket | None = None) -> Cluster:
    """`tls`: the upstream mTLS of a mesh with mTLS on (`tls.upstream_tls`)."""
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
    return cluster


def local_cluster(name: str, address: str, port: int) -> Cluster:
    endpoint = LbEndpoint(endpoint=Endpoint(address=Address(
        socket_address=SocketAddress(address=address, port_value=port))))
    return Cluster(
        name=name,
        type=Cluster.STATIC,
        connect_timeout=_CONNECT_TIMEOUT,
        load_assignment=ClusterLoadAssignment(
            cluster_name=name, endpoints=[LocalityLbEndpoints(lb_endpoints=[endpoint])]),
    )
