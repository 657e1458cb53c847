"""What MeshCircuitBreakers do to a proxy's outbound clusters
(xds_gateway.resources.circuit_breakers): Kuma's thresholds and outlier detection on every
outbound cluster they are about, L4 and L7 alike, merged field by field, nothing else
changed. The full config of one case: testdata/meshcircuitbreaker.*; a real Envoy
overflowing: tests/integration/test_meshcircuitbreaker.py; what every outbound policy kind
does alike: test_outbound_policy_config.py; a proxyless gRPC client's clusters:
test_proxyless_circuit_breaker_config.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events import MESH_CIRCUIT_BREAKER
from tests._policy_samples import resource
from tests.harness import envoy_binary
from tests.xds_gateway._bootstrap import static_bootstrap
from tests.xds_gateway._outbound import apply, dataplane, view_of
from tests.xds_gateway.test_golden_config import compute
from xds_gateway.resources import circuit_breakers
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.view import ProjectionView

_BACKEND = {"kind": "MeshService", "name": "backend"}


def _view() -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   dataplane("web-1", "10.0.0.9", 7070, "web"))


def _mcb(name: str, *to: tuple[dict[str, Any], dict[str, Any]],
         target: dict[str, Any] | None = None) -> Any:
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    return resource(MESH_CIRCUIT_BREAKER, name, spec=spec)


def _clusters(config: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c["resource"] for c in config["clusters"]}


def test_limits_and_outlier_detection_go_to_every_outbound_cluster_and_nothing_else() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _mcb("all", ({"kind": "Mesh"}, {
        "connectionLimits": {"maxConnections": 5, "maxConnectionPools": 2},
        "outlierDetection": {"interval": "2s", "detectors": {
            "gatewayFailures": {"consecutive": 3}}}})))

    config = config_json(view, "default", "web-1", ResourceCache())

    clusters, old = _clusters(config), _clusters(before)
    for name in ("default_backend___msvc_8080", "default_db___msvc_5432"):  # L7 and L4
        assert clusters[name]["circuitBreakers"] == {"thresholds": [
            {"maxConnections": 5, "maxConnectionPools": 2, "trackRemaining": True}]}
        assert clusters[name]["outlierDetection"] == {
            "interval": "2s", "consecutiveGatewayFailure": 3,
            "enforcingConsecutiveGatewayFailure": 100, "enforcingConsecutive5xx": 0,
            "enforcingConsecutiveLocalOriginFailure": 0, "enforcingSuccessRate": 0,
            "enforcingLocalOriginSuccessRate": 0, "enforcingFailurePercentage": 0,
            "enforcingFailurePercentageLocalOrigin": 0}
        rest = {k: v for k, v in clusters[name].items()
                if k not in ("circuitBreakers", "outlierDetection")}
        assert rest == old[name]
    assert "circuitBreakers" not in clusters["localhost:7070"]  # the inbound's: untouched
    assert config["listeners"] == before["listeners"]


def test_a_meshservice_entry_wins_field_by_field_and_disabled_sets_no_outlier_detection(
        ) -> None:
    view, projection = _view()
    apply(view, projection,
          _mcb("mesh-wide", ({"kind": "Mesh"}, {
              "connectionLimits": {"maxConnections": 100, "maxPendingRequests": 50},
              "outlierDetection": {"detectors": {"totalFailures": {"consecutive": 5}}}})),
          _mcb("backend", (_BACKEND, {
              "connectionLimits": {"maxConnections": 1},
              "outlierDetection": {"disabled": True, "detectors": {
                  "totalFailures": {"consecutive": 1}}}})))

    clusters = _clusters(config_json(view, "default", "web-1", ResourceCache()))

    backend = clusters["default_backend___msvc_8080"]
    assert backend["circuitBreakers"] == {"thresholds": [
        {"maxConnections": 1, "maxPendingRequests": 50, "trackRemaining": True}]}
    assert "outlierDetection" not in backend
    db = clusters["default_db___msvc_5432"]
    assert db["circuitBreakers"]["thresholds"][0]["maxConnections"] == 100
    assert db["outlierDetection"]["consecutive5xx"] == 5


def test_a_multizone_service_takes_the_mesh_entries_only() -> None:
    mesh_wide = _mcb("a", ({"kind": "Mesh"}, {"connectionLimits": {"maxRequests": 3}}),
                     ({"kind": "MeshService", "name": "redis"},
                      {"connectionLimits": {"maxRequests": 1}}))

    merged = circuit_breakers.merged([mesh_wide])
    assert circuit_breakers.for_destination(merged, None) == circuit_breakers.CircuitBreakers(
        max_requests=3)
    assert circuit_breakers.for_destination(merged, "redis") == (
        circuit_breakers.CircuitBreakers(max_requests=1))
    assert circuit_breakers.for_destination(circuit_breakers.merged([]), "redis") is None


@pytest.mark.integration
def test_envoy_validates_the_golden_case(tmp_path: Path) -> None:
    """Every field a MeshCircuitBreaker sets (testdata/meshcircuitbreaker: limits, every
    detector, the success rate's factor) is one Envoy accepts."""
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(compute("meshcircuitbreaker"))))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
