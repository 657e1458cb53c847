"""What MeshCircuitBreakers do to a proxyless gRPC client's config
(xds_gateway.resources.proxyless_policies.for_cluster): its clusters take the fields gRPC's
xDS client reads (`maxRequests`, outlier detection by success rate or failure percentage),
merged by the rules every proxy's policies follow; nothing gRPC ignores reaches them, and
without an entry about a destination its cluster is the bytes it always was. The full
config of one case: testdata/grpc-circuit-breaker.*; a real grpcio client dropping a call:
tests/integration/test_proxyless_circuit_breaker.py."""

from __future__ import annotations

from typing import Any

from events import MESH_CIRCUIT_BREAKER, MeshCircuitBreakerDeleted
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
_GRPC_READS = {  # every field gRPC reads, on a Mesh entry
    "connectionLimits": {"maxRequests": 1},
    "outlierDetection": {"interval": "2s", "baseEjectionTime": "5s", "maxEjectionPercent": 50,
                         "detectors": {
                             "successRate": {"minimumHosts": 2, "requestVolume": 10,
                                             "standardDeviationFactor": "1.5"},
                             "failurePercentage": {"minimumHosts": 3, "requestVolume": 20,
                                                   "threshold": 60}}}}
_GRPC_IGNORES = {  # every field gRPC does not read
    "connectionLimits": {"maxConnections": 3, "maxConnectionPools": 2,
                         "maxPendingRequests": 4, "maxRetries": 5},
    "outlierDetection": {"interval": "2s", "baseEjectionTime": "5s", "maxEjectionPercent": 50,
                         "splitExternalAndLocalErrors": True, "detectors": {
                             "totalFailures": {"consecutive": 3},
                             "gatewayFailures": {"consecutive": 4},
                             "localOriginFailures": {"consecutive": 5}}}}


def _view() -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend", "grpc"),
                   dataplane("api-1", "10.0.0.2", 9090, "api", "tcp"),
                   dataplane("client-1", "10.0.0.9", 7070, "client", "grpc"))


def _mcb(name: str, *to: tuple[dict[str, Any], dict[str, Any]]) -> Any:
    return resource(MESH_CIRCUIT_BREAKER, name, spec={
        "to": [{"targetRef": ref, "default": conf} for ref, conf in to]})


def _config(view: ProjectionView, cache: ResourceCache | None = None) -> Config:
    return config_json(view, "default", "client-1", cache or ResourceCache(), node=_GRPC)


def _clusters(config: Config) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["resource"] for c in config["clusters"]}


def test_a_proxyless_clients_clusters_take_what_grpc_reads_and_nothing_else_changes() -> None:
    view, projection = _view()
    before = _config(view)
    apply(view, projection, _mcb("all", ({"kind": "Mesh"}, _GRPC_READS)))

    after = _config(view)

    for section in ("endpoints", "listeners", "routes", "secrets"):
        assert after[section] == before[section], section
    clusters, old = _clusters(after), _clusters(before)
    for name in (_BACKEND_CLUSTER, _API_CLUSTER):  # whatever the port's protocol
        assert clusters[name]["circuitBreakers"] == {"thresholds": [
            {"maxRequests": 1, "trackRemaining": True}]}
        assert clusters[name]["outlierDetection"] == {
            "interval": "2s", "baseEjectionTime": "5s", "maxEjectionPercent": 50,
            "enforcingSuccessRate": 100, "successRateMinimumHosts": 2,
            "successRateRequestVolume": 10, "successRateStdevFactor": 1500,
            "enforcingFailurePercentage": 100, "failurePercentageMinimumHosts": 3,
            "failurePercentageRequestVolume": 20, "failurePercentageThreshold": 60,
            # what circuit_breakers.broken_cluster sets besides, which gRPC ignores
            "enforcingConsecutive5xx": 0, "enforcingConsecutiveGatewayFailure": 0,
            "enforcingConsecutiveLocalOriginFailure": 0,
            "enforcingLocalOriginSuccessRate": 100,
            "enforcingFailurePercentageLocalOrigin": 100}
        rest = {k: v for k, v in clusters[name].items()
                if k not in ("circuitBreakers", "outlierDetection")}
        assert rest == old[name]
    assert clusters["localhost:7070"] == old["localhost:7070"]  # the inbound's: untouched


