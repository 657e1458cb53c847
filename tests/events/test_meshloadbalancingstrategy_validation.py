"""MeshLoadBalancingStrategy documents: Kuma's universal format and rules (v2.14's
`meshloadbalancingstrategy/api/v1alpha1/validator.go` and its test's cases), every violation
with its path and value; what meshlog does not model is refused, not ignored. What every
policy kind does alike (events, round trips): tests/events/test_policy_kinds.py."""

from __future__ import annotations

from typing import Any

import pytest

from events import InvalidResource, MeshLoadBalancingStrategy, decode_resource
from events._load_balancing_rules import is_prime

_SVC = {"kind": "MeshService", "name": "svc-2"}
_ALL_TYPES = [{"type": "Header", "header": {"name": "x"}},
              {"type": "Cookie", "cookie": {"name": "c", "ttl": "1s", "path": "/"}},
              {"type": "Connection", "connection": {"sourceIP": True}},
              {"type": "SourceIP", "connection": {"sourceIP": True}},
              {"type": "QueryParameter", "queryParameter": {"name": "q"}},
              {"type": "FilterState", "filterState": {"key": "k"}}]


def _mlbs(*to: tuple[dict[str, Any], dict[str, Any]], target: dict[str, Any] | None = None
          ) -> dict[str, Any]:
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    return {"type": "MeshLoadBalancingStrategy", "mesh": "mesh-1", "name": "route-1",
            "spec": spec}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


@pytest.mark.parametrize("conf", [
    {"loadBalancer": {"type": "RoundRobin", "roundRobin": {}}},
    {"loadBalancer": {"type": "Random", "random": {}}},
    {"loadBalancer": {"type": "LeastRequest", "leastRequest": {"choiceCount": 2}}},
    {"loadBalancer": {"type": "RingHash", "ringHash": {
        "minRingSize": 1, "maxRingSize": 8_000_000, "hashFunction": "MurmurHash2",
        "hashPolicies": _ALL_TYPES}}},
    {"loadBalancer": {"type": "Maglev", "maglev": {"tableSize": 5_000_011,
                                                   "hashPolicies": _ALL_TYPES}}},
    {"hashPolicies": _ALL_TYPES, "loadBalancer": {"type": "RingHash"}},
    {},
], ids=["round-robin", "random", "least-request", "ring-hash", "maglev", "root-hash", "empty"])
def test_kumas_valid_documents_decode(conf: dict[str, Any]) -> None:
    decoded = decode_resource(_mlbs((_SVC, conf), target={"kind": "MeshService",
                                                          "name": "svc-1"}))
    assert isinstance(decoded, MeshLoadBalancingStrategy)


def test_a_hash_policy_without_its_field_names_it() -> None:  # Kuma's "ringHash error"
    policies = [{"type": t} for t in ("Header", "Cookie", "Connection", "QueryParameter",
                                      "FilterState", "SourceIP")]
    path = "spec.to[0].default.loadBalancer.ringHash.hashPolicies"
    assert _violations(_mlbs((_SVC, {"loadBalancer": {"type": "RingHash", "ringHash": {
        "hashPolicies": policies}}}))) == [
        f"{path}[0].header: must be defined (type Header)",
        f"{path}[1].cookie: must be defined (type Cookie)",
        f"{path}[2].connection: must be defined (type Connection)",
        f"{path}[3].queryParameter: must be defined (type QueryParameter)",
        f"{path}[4].filterState: must be defined (type FilterState)",
        f"{path}[5].connection: must be defined (type SourceIP)"]


def test_a_cookies_path_must_be_absolute() -> None:  # Kuma's "ringHash cookie error"
    assert _violations(_mlbs((_SVC, {"loadBalancer": {"type": "Maglev", "maglev": {
        "hashPolicies": [{"type": "Cookie", "cookie": {
            "name": "cookie-name", "ttl": "1s", "path": "relative-path"}}]}}}))) == [
        "spec.to[0].default.loadBalancer.maglev.hashPolicies[0].cookie.path: "
        "'relative-path' must be an absolute path"]


@pytest.mark.parametrize(("policy", "field", "value"), [
    ({"type": "Header", "header": {"name": "x-user\r\nx-evil"}}, "header.name",
     "x-user\r\nx-evil"),
    ({"type": "Cookie", "cookie": {"name": "s\n"}}, "cookie.name", "s\n"),
    ({"type": "Cookie", "cookie": {"name": "s", "path": "/a\0"}}, "cookie.path", "/a\0"),
])
def test_a_header_or_cookie_with_nul_cr_or_lf_is_refused(
        policy: dict[str, Any], field: str, value: str) -> None:
    """Envoy refuses a hash policy's header name with one of these (the whole listener's
    routes), and would write the cookie's name and path into a set-cookie header."""
    assert _violations(_mlbs((_SVC, {"hashPolicies": [policy]}))) == [
        f"spec.to[0].default.hashPolicies[0].{field}: {value!r} must not contain NUL, CR or "
        "LF (Envoy refuses them in a header)"]


