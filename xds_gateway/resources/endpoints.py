"""ClusterLoadAssignments from the endpoint read model: one MeshService port's, and a
MeshMultiZoneService port's, made of its MeshServices' endpoints at their priorities.

A remote MeshService reached through its zone's ingresses (`EndpointsRow.through_ingress`,
mTLS on) has those as the endpoints of every port (`port_endpoints`): the ingress tells the
ports apart by the SNI of the client's mTLS.

The locality is always set: proxyless gRPC clients NACK a ClusterLoadAssignment without one
(xds-rules.md #13). Endpoints arrive sorted from the projection, so the bytes are stable.

Addresses go through `ip` (the gateway's `AddressBook.ip`): an IP stays itself, a DNS name
becomes its answer, and one without an answer is left out, since Envoy rejects a whole EDS
response with one name in it (and every later update with it). The default `ip_only` leaves
every name out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from envoy.config.core.v3.address_pb2 import Address, SocketAddress
from envoy.config.core.v3.base_pb2 import Locality
from envoy.config.endpoint.v3.endpoint_components_pb2 import (
    Endpoint,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy.config.endpoint.v3.endpoint_pb2 import ClusterLoadAssignment
from google.protobuf.wrappers_pb2 import UInt32Value

from projections import Endpoint as EndpointRow
from projections import EndpointsRow, PortEndpoints
from xds_gateway.addresses import ip_only

__all__ = ["load_assignment", "port_endpoints", "prioritized_load_assignment"]


def port_endpoints(row: EndpointsRow, port: int) -> PortEndpoints | None:
    """Where a client reaches `row`'s MeshService port `port` (None: it has no such port):
    its own endpoints, or its zone's ingresses for a remote one with mTLS."""
    found = next((p for p in row.ports if p.port.port == port), None)
    if found is None or row.through_ingress is None:
        return found
    return PortEndpoints(port=found.port, endpoints=row.through_ingress)

Group = tuple[int, str, Sequence[EndpointRow]]
"""(priority, zone, endpoints) of one MeshService port in a MeshMultiZoneService's cluster."""
Resolve = Callable[[str], str | None]
"""An address -> the IP it is (or resolves to); None leaves it out."""


def prioritized_load_assignment(cluster_name: str, groups: Iterable[Group],
                                ip: Resolve = ip_only) -> ClusterLoadAssignment:
    """The endpoints of several MeshServices, each at its priority with its zone as the
    locality (Kuma's `fillMeshMultiZoneServices`: local ones at 0, other zones' at 1, so
    Envoy sends everything to the lowest priority that has healthy hosts and fails over).

    Groups of one (priority, zone) are merged (Envoy refuses a locality listed twice in one
    priority), an address:port listed twice is kept once, empty groups are left out, and the
    priorities left are renumbered 0, 1, ... in order: gRPC refuses gaps, and for Envoy a
    lone priority 1 behaves as priority 0 does."""
    merged: dict[tuple[int, str], set[tuple[str, int]]] = {}
    for priority, zone, endpoints in groups:
        hosts = {(a, e.port) for e in endpoints if (a := ip(e.address)) is not None}
        if hosts:
            merged.setdefault((priority, zone), set()).update(hosts)
    rank = {p: i for i, p in enumerate(sorted({p for p, _ in merged}))}
    return ClusterLoadAssignment(cluster_name=cluster_name, endpoints=[
        LocalityLbEndpoints(locality=Locality(zone=zone), priority=rank[priority],
                            lb_endpoints=[_lb_endpoint(a, p) for a, p in sorted(hosts)],
                            load_balancing_weight=UInt32Value(value=1))
        for (priority, zone), hosts in sorted(merged.items())])


def _lb_endpoint(address: str, port: int) -> LbEndpoint:
    return LbEndpoint(
        endpoint=Endpoint(address=Address(
            socket_address=SocketAddress(address=address, port_value=port))),
        load_balancing_weight=UInt32Value(value=1))


def load_assignment(cluster_name: str, zone: str, port: PortEndpoints,
                    ip: Resolve = ip_only) -> ClusterLoadAssignment:
    """One MeshService port's endpoints, in the row's order; an address:port that two
    endpoints share once their names are resolved is listed once."""
    hosts = dict.fromkeys((a, e.port) for e in port.endpoints if (a := ip(e.address)) is not None)
    lb_endpoints = [_lb_endpoint(address, number) for address, number in hosts]
    return ClusterLoadAssignment(
        cluster_name=cluster_name,
        # gRPC also ignores a locality without a weight (its weighted_target policy); Envoy
        # ignores locality weights unless the cluster asks for locality-weighted balancing
        endpoints=[LocalityLbEndpoints(locality=Locality(zone=zone), lb_endpoints=lb_endpoints,
                                       load_balancing_weight=UInt32Value(value=1))]
        if lb_endpoints else [],
    )
