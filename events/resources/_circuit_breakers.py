"""MeshCircuitBreaker (Kuma 2.x, `pkg/plugins/policies/meshcircuitbreaker`): connection limits
and outlier detection of the clusters of the selected proxies' outbounds.

Not modelled, and refused by the API as unknown fields (`events.decoding`): `rules[]`
(inbound circuit breakers) and `outlierDetection.healthyPanicThreshold` (docs/status.md)."""

from __future__ import annotations

from events.resources._base import MeshScopedResource, _Base
from events.resources._policies import TargetRef

__all__ = [
    "CircuitBreakerConnectionLimits",
    "CircuitBreakerDetectors",
    "CircuitBreakerFailurePercentage",
    "CircuitBreakerOutlierDetection",
    "CircuitBreakerSuccessRate",
    "ConsecutiveFailures",
    "MeshCircuitBreaker",
    "MeshCircuitBreakerConf",
    "MeshCircuitBreakerSpec",
    "MeshCircuitBreakerTo",
]


class CircuitBreakerConnectionLimits(_Base, frozen=True):
    """Envoy's cluster `circuit_breakers` thresholds (default priority); Envoy's defaults
    for a field left out (1024 connections, pending and requests, 3 retries)."""

    max_connections: int | None = None
    max_connection_pools: int | None = None
    max_pending_requests: int | None = None
    """For non-HTTP traffic, a connection limit (Envoy's)."""
    max_retries: int | None = None
    max_requests: int | None = None
    """HTTP only (Envoy's)."""


class ConsecutiveFailures(_Base, frozen=True):
    consecutive: int | None = None
    """How many failures in a row eject an endpoint."""


class CircuitBreakerSuccessRate(_Base, frozen=True):
    minimum_hosts: int | None = None
    request_volume: int | None = None
    standard_deviation_factor: int | str | None = None
    """A number above 0, or a decimal as a string (`"1.9"`): Envoy's factor times 1000."""


class CircuitBreakerFailurePercentage(_Base, frozen=True):
    minimum_hosts: int | None = None
    request_volume: int | None = None
    threshold: int | None = None
    """0 to 100."""


class CircuitBreakerDetectors(_Base, frozen=True):
    total_failures: ConsecutiveFailures | None = None
    gateway_failures: ConsecutiveFailures | None = None
    local_origin_failures: ConsecutiveFailures | None = None
    success_rate: CircuitBreakerSuccessRate | None = None
    failure_percentage: CircuitBreakerFailurePercentage | None = None


class CircuitBreakerOutlierDetection(_Base, frozen=True):
    disabled: bool | None = None
    interval: str | None = None
    """Go duration; Envoy's default 10 s."""
    base_ejection_time: str | None = None
    """Go duration; Envoy's default 30 s."""
    max_ejection_percent: int | None = None
    """0 to 100; Envoy's default 10 (at least one endpoint is ejected whatever the value)."""
    split_external_and_local_errors: bool | None = None
    detectors: CircuitBreakerDetectors | None = None


class MeshCircuitBreakerConf(_Base, frozen=True):
    connection_limits: CircuitBreakerConnectionLimits | None = None
    outlier_detection: CircuitBreakerOutlierDetection | None = None


class MeshCircuitBreakerTo(_Base, frozen=True):
    target_ref: TargetRef
    """The destinations this entry is about: Mesh (all) or MeshService `name`."""
    default: MeshCircuitBreakerConf


class MeshCircuitBreakerSpec(_Base, frozen=True, kw_only=True):
    target_ref: TargetRef = TargetRef(kind="Mesh")
    """The proxies whose outbounds it sets: Mesh (default), MeshSubset, MeshService or
    Dataplane."""
    to: list[MeshCircuitBreakerTo] = []


class MeshCircuitBreaker(MeshScopedResource, frozen=True, kw_only=True,
                         tag="MeshCircuitBreaker"):
    """Connection limits and outlier detection of the selected proxies' outbound clusters.
    Semantics (which policies apply, how `to[]` entries merge, what each field sets in
    Envoy): `xds_gateway.resources.circuit_breakers`."""

    spec: MeshCircuitBreakerSpec
