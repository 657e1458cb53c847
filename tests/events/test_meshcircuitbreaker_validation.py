"""MeshCircuitBreaker documents: Kuma's universal format and rules
(`meshcircuitbreaker/api/v1alpha1/validator.go`), every violation with its path and value.
What every policy kind does alike (events, round trips): tests/events/test_policy_kinds.py."""

from __future__ import annotations

from typing import Any

import pytest

from events import InvalidResource, MeshCircuitBreaker, decode_resource
from events._circuit_breaker_rules import stdev_factor_milli

_BACKEND = {"kind": "MeshService", "name": "backend"}


def _mcb(*to: tuple[dict[str, Any], dict[str, Any]], target: dict[str, Any] | None = None
         ) -> dict[str, Any]:
    spec: dict[str, Any] = {"to": [{"targetRef": ref, "default": conf} for ref, conf in to]}
    if target is not None:
        spec["targetRef"] = target
    return {"type": "MeshCircuitBreaker", "mesh": "default", "name": "cb", "spec": spec}


def _violations(raw: Any) -> list[str]:
    with pytest.raises(InvalidResource) as info:
        decode_resource(raw)
    return [str(v) for v in info.value.violations]


KUMAS_EXAMPLE = _mcb(({"kind": "Mesh"}, {
    "connectionLimits": {"maxConnections": 2, "maxPendingRequests": 8, "maxRetries": 2,
                         "maxRequests": 2, "maxConnectionPools": 4},
    "outlierDetection": {
        "disabled": False, "interval": "5s", "baseEjectionTime": "30s",
        "maxEjectionPercent": 20, "splitExternalAndLocalErrors": True,
        "detectors": {
            "totalFailures": {"consecutive": 10},
            "gatewayFailures": {"consecutive": 10},
            "localOriginFailures": {"consecutive": 10},
            "successRate": {"minimumHosts": 5, "requestVolume": 10,
                            "standardDeviationFactor": "1.9"},
            "failurePercentage": {"requestVolume": 10, "minimumHosts": 5,
                                  "threshold": 85}}}}),
    target={"kind": "MeshService", "name": "web"})


def test_kumas_example_is_valid_and_keeps_every_field() -> None:
    mcb = decode_resource(KUMAS_EXAMPLE)

    assert isinstance(mcb, MeshCircuitBreaker)
    conf = mcb.spec.to[0].default
    assert conf.connection_limits is not None and conf.connection_limits.max_connection_pools == 4
    assert conf.outlier_detection is not None
    assert conf.outlier_detection.split_external_and_local_errors is True
    detectors = conf.outlier_detection.detectors
    assert detectors is not None and detectors.success_rate is not None
    assert detectors.success_rate.standard_deviation_factor == "1.9"
    assert detectors.failure_percentage is not None
    assert detectors.failure_percentage.threshold == 85


def test_each_limit_and_count_must_be_above_zero() -> None:
    doc = _mcb((_BACKEND, {
        "connectionLimits": {"maxConnections": 0, "maxConnectionPools": 0,
                             "maxPendingRequests": 0, "maxRetries": 0, "maxRequests": 0},
        "outlierDetection": {"detectors": {
            "totalFailures": {"consecutive": 0}, "gatewayFailures": {"consecutive": 0},
            "localOriginFailures": {"consecutive": 0},
            "successRate": {"minimumHosts": 0, "requestVolume": 0},
            "failurePercentage": {"minimumHosts": 0, "requestVolume": 0}}}}))

    path = "spec.to[0].default"
    assert _violations(doc) == [
        *(f"{path}.connectionLimits.{name}: 0 must be between 1 and 4294967295"
          for name in ("maxConnections", "maxConnectionPools", "maxPendingRequests",
                       "maxRetries", "maxRequests")),
        *(f"{path}.outlierDetection.detectors.{name}: 0 must be between 1 and 4294967295"
          for name in ("totalFailures.consecutive", "gatewayFailures.consecutive",
                       "localOriginFailures.consecutive", "successRate.minimumHosts",
                       "successRate.requestVolume", "failurePercentage.minimumHosts",
                       "failurePercentage.requestVolume")),
    ]


