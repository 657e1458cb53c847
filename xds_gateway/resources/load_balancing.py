"""MeshLoadBalancingStrategy to Envoy: the load balancer of the clusters of a proxy's outbounds
and the hash policies of their routes.

Which MeshLoadBalancingStrategies apply to a proxy, the order of their `to[]` entries and how
they merge per destination are MeshTimeout's rules 1-3 (`timeouts.py`, shared code in
`policy_rules.py`): the more specific policy wins, then a MeshService entry over a Mesh
entry, then the alphabetically first name. Each field merges on its own, as Kuma's JSON merge
patch of the entries' `default`s: `loadBalancer.type`, `leastRequest.choiceCount`, each
`ringHash` field, `maglev.tableSize`; a list of hash policies is replaced whole by a later
entry's. A MeshMultiZoneService outbound takes the Mesh entries only. No
MeshLoadBalancingStrategy, or no entry about a destination: its cluster and listener are
exactly what they are without it (Envoy's round robin).

What the merged fields set (Kuma v2.14's `meshloadbalancingstrategy/plugin/v1alpha1`
`loadBalancerConfigurer`, `routeConfigurer`), whatever the port's protocol for the cluster:

| field (under `default`)                | Envoy                                             |
|----------------------------------------|---------------------------------------------------|
| `loadBalancer.type`                    | the cluster's `lb_policy` (ROUND_ROBIN,           |
|                                        | LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)         |
| `loadBalancer.leastRequest.choiceCount`| `least_request_lb_config.choice_count`            |
| `loadBalancer.ringHash.minRingSize`    | `ring_hash_lb_config.minimum_ring_size`           |
| `loadBalancer.ringHash.maxRingSize`    | `ring_hash_lb_config.maximum_ring_size`           |
| `loadBalancer.ringHash.hashFunction`   | `ring_hash_lb_config.hash_function` (XX_HASH,     |
|                                        | MURMUR_HASH_2)                                    |
| `loadBalancer.maglev.tableSize`        | `maglev_lb_config.table_size`                     |
| `hashPolicies` (else the ringHash's or | `hash_policy` of every route of the outbound      |
| maglev's of the merged type)           | listener (HTTP, HTTP/2, gRPC ports)               |

The settings of a type other than the merged `type` are not used (Kuma's switch on the type).
Where the merged `minRingSize` (else Envoy's default, 1024) is above the merged `maxRingSize`
(one entry's `maxRingSize: 512` alone, or a Mesh entry's `minRingSize` above a MeshService
entry's `maxRingSize`), Envoy would refuse the cluster (Kuma sends it so): the minimum is set
to the maximum.
A hash policy: `Header` -> `header.header_name`, `Cookie` -> `cookie` (`name`, `ttl`,
`path`), `Connection` and `SourceIP` -> `connection_properties.source_ip` (Kuma 2.14 sets no
specifier for `SourceIP`, which Envoy refuses; meshlog maps it as `Connection`),
`QueryParameter` -> `query_parameter.name`, `FilterState` -> `filter_state.key`;
`terminal` as given.

**Not applied.** A TCP (or other L4) port's outbound has no routes: its hash policies do
nothing there (as in Kuma, whose tcp_proxy gets no `hash_policy`), so RingHash and Maglev pick
an endpoint by a random hash per connection. Proxyless gRPC clients get RingHash only,
as far as gRPC's xDS client reads it (`proxyless_policies.for_load_balancing`, gRFC A42).
`localityAwareness` is refused (no locality
model beyond zones), as `leastRequest.activeRequestBias` is.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import RouteAction
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from msgspec import Struct, structs

from events import MeshLoadBalancingStrategy
from events.resources import HashPolicy, MeshLoadBalancingStrategyConf
from xds_gateway.resources import policy_rules
from xds_gateway.resources.listeners import HTTP_PROTOCOLS, edit_filters, forwarding_routes

__all__ = ["NO_LOAD_BALANCING", "Applying", "LoadBalancing", "applying", "balanced_cluster",
           "for_cluster", "for_destination", "for_listener", "hash_policy", "hashed_listener",
           "merged"]

_LB_POLICY = {"RoundRobin": Cluster.ROUND_ROBIN, "LeastRequest": Cluster.LEAST_REQUEST,
              "Random": Cluster.RANDOM, "RingHash": Cluster.RING_HASH, "Maglev": Cluster.MAGLEV}
_MIN_RING, _MAX_RING = 1024, 8_388_608  # Envoy's ring_hash_lb_config defaults
_HASH_FUNCTION = {"XXHash": Cluster.RingHashLbConfig.XX_HASH,
                  "MurmurHash2": Cluster.RingHashLbConfig.MURMUR_HASH_2}


class LoadBalancing(Struct, frozen=True, kw_only=True):
    """The merged MeshLoadBalancingStrategy of one outbound; None: not set by any entry.
    Hashable: part of the cache keys of the cluster and the listener it changes."""

    type: str | None = None
    choice_count: int | None = None
    hash_function: str | None = None
    min_ring_size: int | None = None
    max_ring_size: int | None = None
    ring_hash_policies: tuple[HashPolicy, ...] | None = None
    table_size: int | None = None
    maglev_hash_policies: tuple[HashPolicy, ...] | None = None
    hash_policies: tuple[HashPolicy, ...] | None = None
    """`default.hashPolicies`: before the load balancer's (Kuma's `getHashPolicies`)."""

    @property
    def route_hash_policies(self) -> tuple[HashPolicy, ...] | None:
        if self.hash_policies is not None:
            return self.hash_policies
        if self.type == "RingHash":
            return self.ring_hash_policies
        if self.type == "Maglev":
            return self.maglev_hash_policies
        return None

    @property
    def sets_cluster(self) -> bool:
        return self.type in _LB_POLICY


Applying = policy_rules.Applying
NO_LOAD_BALANCING = policy_rules.NOTHING_APPLIES


def for_destination(policies: Applying, service: str | None) -> LoadBalancing | None:
    """The merged MeshLoadBalancingStrategy of the outbound to MeshService `service` (None: a
    MeshMultiZoneService, Mesh entries only); None when no entry is about it."""
    return policies.for_destination(service, LoadBalancing)


def for_cluster(lb: LoadBalancing | None) -> LoadBalancing | None:
    """What of `lb` an outbound's cluster takes (its hash policies are the routes'): None
    when it sets no load balancer, so the cluster keeps its key and bytes."""
    if lb is None or not lb.sets_cluster:
        return None
    return structs.replace(lb, ring_hash_policies=None, maglev_hash_policies=None,
                           hash_policies=None)


def for_listener(lb: LoadBalancing | None, protocol: str) -> tuple[HashPolicy, ...] | None:
    """The hash policies the routes of an outbound listener of `protocol` take; None for an
    L4 port (no routes) or none given."""
    if lb is None or protocol not in HTTP_PROTOCOLS:
        return None
    return lb.route_hash_policies or None


def balanced_cluster(cluster: Cluster, lb: LoadBalancing | None) -> Cluster:
    """`cluster` (an outbound's) with the load balancer of `lb` (`for_cluster`'s)."""
    if lb is None or lb.type not in _LB_POLICY:
        return cluster
    cluster.lb_policy = _LB_POLICY[lb.type]
    match lb.type:
        case "LeastRequest" if lb.choice_count is not None:
            cluster.least_request_lb_config.choice_count.value = lb.choice_count
        case "RingHash":
            fields = (lb.min_ring_size, lb.max_ring_size, lb.hash_function)
            if any(f is not None for f in fields):
                ring = cluster.ring_hash_lb_config
                if lb.min_ring_size is not None:
                    ring.minimum_ring_size.value = lb.min_ring_size
                if lb.max_ring_size is not None:
                    ring.maximum_ring_size.value = lb.max_ring_size
                if (lb.min_ring_size or _MIN_RING) > (lb.max_ring_size or _MAX_RING):
                    # Envoy refuses min > max (its default min is 1024): the max bounds both
                    ring.minimum_ring_size.value = ring.maximum_ring_size.value
                if lb.hash_function is not None:
                    ring.hash_function = _HASH_FUNCTION[lb.hash_function]
        case "Maglev" if lb.table_size is not None:
            cluster.maglev_lb_config.table_size.value = lb.table_size
        case _:
            pass
    return cluster


def hashed_listener(listener: Listener, policies: tuple[HashPolicy, ...] | None) -> Listener:
    """`listener` (an outbound's) with `policies` (`for_listener`'s) as the `hash_policy` of
    every route of its HttpConnectionManager that routes to clusters."""
    if not policies:
        return listener
    built = [hash_policy(p) for p in policies]

    def hashed_hcm(hcm: HttpConnectionManager) -> None:
        for action in forwarding_routes(hcm):
            action.hash_policy.extend(built)

    return edit_filters(listener, hcm=hashed_hcm)


def hash_policy(policy: HashPolicy) -> RouteAction.HashPolicy:
    """The route `hash_policy` of one of MeshLoadBalancingStrategy's hash policies."""
    out = RouteAction.HashPolicy()
    if policy.terminal is not None:
        out.terminal = policy.terminal
    match policy.type:
        case "Header" if policy.header is not None:
            out.header.header_name = policy.header.name
        case "Cookie" if policy.cookie is not None:
            out.cookie.name = policy.cookie.name
            if policy.cookie.path is not None:
                out.cookie.path = policy.cookie.path
            ttl = policy_rules.non_negative_ns(policy.cookie.ttl)
            if ttl is not None:
                out.cookie.ttl.CopyFrom(policy_rules.proto_duration(ttl))
        case "Connection" | "SourceIP" if policy.connection is not None:
            out.connection_properties.source_ip = bool(policy.connection.source_ip)
        case "QueryParameter" if policy.query_parameter is not None:
            out.query_parameter.name = policy.query_parameter.name
        case "FilterState" if policy.filter_state is not None:
            out.filter_state.key = policy.filter_state.key
        case _:  # validation refused it
            pass
    return out


