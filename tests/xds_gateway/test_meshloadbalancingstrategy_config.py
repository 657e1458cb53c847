"""What MeshLoadBalancingStrategies do to a proxy's outbounds
(xds_gateway.resources.load_balancing): Kuma's load balancer on the outbound clusters they
are about, hash policies on the routes of L7 outbounds, merged field by field, nothing else
changed. The full config of one case: testdata/meshloadbalancingstrategy.*; a real Envoy
hashing on a header: tests/integration/test_meshloadbalancingstrategy.py; what every
outbound policy kind does alike: test_outbound_policy_config.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import MESH_LOAD_BALANCING_STRATEGY
from tests._policy_samples import resource
from tests.harness import envoy_binary
from tests.xds_gateway._bootstrap import static_bootstrap
from tests.xds_gateway._outbound import apply, dataplane, view_of
from tests.xds_gateway._routes import failing as _failing
from tests.xds_gateway._routes import routes as _routes
from tests.xds_gateway._routes import view as _route_view
from tests.xds_gateway._routes import where as _where
from tests.xds_gateway.test_golden_config import compute
from xds_gateway.resources import load_balancing
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import ProxyNode
from xds_gateway.view import ProjectionView

_BACKEND = {"kind": "MeshService", "name": "backend"}
_MESH = {"kind": "Mesh"}
_HEADER = {"type": "Header", "header": {"name": "x-user"}}
_BACKEND_CLUSTER, _DB_CLUSTER = "default_backend___msvc_8080", "default_db___msvc_5432"
_LB_FIELDS = ("lbPolicy", "leastRequestLbConfig", "ringHashLbConfig", "maglevLbConfig")


def _view() -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   dataplane("web-1", "10.0.0.9", 7070, "web"))


def _mlbs(name: str, *to: tuple[dict[str, Any], dict[str, Any]],
          target: dict[str, Any] | None = None) -> Any:
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    return resource(MESH_LOAD_BALANCING_STRATEGY, name, spec=spec)


def _clusters(config: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["resource"] for c in config["clusters"]}


def _lb(cluster: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cluster.items() if k in _LB_FIELDS}


def _hash_policies(config: dict[str, list[dict[str, Any]]], port: int) -> list[Any]:
    """The hash policies of every route of the outbound listener on `port`."""
    out: list[Any] = []
    for listener in config["listeners"]:
        res = listener["resource"]
        if res["address"]["socketAddress"].get("portValue") != port or ("trafficDirection" in res \
                and res["trafficDirection"] == "INBOUND"):
            continue
        for chain in res["filterChains"]:
            for f in chain["filters"]:
                for host in f["typedConfig"].get("routeConfig", {}).get("virtualHosts", []):
                    out.extend(r["route"].get("hashPolicy") for r in host["routes"])
    return out


@pytest.mark.parametrize(("conf", "expected"), [
    ({"type": "RoundRobin"}, {}),  # Envoy's default, ROUND_ROBIN, is left out of the JSON
    ({"type": "Random"}, {"lbPolicy": "RANDOM"}),
    ({"type": "LeastRequest"}, {"lbPolicy": "LEAST_REQUEST"}),
    ({"type": "LeastRequest", "leastRequest": {"choiceCount": 5}},
     {"lbPolicy": "LEAST_REQUEST", "leastRequestLbConfig": {"choiceCount": 5}}),
    ({"type": "RingHash"}, {"lbPolicy": "RING_HASH"}),
    ({"type": "RingHash", "ringHash": {"minRingSize": 8, "hashFunction": "XXHash"}},
     {"lbPolicy": "RING_HASH", "ringHashLbConfig": {"minimumRingSize": "8"}}),
    ({"type": "Maglev", "maglev": {"tableSize": 7}},
     {"lbPolicy": "MAGLEV", "maglevLbConfig": {"tableSize": "7"}}),
], ids=lambda v: json.dumps(v, sort_keys=True) if isinstance(v, dict) else str(v))
def test_each_load_balancer_type_sets_its_lb_policy_and_config(
        conf: dict[str, Any], expected: dict[str, Any]) -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _mlbs("all", (_MESH, {"loadBalancer": conf})))

    config = config_json(view, "default", "web-1", ResourceCache())

    clusters, old = _clusters(config), _clusters(before)
    for name in (_BACKEND_CLUSTER, _DB_CLUSTER):  # L7 and L4
        assert _lb(clusters[name]) == expected
        assert {k: v for k, v in clusters[name].items() if k not in _LB_FIELDS} == old[name]
    assert _lb(clusters["localhost:7070"]) == {}  # the inbound's: untouched
    assert config["listeners"] == before["listeners"]  # no hash policies given


def test_hash_policies_go_on_the_l7_outbounds_routes_and_change_no_cluster() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _mlbs("all", (_MESH, {"hashPolicies": [_HEADER]})))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert config["clusters"] == before["clusters"]
    assert _hash_policies(config, 8080) == [[{"header": {"headerName": "x-user"}}]]
    # db's L4 outbound has no routes: its listener is as it was
    db = [lis for lis in config["listeners"] if lis["name"].endswith(":5432")]
    assert db and db == [lis for lis in before["listeners"] if lis["name"].endswith(":5432")]


def test_the_merged_types_hash_policies_are_used_and_the_root_ones_first() -> None:
    ring = {"type": "RingHash", "ringHash": {"hashPolicies": [_HEADER]}}
    maglev = {"type": "Maglev", "maglev": {"hashPolicies": [
        {"type": "QueryParameter", "queryParameter": {"name": "u"}}]}}

    def policies(*confs: dict[str, Any]) -> Any:
        merged = load_balancing.merged([_mlbs("p", *((_MESH, c) for c in confs))])
        return load_balancing.for_listener(load_balancing.for_destination(merged, "x"), "http")

    assert [p.type for p in policies({"loadBalancer": ring})] == ["Header"]
    # a later entry's type wins; its own policies, not the earlier type's
    assert [p.type for p in policies({"loadBalancer": ring}, {"loadBalancer": maglev})] == [
        "QueryParameter"]
    assert policies({"loadBalancer": {**ring, "type": "Random"}}) is None
    # the cluster's part leaves the hash policies out: one cluster build for both
    ring_only = load_balancing.for_destination(load_balancing.merged([_mlbs(
        "p", (_MESH, {"loadBalancer": {"type": "RingHash"}}))]), "x")
    hashed = load_balancing.for_destination(load_balancing.merged([_mlbs(
        "p", (_MESH, {"loadBalancer": ring}))]), "x")
    assert load_balancing.for_cluster(ring_only) == load_balancing.for_cluster(hashed)
    root = {"hashPolicies": [{"type": "Cookie", "cookie": {"name": "s"}}]}
    assert [p.type for p in policies({"loadBalancer": ring}, root)] == ["Cookie"]
    assert load_balancing.for_listener(load_balancing.for_destination(
        load_balancing.merged([_mlbs("p", (_MESH, {"loadBalancer": ring}))]), "x"), "tcp") is None


def test_a_meshservice_entry_wins_field_by_field() -> None:
    view, projection = _view()
    apply(view, projection,
          _mlbs("mesh-wide", (_MESH, {"loadBalancer": {"type": "RingHash", "ringHash": {
              "minRingSize": 16, "maxRingSize": 4096}}})),
          _mlbs("to-backend", (_BACKEND, {"loadBalancer": {"type": "RingHash", "ringHash": {
              "maxRingSize": 2048, "hashFunction": "MurmurHash2"}}}),
                target={"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}}))

    clusters = _clusters(config_json(view, "default", "web-1", ResourceCache()))

    assert _lb(clusters[_BACKEND_CLUSTER]) == {"lbPolicy": "RING_HASH", "ringHashLbConfig": {
        "minimumRingSize": "16", "maximumRingSize": "2048", "hashFunction": "MURMUR_HASH_2"}}
    assert _lb(clusters[_DB_CLUSTER]) == {"lbPolicy": "RING_HASH", "ringHashLbConfig": {
        "minimumRingSize": "16", "maximumRingSize": "4096"}}


def test_a_proxyless_grpc_client_gets_nothing_of_a_type_grpc_lacks() -> None:
    # what it gets of RingHash: test_proxyless_load_balancing_config.py
    view, projection = _view()
    node = ProxyNode(user_agent_name="gRPC C-core")
    before = config_json(view, "default", "web-1", ResourceCache(), node=node)
    apply(view, projection, _mlbs("all", (_MESH, {
        "loadBalancer": {"type": "Maglev"}, "hashPolicies": [_HEADER]})))

    assert config_json(view, "default", "web-1", ResourceCache(), node=node) == before


def test_a_multizone_service_takes_the_mesh_entries_only() -> None:
    policy = _mlbs("a", (_MESH, {"loadBalancer": {"type": "Random"}}),
                   ({"kind": "MeshService", "name": "redis"},
                    {"loadBalancer": {"type": "Maglev"}}))

    merged = load_balancing.merged([policy])
    assert load_balancing.for_destination(merged, None) == load_balancing.LoadBalancing(
        type="Random")
    assert load_balancing.for_destination(merged, "redis") == load_balancing.LoadBalancing(
        type="Maglev")
    assert load_balancing.for_destination(load_balancing.merged([]), "redis") is None


@pytest.mark.integration
def test_envoy_validates_the_golden_case(tmp_path: Path) -> None:
    """Every field a MeshLoadBalancingStrategy sets (testdata/meshloadbalancingstrategy:
    Maglev's table, the ring's sizes and hash function, every kind of hash policy) is one
    Envoy accepts."""
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(compute("meshloadbalancingstrategy"))))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.parametrize(("policies", "ring"), [
    # one entry's maxRingSize below Envoy's default minimum (1024)
    ([_mlbs("all", (_MESH, {"loadBalancer": {"type": "RingHash",
                                             "ringHash": {"maxRingSize": 512}}}))],
     {"minimumRingSize": "512", "maximumRingSize": "512"}),
    # each entry valid on its own, their merge min > max
    ([_mlbs("mesh-wide", (_MESH, {"loadBalancer": {"type": "RingHash",
                                                   "ringHash": {"minRingSize": 4096}}})),
      _mlbs("to-backend", (_BACKEND, {"loadBalancer": {"ringHash": {"maxRingSize": 2048},
                                                       "type": "RingHash"}}))],
     {"minimumRingSize": "2048", "maximumRingSize": "2048"}),
], ids=["max-below-default-min", "merged-min-above-max"])
def test_a_ring_whose_minimum_would_pass_its_maximum_is_one_envoy_accepts(
        tmp_path: Path, policies: list[Any], ring: dict[str, str]) -> None:
    view, projection = _view()
    apply(view, projection, *policies)
    config = config_json(view, "default", "web-1", ResourceCache())
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(config)))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert _clusters(config)[_BACKEND_CLUSTER]["ringHashLbConfig"] == ring


@pytest.mark.integration
def test_a_meshhttproutes_500_routes_take_no_hash_policy(tmp_path: Path) -> None:
    """A route answering 500 for unresolved backendRefs is a direct_response: a hash
    policy set on it would replace it with a route action without a cluster, which Envoy
    refuses (as would a timeout or a retry policy)."""
    view, projection = _route_view()
    _failing(view, projection)
    apply(view, projection, _mlbs("all", (_MESH, {"hashPolicies": [_HEADER]})))

    routes = _routes(view)

    assert [_where(r) for r in routes][:2] == ["500", "500 333333/MILLION"]
    assert ["route" in r for r in routes[:2]] == [False, False]
    assert routes[2]["route"]["hashPolicy"] == [{"header": {"headerName": "x-user"}}]
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(
        config_json(view, "default", "web-1", ResourceCache()))))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