def test_durations_percentages_and_the_factor_name_field_and_value() -> None:
    doc = _mcb((_BACKEND, {"outlierDetection": {
        "interval": "0s", "baseEjectionTime": "10", "maxEjectionPercent": 101,
        "detectors": {"successRate": {"standardDeviationFactor": "-1"},
                      "failurePercentage": {"threshold": 200}}}}),
               ({"kind": "Mesh"}, {"outlierDetection": {"detectors": {
                   "successRate": {"standardDeviationFactor": "x1.9"}}}}))

    path = "spec.to[0].default.outlierDetection"
    assert _violations(doc) == [
        f"{path}.interval: '0s' must be greater than 0s",
        f"{path}.baseEjectionTime: '10' is not a duration (Go's format: a number and a unit "
        "of ns, us, ms, s, m, h, e.g. 500ms, 15s, 1h30m)",
        f"{path}.maxEjectionPercent: 101 must be between 0 and 100 (a percentage)",
        f"{path}.detectors.successRate.standardDeviationFactor: '-1' must be greater than 0 "
        "(and at most 4294967)",
        f"{path}.detectors.failurePercentage.threshold: 200 must be between 0 and 100 "
        "(a percentage)",
        "spec.to[1].default.outlierDetection.detectors.successRate.standardDeviationFactor: "
        "'x1.9' is not a number",
    ]


def test_a_default_sets_something_and_outlier_detection_names_a_detector() -> None:
    doc = _mcb((_BACKEND, {}), (_BACKEND, {"outlierDetection": {"disabled": True}}),
               (_BACKEND, {"outlierDetection": {"detectors": {}}}))

    assert _violations(doc) == [
        "spec.to[0].default: at least one of 'connectionLimits' or 'outlierDetection' has to "
        "be defined",
        "spec.to[1].default.outlierDetection.detectors: must be defined (at least one of "
        "totalFailures, gatewayFailures, localOriginFailures, successRate, failurePercentage)",
        "spec.to[2].default.outlierDetection.detectors: at least one of totalFailures, "
        "gatewayFailures, localOriginFailures, successRate, failurePercentage has to be "
        "defined",
    ]


def test_target_refs_take_kumas_kinds_and_to_is_not_empty() -> None:
    doc = _mcb(({"kind": "MeshServiceSubset", "name": "backend"},
                {"connectionLimits": {"maxConnections": 1}}),
               target={"kind": "MeshServiceSubset", "name": "web"})
    empty = _mcb()

    assert _violations(doc) == [
        "spec.targetRef.kind: 'MeshServiceSubset' is not one of Mesh, MeshSubset, MeshService, "
        "Dataplane",
        "spec.to[0].targetRef.kind: 'MeshServiceSubset' is not one of Mesh, MeshService",
    ]
    assert _violations(empty) == [
        "spec.to: [] must list at least one entry (inbound 'rules' are not modelled)"]


def test_what_is_not_modelled_is_refused_by_name() -> None:
    doc = _mcb((_BACKEND, {"outlierDetection": {"healthyPanicThreshold": 0,
                                                "detectors": {"totalFailures": {}}}}))

    assert _violations(doc) == [
        "spec.to[0].default.outlierDetection.healthyPanicThreshold: unknown field"]


def test_a_limit_of_another_type_is_a_shape_error() -> None:
    doc = _mcb((_BACKEND, {"connectionLimits": {"maxConnections": "10"}}))

    [violation] = _violations(doc)
    assert violation.startswith("spec.to[0].default.connectionLimits.maxConnections: ")


def test_a_factor_of_any_size_is_named_not_raised() -> None:
    # found by review: '1e999999' times 1000 raised decimal.Overflow out of validation (a
    # 500, not a 400); a long fraction rounded up to the next thousandth instead of Kuma's
    # truncation
    factors = ("1e999999", "-1e999999999999", "1e-999999999", "4294967.296")
    doc = _mcb(*((_BACKEND, {"outlierDetection": {"detectors": {
        "successRate": {"standardDeviationFactor": f}}}}) for f in factors))

    where = "default.outlierDetection.detectors.successRate.standardDeviationFactor"
    assert _violations(doc) == [
        f"spec.to[{i}].{where}: {f!r} must be greater than 0 (and at most 4294967)"
        for i, f in enumerate(factors)]
    assert stdev_factor_milli("1.99999999999999999999999999999") == 1999
    assert stdev_factor_milli("4294967.295") == 4294967295