def test_what_grpc_does_not_read_changes_nothing() -> None:
    view, projection = _view()
    before = _config(view)
    apply(view, projection,
          _mcb("ignored", ({"kind": "Mesh"}, _GRPC_IGNORES)),
          # a detector gRPC reads, but disabled
          _mcb("off", ({"kind": "Mesh"}, {"outlierDetection": {
              "disabled": True, "detectors": {"successRate": {}}}})))

    assert _config(view) == before


def test_a_detector_grpc_reads_brings_the_durations_and_only_its_own_fields() -> None:
    view, projection = _view()
    apply(view, projection, _mcb("od", ({"kind": "Mesh"}, {"outlierDetection": {
        "interval": "3s", "detectors": {"totalFailures": {"consecutive": 2},
                                        "failurePercentage": {}}}})))

    clusters = _clusters(_config(view))

    assert "circuitBreakers" in clusters[_BACKEND_CLUSTER]  # Kuma's DEFAULT threshold
    assert clusters[_BACKEND_CLUSTER]["circuitBreakers"] == {"thresholds": [
        {"trackRemaining": True}]}
    od = clusters[_BACKEND_CLUSTER]["outlierDetection"]
    assert od["interval"] == "3s"
    assert od["enforcingFailurePercentage"] == 100 and od["enforcingSuccessRate"] == 0
    assert "consecutive5xx" not in od and od["enforcingConsecutive5xx"] == 0


def test_a_meshservice_entry_wins_field_by_field_as_for_every_proxy() -> None:
    view, projection = _view()
    apply(view, projection,
          _mcb("mesh-wide", ({"kind": "Mesh"}, {
              "connectionLimits": {"maxRequests": 10, "maxConnections": 1},
              "outlierDetection": {"interval": "2s", "detectors": {"successRate": {}}}})),
          _mcb("backend", ({"kind": "MeshService", "name": "backend"}, {
              "connectionLimits": {"maxRequests": 1},
              "outlierDetection": {"disabled": True, "detectors": {"successRate": {}}}})))

    clusters = _clusters(_config(view))

    assert clusters[_BACKEND_CLUSTER]["circuitBreakers"]["thresholds"][0]["maxRequests"] == 1
    assert "outlierDetection" not in clusters[_BACKEND_CLUSTER]
    assert clusters[_API_CLUSTER]["circuitBreakers"]["thresholds"] == [
        {"maxRequests": 10, "trackRemaining": True}]
    assert clusters[_API_CLUSTER]["outlierDetection"]["interval"] == "2s"


def test_a_policy_that_does_not_select_the_client_changes_nothing() -> None:
    view, projection = _view()
    before = _config(view)
    apply(view, projection, resource(MESH_CIRCUIT_BREAKER, "others", spec={
        "targetRef": {"kind": "MeshService", "name": "backend"},
        "to": [{"targetRef": {"kind": "Mesh"}, "default": _GRPC_READS}]}))

    assert _config(view) == before


def test_deleting_the_policy_brings_back_the_same_bytes_through_one_cache() -> None:
    view, projection = _view()
    cache = ResourceCache()
    before = _config(view, cache)
    apply(view, projection, _mcb("all", ({"kind": "Mesh"}, _GRPC_READS)))
    assert _config(view, cache) != before

    view.apply(projection.fold([
        MeshCircuitBreakerDeleted(at=3_000_000_000_000, mesh="default", name="all")]))

    assert _config(view, cache) == before


def test_the_cluster_of_an_explicit_outbound_takes_the_same() -> None:
    """A cluster only an explicit outbound adds (backend: not among the reachable backends)
    is the one a target's would be."""
    client = dataplane("client-1", "10.0.0.9", 7070, "client", "grpc")
    client["networking"].update(
        transparentProxying={"reachableBackends": {"refs": [{"kind": "MeshService",
                                                             "name": "api"}]}},
        outbound=[{"port": 18080, "backendRef": {"kind": "MeshService", "name": "backend",
                                                 "port": 8080}}])
    view, projection = view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend", "grpc"),
                               dataplane("api-1", "10.0.0.2", 9090, "api", "grpc"), client)
    apply(view, projection, _mcb("all", ({"kind": "Mesh"}, {
        "connectionLimits": {"maxRequests": 1, "maxConnections": 2}})))

    clusters = _clusters(_config(view))

    assert clusters[_BACKEND_CLUSTER]["circuitBreakers"] == clusters[
        "default_api___msvc_9090"]["circuitBreakers"] == {"thresholds": [
            {"maxRequests": 1, "trackRemaining": True}]}