def test_hash_policies_in_the_root_and_the_load_balancer_are_refused() -> None:
    cookie = [{"type": "Cookie", "cookie": {"name": "session_id"}}]
    assert _violations(_mlbs((_SVC, {
        "hashPolicies": [{"type": "Header", "header": {"name": "x-header-name"}}],
        "loadBalancer": {"type": "Maglev", "maglev": {"hashPolicies": cookie},
                         "ringHash": {"hashPolicies": cookie}}}))) == [
        "spec.to[0].default.loadBalancer.ringHash.hashPolicies: hashPolicies already "
        "specified in the root level (default.hashPolicies)",
        "spec.to[0].default.loadBalancer.maglev.hashPolicies: hashPolicies already "
        "specified in the root level (default.hashPolicies)"]


def test_enum_values_and_bounds_name_field_and_value() -> None:
    assert _violations(_mlbs((_SVC, {"loadBalancer": {
        "type": "Fastest",
        "leastRequest": {"choiceCount": 1},
        "ringHash": {"hashFunction": "MD5", "minRingSize": 0, "maxRingSize": 8_000_001},
        "maglev": {"tableSize": 65536}}}),
        (_SVC, {"hashPolicies": [{"type": "Body"}, {"type": "Header", "header": {"name": ""}},
                                 {"type": "Cookie", "cookie": {"name": "c", "ttl": "soon"}}]}),
        (_SVC, {"loadBalancer": {"type": "RingHash", "ringHash": {
            "minRingSize": 2048, "maxRingSize": 1024}}}))) == [
        "spec.to[0].default.loadBalancer.type: 'Fastest' is not one of RoundRobin, "
        "LeastRequest, RingHash, Random, Maglev",
        "spec.to[0].default.loadBalancer.leastRequest.choiceCount: 1 must be at least 2",
        "spec.to[0].default.loadBalancer.ringHash.hashFunction: 'MD5' is not one of XXHash, "
        "MurmurHash2",
        "spec.to[0].default.loadBalancer.ringHash.minRingSize: 0 must be between 1 and "
        "8000000",
        "spec.to[0].default.loadBalancer.ringHash.maxRingSize: 8000001 must be between 1 and "
        "8000000",
        "spec.to[0].default.loadBalancer.maglev.tableSize: 65536 must be a prime between 1 "
        "and 5000011 (Envoy's Maglev)",
        "spec.to[1].default.hashPolicies[0].type: 'Body' is not one of Header, Cookie, "
        "Connection, SourceIP, QueryParameter, FilterState",
        "spec.to[1].default.hashPolicies[1].header.name: '' must not be empty",
        "spec.to[1].default.hashPolicies[2].cookie.ttl: 'soon' is not a duration (Go's "
        "format: a number and a unit of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)",
        "spec.to[2].default.loadBalancer.ringHash.minRingSize: 2048 must not be above "
        "maxRingSize (1024)"]


def test_what_meshlog_does_not_model_is_refused() -> None:
    violations = _violations(_mlbs(
        (_SVC, {"localityAwareness": {"disabled": True}}),
        (_SVC, {"loadBalancer": {"type": "LeastRequest",
                                 "leastRequest": {"activeRequestBias": "1.5"}}}),
        ({"kind": "MeshHTTPRoute", "name": "r"}, {"hashPolicies": []}),
        ({"kind": "MeshMultiZoneService", "name": "m"}, {})))
    assert violations[:2] == [
        "spec.to[0].default.localityAwareness: unknown field",
        "spec.to[1].default.loadBalancer.leastRequest.activeRequestBias: unknown field"]
    assert violations[2].startswith("spec.to[2].targetRef.kind: 'MeshHTTPRoute' is not one of")
    assert violations[3].startswith(
        "spec.to[3].targetRef.kind: 'MeshMultiZoneService' is not one of")


def test_a_top_level_target_ref_of_another_kind_is_refused() -> None:
    assert _violations(_mlbs((_SVC, {}), target={"kind": "MeshGateway", "name": "gw"}))[0] \
        .startswith("spec.targetRef.kind: 'MeshGateway' is not one of")


def test_primes() -> None:
    assert [n for n in range(20) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19]
    assert is_prime(65537) and is_prime(5_000_011) and not is_prime(65536)