def _policies(policies: list[HashPolicy] | None) -> tuple[HashPolicy, ...] | None:
    return None if policies is None else tuple(policies)


def _fields(conf: MeshLoadBalancingStrategyConf) -> dict[str, Any]:
    out: dict[str, Any] = {"hash_policies": _policies(conf.hash_policies)}
    if (lb := conf.load_balancer) is not None:
        out["type"] = lb.type
        if lb.least_request is not None:
            out["choice_count"] = lb.least_request.choice_count
        if (rh := lb.ring_hash) is not None:
            out.update(hash_function=rh.hash_function, min_ring_size=rh.min_ring_size,
                       max_ring_size=rh.max_ring_size,
                       ring_hash_policies=_policies(rh.hash_policies))
        if (mg := lb.maglev) is not None:
            out.update(table_size=mg.table_size,
                       maglev_hash_policies=_policies(mg.hash_policies))
    return {name: value for name, value in out.items() if value is not None}


_MERGE: policy_rules.Merge[MeshLoadBalancingStrategy] = policy_rules.Merge(_fields)
applying = _MERGE.applying
"""The MeshLoadBalancingStrategies (rows of the Dataplane's mesh) that apply to `dataplane`
(as MeshTimeout's rules 1, 2)."""
merged = _MERGE.merged
"""Kuma's order over the MeshLoadBalancingStrategies given, as per-field last values."""
