"""MeshLoadBalancingStrategy's rules (`events.policy_kinds` declares them; `events.validation`'s
helpers are shared), after Kuma v2.14's `meshloadbalancingstrategy/api/v1alpha1/validator.go`
and its CRD schema's bounds: targetRefs as MeshTimeout's (`to[]` Mesh or MeshService; Kuma's
MeshMultiZoneService and MeshHTTPRoute entries are not supported yet); `loadBalancer.type`
and `hashPolicies[].type` from Kuma's enums; a hash policy has the field of its type
(`connection` for `Connection` and `SourceIP`), a cookie's path is absolute; hash policies in
`default.hashPolicies` or in the load balancer's, not both; `choiceCount` at least 2; ring
sizes 1 to 8,000,000; `tableSize` 1 to 5,000,011.

Stricter than Kuma's, where Envoy would refuse the cluster: `minRingSize` not above
`maxRingSize`, and `tableSize` a prime (Envoy's Maglev); a header, cookie, query parameter
name or filter state key not empty (Kuma's CRD's `minLength`); a header name, cookie name or
cookie path without NUL, CR or LF (Envoy refuses such a header name, and would write the
cookie's into a `set-cookie` header); a cookie's `ttl` a Go
duration, not negative."""

from __future__ import annotations

from events.errors import Violation
from events.resources import (
    HashPolicy,
    LoadBalancer,
    MeshLoadBalancingStrategy,
    MeshLoadBalancingStrategyConf,
)
from events.validation import _TO_KINDS, _TOP_KINDS, _go_duration, _target_ref

__all__ = ["HASH_POLICY_TYPES", "LOAD_BALANCER_TYPES", "mesh_load_balancing_strategy"]

LOAD_BALANCER_TYPES = ("RoundRobin", "LeastRequest", "RingHash", "Random", "Maglev")
HASH_POLICY_TYPES = ("Header", "Cookie", "Connection", "SourceIP", "QueryParameter",
                     "FilterState")
_HASH_FUNCTIONS = ("XXHash", "MurmurHash2")
_MAX_RING = 8_000_000
_MAX_TABLE = 5_000_011
_NUL_CR_LF = "\0\r\n"
_FIELD_OF = {"Header": "header", "Cookie": "cookie", "Connection": "connection",
             "SourceIP": "connection", "QueryParameter": "queryParameter",
             "FilterState": "filterState"}


def mesh_load_balancing_strategy(mlbs: MeshLoadBalancingStrategy, out: list[Violation]
                                 ) -> None:
    _target_ref(mlbs.spec.target_ref, "spec.targetRef", _TOP_KINDS, out)
    for i, to in enumerate(mlbs.spec.to):
        path = f"spec.to[{i}]"
        _target_ref(to.target_ref, f"{path}.targetRef", _TO_KINDS, out)
        _conf(to.default, f"{path}.default", out)


def is_prime(n: int) -> bool:
    if n < 2:
        return False
    if n % 2 == 0:
        return n == 2
    f = 3
    while f * f <= n:
        if n % f == 0:
            return False
        f += 2
    return True


def _conf(conf: MeshLoadBalancingStrategyConf, path: str, out: list[Violation]) -> None:
    if conf.load_balancer is not None:
        _load_balancer(conf.load_balancer, f"{path}.loadBalancer", out,
                       root_hash_policies=conf.hash_policies is not None)
    _hash_policies(conf.hash_policies, f"{path}.hashPolicies", out)


def _load_balancer(lb: LoadBalancer, path: str, out: list[Violation], *,
                   root_hash_policies: bool) -> None:
    if lb.type not in LOAD_BALANCER_TYPES:
        out.append(Violation(f"{path}.type", f"{lb.type!r} is not one of "
                             f"{', '.join(LOAD_BALANCER_TYPES)}"))
    if (lr := lb.least_request) is not None and lr.choice_count is not None and not (
            2 <= lr.choice_count <= 2**32 - 1):
        out.append(Violation(f"{path}.leastRequest.choiceCount",
                             f"{lr.choice_count} must be at least 2"))
    if (rh := lb.ring_hash) is not None:
        where = f"{path}.ringHash"
        if rh.hash_function is not None and rh.hash_function not in _HASH_FUNCTIONS:
            out.append(Violation(f"{where}.hashFunction", f"{rh.hash_function!r} is not one "
                                 f"of {', '.join(_HASH_FUNCTIONS)}"))
        for name, size in (("minRingSize", rh.min_ring_size), ("maxRingSize", rh.max_ring_size)):
            if size is not None and not 1 <= size <= _MAX_RING:
                out.append(Violation(f"{where}.{name}", f"{size} must be between 1 and "
                                     f"{_MAX_RING}"))
        if (rh.min_ring_size is not None and rh.max_ring_size is not None
                and rh.min_ring_size > rh.max_ring_size):
            out.append(Violation(f"{where}.minRingSize", f"{rh.min_ring_size} must not be "
                                 f"above maxRingSize ({rh.max_ring_size})"))
        _hash_policies(rh.hash_policies, f"{where}.hashPolicies", out,
                       root=root_hash_policies)
    if (mg := lb.maglev) is not None:
        where = f"{path}.maglev"
        size = mg.table_size
        if size is not None and not (1 <= size <= _MAX_TABLE and is_prime(size)):
            out.append(Violation(f"{where}.tableSize", f"{size} must be a prime between 1 "
                                 f"and {_MAX_TABLE} (Envoy's Maglev)"))
        _hash_policies(mg.hash_policies, f"{where}.hashPolicies", out,
                       root=root_hash_policies)


def _hash_policies(policies: list[HashPolicy] | None, path: str, out: list[Violation], *,
                   root: bool = False) -> None:
    if policies is None:
        return
    if root:
        out.append(Violation(path, "hashPolicies already specified in the root level "
                             "(default.hashPolicies)"))
    for i, policy in enumerate(policies):
        _hash_policy(policy, f"{path}[{i}]", out)


def _hash_policy(policy: HashPolicy, path: str, out: list[Violation]) -> None:
    field = _FIELD_OF.get(policy.type)
    if field is None:
        out.append(Violation(f"{path}.type", f"{policy.type!r} is not one of "
                             f"{', '.join(HASH_POLICY_TYPES)}"))
        return
    given = {"header": policy.header, "cookie": policy.cookie,
             "connection": policy.connection, "queryParameter": policy.query_parameter,
             "filterState": policy.filter_state}
    if given[field] is None:
        out.append(Violation(f"{path}.{field}", f"must be defined (type {policy.type})"))
        return
    for name, value in (("header.name", policy.header and policy.header.name),
                        ("cookie.name", policy.cookie and policy.cookie.name),
                        ("queryParameter.name",
                         policy.query_parameter and policy.query_parameter.name),
                        ("filterState.key", policy.filter_state and policy.filter_state.key)):
        if value == "":
            out.append(Violation(f"{path}.{name}", "'' must not be empty"))
    for name, value in (("header.name", policy.header and policy.header.name),
                        ("cookie.name", policy.cookie and policy.cookie.name),
                        ("cookie.path", policy.cookie and policy.cookie.path)):
        if value and any(c in value for c in _NUL_CR_LF):
            out.append(Violation(f"{path}.{name}", f"{value!r} must not contain NUL, CR or "
                                 "LF (Envoy refuses them in a header)"))
    if (cookie := policy.cookie) is not None:
        if cookie.path is not None and not cookie.path.startswith("/"):
            out.append(Violation(f"{path}.cookie.path", f"{cookie.path!r} must be an "
                                 "absolute path"))
        _go_duration(cookie.ttl, f"{path}.cookie.ttl", out)
