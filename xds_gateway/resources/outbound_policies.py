"""The policies of a proxy's outbounds together (MeshTimeout, MeshRetry, MeshCircuitBreaker,
MeshHTTPRoute, MeshLoadBalancingStrategy): which apply to a proxy (`applying`), what each
destination gets (`for_destination`), and what that changes in the destination's cluster
(`cluster_inputs`, `policed_cluster`) and outbound listener (`outbound`). Each kind's rules
are its own module's; the snapshot passes one `Destination` through instead of one argument
per kind."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from msgspec import Struct

from events import (
    MESH_CIRCUIT_BREAKER,
    MESH_HTTP_ROUTE,
    MESH_LOAD_BALANCING_STRATEGY,
    MESH_RETRY,
    MESH_TIMEOUT,
    Dataplane,
)
from events.resources import MeshHTTPRouteRule
from projections import MeshServiceRow
from xds_gateway.resources import (
    circuit_breakers,
    http_routes,
    listeners,
    load_balancing,
    names,
    policy_rules,
    proxyless_policies,
    retries,
    timeouts,
)
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.type_urls import LISTENER
from xds_gateway.view import ProjectionView

__all__ = ["NO_POLICY", "Applying", "Destination", "applying", "cluster_inputs",
           "for_destination", "outbound", "policed_cluster"]


class Applying(Struct, frozen=True):
    """The outbound policies of each kind that apply to one proxy, merged."""

    timeouts: policy_rules.Applying
    retries: policy_rules.Applying
    circuit_breakers: policy_rules.Applying
    routes: http_routes.Applying = http_routes.NO_ROUTES
    load_balancing: policy_rules.Applying = policy_rules.NOTHING_APPLIES

    @property
    def names(self) -> tuple[tuple[str, ...], ...]:
        """What the shared part of a snapshot is keyed by (the policies are the view
        generation's)."""
        return (self.timeouts.names, self.retries.names, self.circuit_breakers.names,
                self.routes.names, self.load_balancing.names)


class Destination(Struct, frozen=True):
    """What the policies give the outbound to one destination (None: no entry about it)."""

    t: timeouts.Timeouts | None = None
    r: retries.Retries | None = None
    cb: circuit_breakers.CircuitBreakers | None = None
    """For a proxyless gRPC client, only the fields gRPC reads (`proxyless_policies`)."""
    g: proxyless_policies.GrpcRoute | None = None
    """A proxyless gRPC client's: what its route to the destination takes (the rest is
    Envoy's, None for it)."""
    h: tuple[MeshHTTPRouteRule, ...] | None = None
    """MeshHTTPRoute's merged rules (`http_routes.for_destination`); the outbound resolves
    them for its port (`http_routes.resolve`)."""
    lb: load_balancing.LoadBalancing | None = None
    """MeshLoadBalancingStrategy's merged fields: the cluster's load balancer and the
    routes' hash policies."""


NO_POLICY = Destination()
"""A destination no entry is about."""


def applying(view: ProjectionView, mesh: str, dataplane: Dataplane,
             services: Mapping[str, MeshServiceRow], *, grpc: bool) -> Applying:
    """The policies of `mesh` that apply to `dataplane` (a proxyless gRPC client's take
    what gRPC reads of them: `proxyless_policies`, `proxyless_routes`)."""
    return Applying(
        timeouts.applying(view.policies(MESH_TIMEOUT, mesh), dataplane, services),
        retries.applying(view.policies(MESH_RETRY, mesh), dataplane, services),
        circuit_breakers.applying(
            view.policies(MESH_CIRCUIT_BREAKER, mesh), dataplane, services),
        http_routes.applying(view.policies(MESH_HTTP_ROUTE, mesh), dataplane, services),
        load_balancing.applying(
            view.policies(MESH_LOAD_BALANCING_STRATEGY, mesh), dataplane, services))


def for_destination(policies: Applying, service: str | None, *, grpc: bool = False
                    ) -> Destination:
    """The outbound to MeshService `service` (None: a MeshMultiZoneService, Mesh entries
    only); for a proxyless gRPC client (`grpc`), its route's part, what of
    MeshCircuitBreaker and MeshLoadBalancingStrategy gRPC reads in its cluster
    (`proxyless_policies`) and MeshHTTPRoute's rules (`proxyless_routes` maps them)."""
    if grpc:
        lb = load_balancing.for_destination(policies.load_balancing, service)
        return Destination(
            cb=proxyless_policies.for_cluster(
                circuit_breakers.for_destination(policies.circuit_breakers, service)),
            g=proxyless_policies.for_route(
                timeouts.for_destination(policies.timeouts, service),
                retries.for_destination(policies.retries, service), lb),
            h=http_routes.for_destination(policies.routes, service),
            lb=proxyless_policies.for_load_balancing(lb))
    return Destination(timeouts.for_destination(policies.timeouts, service),
                       retries.for_destination(policies.retries, service),
                       circuit_breakers.for_destination(policies.circuit_breakers, service),
                       h=http_routes.for_destination(policies.routes, service),
                       lb=load_balancing.for_destination(policies.load_balancing, service))


def cluster_inputs(d: Destination, protocol: str) -> tuple[Hashable, ...]:
    """What of `d` the EDS cluster of a port of `protocol` takes: its cache key's part, the
    one it always had when no MeshCircuitBreaker or MeshLoadBalancingStrategy is about it."""
    ct, lb = timeouts.for_cluster(d.t, protocol), load_balancing.for_cluster(d.lb)
    return ((ct,) if d.cb is None else (ct, d.cb)) + (() if lb is None else (lb,))


def policed_cluster(cluster: Cluster, d: Destination, protocol: str) -> Cluster:
    """`cluster` with what `d` sets in it (`cluster_inputs`)."""
    return load_balancing.balanced_cluster(circuit_breakers.broken_cluster(
        timeouts.timed_cluster(cluster, timeouts.for_cluster(d.t, protocol)), d.cb),
        load_balancing.for_cluster(d.lb))


def outbound(cache: ResourceCache, address: str, port: int, cluster: str, protocol: str, *,
             bind: bool = True, d: Destination = NO_POLICY,
             routed: http_routes.Routed | None = None) -> EncodedResource:
    """The outbound listener on `address:port` to `cluster` (`listeners.outbound_listener`),
    with what `d` sets in it, and `routed`'s routes (`http_routes.resolve` of `d.h`) at L7.
    Without these its cache key is the one it always had."""
    lname, lt = names.outbound_listener(address, port), timeouts.for_listener(d.t, protocol)
    l7, lr = protocol in listeners.HTTP_PROTOCOLS, retries.for_listener(d.r, protocol)
    hp = load_balancing.for_listener(d.lb, protocol)
    routed = routed if l7 else None
    refs = {cluster} if routed is None else {cluster} | routed.clusters
    return cache.get(
        LISTENER, lname, ("outbound", address, port, cluster, bind, l7, lt)
        + (() if lr is None else (lr,)) + (() if routed is None else (routed.key,))
        + (() if hp is None else (("hash", hp),)),
        lambda: load_balancing.hashed_listener(retries.retried_listener(timeouts.timed_listener(
            http_routes.routed_listener(listeners.outbound_listener(
                lname, address, port, cluster, protocol, bind=bind, freebind=True), routed),
            lt), lr), hp),
        refs=frozenset(refs),
    )
