"""What MeshLoadBalancingStrategies do to a proxyless gRPC client's config
(xds_gateway.resources.proxyless_policies.for_load_balancing): a RingHash destination's
cluster gets `RING_HASH` with its ring sizes and its routes the hash policies gRPC reads
(headers, the `io.grpc.channel_id` filter state, gRFC A42); every other type, and what gRPC
does not read, leaves the config the bytes it always was. A real grpcio client hashing on a
header: tests/integration/test_proxyless_load_balancing.py."""

from __future__ import annotations

from typing import Any

from events import MESH_LOAD_BALANCING_STRATEGY
from tests._policy_samples import resource
from tests.xds_gateway._outbound import apply, dataplane, view_of
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import ProxyNode
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]
_GRPC = ProxyNode(user_agent_name="gRPC C-core linux")
_BACKEND_CLUSTER = "default_backend___msvc_8080"
_API_CLUSTER = "default_api___msvc_9090"


def _view() -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend", "grpc"),
                   dataplane("api-1", "10.0.0.2", 9090, "api", "tcp"),
                   dataplane("client-1", "10.0.0.9", 7070, "client", "grpc"))


def _mlbs(name: str, *to: tuple[dict[str, Any], dict[str, Any]]) -> Any:
    return resource(MESH_LOAD_BALANCING_STRATEGY, name, spec={
        "to": [{"targetRef": ref, "default": conf} for ref, conf in to]})


def _config(view: ProjectionView) -> Config:
    return config_json(view, "default", "client-1", ResourceCache(), node=_GRPC)


def _clusters(config: Config) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["resource"] for c in config["clusters"]}


def _hash_policies(config: Config) -> dict[str, list[Any]]:
    """Each route configuration's hash policies (all its routes')."""
    return {r["name"]: [hp for vh in r["resource"].get("virtualHosts", [])
                        for route in vh.get("routes", [])
                        for hp in route.get("route", {}).get("hashPolicy", [])]
            for r in config["routes"]}


def test_ring_hash_sets_the_cluster_and_the_routes_hash_policies_grpc_reads() -> None:
    view, projection = _view()
    before = _config(view)
    apply(view, projection, _mlbs("rh", ({"kind": "Mesh"}, {"loadBalancer": {
        "type": "RingHash", "ringHash": {
            "minRingSize": 64, "maxRingSize": 256, "hashFunction": "MurmurHash2",
            "hashPolicies": [
                {"type": "Header", "header": {"name": "x-user"}, "terminal": True},
                {"type": "Header", "header": {"name": "x-trace-bin"}},
                {"type": "Cookie", "cookie": {"name": "session"}},
                {"type": "Connection", "connection": {"sourceIP": True}},
                {"type": "QueryParameter", "queryParameter": {"name": "q"}},
                {"type": "FilterState", "filterState": {"key": "io.grpc.channel_id"}},
                {"type": "FilterState", "filterState": {"key": "other"}}]}}})))

    after = _config(view)

    for section in ("endpoints", "listeners", "secrets"):
        assert after[section] == before[section], section
    clusters, old = _clusters(after), _clusters(before)
    for name in (_BACKEND_CLUSTER, _API_CLUSTER):  # whatever the port's protocol
        # gRPC NACKs any hash function but XX_HASH (its default): MurmurHash2 is left out
        assert clusters[name]["lbPolicy"] == "RING_HASH"
        assert clusters[name]["ringHashLbConfig"] == {
            "minimumRingSize": "64", "maximumRingSize": "256"}
        rest = {k: v for k, v in clusters[name].items()
                if k not in ("lbPolicy", "ringHashLbConfig")}
        assert rest == old[name]
    assert clusters["localhost:7070"] == old["localhost:7070"]  # the inbound's: untouched
    hashes = _hash_policies(after)
    assert hashes and all(v == [{"header": {"headerName": "x-user"}, "terminal": True},
                                {"filterState": {"key": "io.grpc.channel_id"}}]
                          for v in hashes.values()), hashes
    assert set(hashes) == {r["name"] for r in before["routes"]}


def test_a_lone_max_ring_size_below_the_default_minimum_bounds_both() -> None:
    view, projection = _view()
    apply(view, projection, _mlbs("rh", ({"kind": "Mesh"}, {"loadBalancer": {
        "type": "RingHash", "ringHash": {"maxRingSize": 512}}})))

    # gRPC NACKs a minimum (default 1024) above the maximum
    assert _clusters(_config(view))[_BACKEND_CLUSTER]["ringHashLbConfig"] == {
        "minimumRingSize": "512", "maximumRingSize": "512"}


def test_types_grpc_does_not_have_and_round_robin_change_nothing() -> None:
    view, projection = _view()
    before = _config(view)
    for lb_type in ("RoundRobin", "LeastRequest", "Random", "Maglev"):
        apply(view, projection, _mlbs("lb", ({"kind": "Mesh"}, {
            "loadBalancer": {"type": lb_type},
            "hashPolicies": [{"type": "Header", "header": {"name": "x-user"}}]})))

        assert _config(view) == before, lb_type


def test_a_meshservice_entry_overrides_the_mesh_entry_for_its_destination_only() -> None:
    view, projection = _view()
    apply(view, projection, _mlbs("rh", ({"kind": "Mesh"}, {"loadBalancer": {
        "type": "RingHash", "ringHash": {"hashPolicies": [
            {"type": "Header", "header": {"name": "x-user"}}]}}}),
        ({"kind": "MeshService", "name": "api"}, {"loadBalancer": {"type": "RoundRobin"}})))

    clusters = _clusters(_config(view))

    assert clusters[_BACKEND_CLUSTER]["lbPolicy"] == "RING_HASH"
    assert "ringHashLbConfig" not in clusters[_BACKEND_CLUSTER]
    assert "lbPolicy" not in clusters[_API_CLUSTER]
