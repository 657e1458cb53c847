"""ClusterLoadAssignments from the endpoint read model.

The locality is always set: proxyless gRPC clients NACK a ClusterLoadAssignment without one
(xds-rules.md #13). Endpoints arrive sorted from the projection, so the bytes are stable.
"""

from __future__ import annotations

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Locality
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from google.protobuf.wrappers_pb2 import UInt32Value

from projections import PortEndpoints
from xds_gateway.resources.names import is_ip

__all__ = ["load_assignment"]


def load_assignment(cluster_name: str, zone: str, port: PortEndpoints) -> ClusterLoadAssignment:
    lb_endpoints = [
        LbEndpoint(
            endpoint=Endpoint(address=Address(
                socket_address=SocketAddress(address=e.address, port_value=e.port))),
            load_balancing_weight=UInt32Value(value=1),
        )
        for e in port.endpoints
        # Envoy rejects a whole EDS response with one non-IP address in it (and every valid
        # update with it); names are not resolved by the control plane yet, so they are left out
        if is_ip(e.address)
    ]
    return ClusterLoadAssignment(
        cluster_name=cluster_name,
        # gRPC also ignores a locality without a weight (its weighted_target policy); Envoy
        # ignores locality weights unless the cluster asks for locality-weighted balancing
        endpoints=[LocalityLbEndpoints(locality=Locality(zone=zone), lb_endpoints=lb_endpoints,
                                       load_balancing_weight=UInt32Value(value=1))]
        if lb_endpoints else [],
    )
