"""MeshLoadBalancingStrategy (Kuma 2.x, `pkg/plugins/policies/meshloadbalancingstrategy`,
v2.14's API): the load balancer of the clusters of the selected proxies' outbounds, and the
hash policies of their routes.

Not modelled, and refused by the API as unknown fields (`events.decoding`), so a policy that
relies on one is never applied without it: `localityAwareness` (meshlog has no locality model
beyond zones: no endpoint priorities, no affinity tags, no cross-zone failover) and
`leastRequest.activeRequestBias` (docs/status.md). The enum-like fields are plain strings, so
an event naming a value a later release adds still decodes; which values they take is a rule
(`events._load_balancing_rules`)."""

from __future__ import annotations

from msgspec import field

from events.resources._base import MeshScopedResource, _Base
from events.resources._policies import TargetRef

__all__ = [
    "HashPolicy",
    "HashPolicyConnection",
    "HashPolicyCookie",
    "HashPolicyFilterState",
    "HashPolicyHeader",
    "HashPolicyQueryParameter",
    "LoadBalancer",
    "LoadBalancerLeastRequest",
    "LoadBalancerMaglev",
    "LoadBalancerRandom",
    "LoadBalancerRingHash",
    "LoadBalancerRoundRobin",
    "MeshLoadBalancingStrategy",
    "MeshLoadBalancingStrategyConf",
    "MeshLoadBalancingStrategySpec",
    "MeshLoadBalancingStrategyTo",
]


class HashPolicyHeader(_Base, frozen=True):
    name: str


class HashPolicyCookie(_Base, frozen=True):
    name: str
    ttl: str | None = None
    """Go duration: with it, Envoy makes the cookie when the request has none."""
    path: str | None = None


class HashPolicyConnection(_Base, frozen=True):
    source_ip: bool | None = field(default=None, name="sourceIP")


class HashPolicyQueryParameter(_Base, frozen=True):
    name: str


class HashPolicyFilterState(_Base, frozen=True):
    key: str


class HashPolicy(_Base, frozen=True):
    """One of Envoy's route `hash_policy` entries."""

    type: str
    """Header, Cookie, Connection, SourceIP (Kuma's older name of Connection), QueryParameter
    or FilterState."""
    terminal: bool | None = None
    header: HashPolicyHeader | None = None
    cookie: HashPolicyCookie | None = None
    connection: HashPolicyConnection | None = None
    query_parameter: HashPolicyQueryParameter | None = None
    filter_state: HashPolicyFilterState | None = None


class LoadBalancerRoundRobin(_Base, frozen=True):
    """No fields (Kuma's `roundRobin: {}`)."""


class LoadBalancerRandom(_Base, frozen=True):
    """No fields (Kuma's `random: {}`)."""


class LoadBalancerLeastRequest(_Base, frozen=True):
    choice_count: int | None = None
    """At least 2; Envoy's default 2."""


class LoadBalancerRingHash(_Base, frozen=True):
    hash_function: str | None = None
    """XXHash (Envoy's default) or MurmurHash2."""
    min_ring_size: int | None = None
    max_ring_size: int | None = None
    hash_policies: list[HashPolicy] | None = None
    """Kuma 2.14 deprecates it for `default.hashPolicies`; either, not both."""


class LoadBalancerMaglev(_Base, frozen=True):
    table_size: int | None = None
    """A prime, Envoy's default 65537."""
    hash_policies: list[HashPolicy] | None = None


class LoadBalancer(_Base, frozen=True):
    type: str
    """RoundRobin, LeastRequest, RingHash, Random or Maglev."""
    round_robin: LoadBalancerRoundRobin | None = None
    least_request: LoadBalancerLeastRequest | None = None
    ring_hash: LoadBalancerRingHash | None = None
    random: LoadBalancerRandom | None = None
    maglev: LoadBalancerMaglev | None = None


class MeshLoadBalancingStrategyConf(_Base, frozen=True):
    load_balancer: LoadBalancer | None = None
    hash_policies: list[HashPolicy] | None = None


class MeshLoadBalancingStrategyTo(_Base, frozen=True):
    target_ref: TargetRef
    """The destinations this entry is about: Mesh (all) or MeshService `name`."""
    default: MeshLoadBalancingStrategyConf


class MeshLoadBalancingStrategySpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose outbounds it sets: Mesh (default), MeshSubset, MeshService or
    Dataplane."""
    to: list[MeshLoadBalancingStrategyTo] = []


class MeshLoadBalancingStrategy(MeshScopedResource, frozen=True, kw_only=True,
                                tag="MeshLoadBalancingStrategy"):
    """The load balancer of the selected proxies' outbound clusters and the hash policies of
    their routes. Semantics: `xds_gateway.resources.load_balancing`."""

    spec: MeshLoadBalancingStrategySpec
