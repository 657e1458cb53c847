"""MeshCircuitBreaker to Envoy: connection limits and outlier detection of the clusters of a
proxy's outbounds.

Which MeshCircuitBreakers apply to a proxy, the order of their `to[]` entries and how they
merge per destination are MeshTimeout's rules 1-3 (`timeouts.py`, shared code in
`policy_rules.py`): the more specific policy wins, then a MeshService entry over a Mesh
entry, then the alphabetically first name; each field merges on its own (each limit, each
`outlierDetection` field, each detector's fields). A MeshMultiZoneService outbound takes the
Mesh entries only. No MeshCircuitBreaker, or no entry about a destination: its cluster is
exactly what it is without MeshCircuitBreaker (meshlog creates no default policy; Kuma
creates one with a mesh).

What each field sets in the outbound's EDS cluster (Kuma's mapping,
`meshcircuitbreaker/plugin/xds/configurer.go`), whatever the port's protocol:

| field (under `default`)                | Envoy cluster                                    |
|----------------------------------------|--------------------------------------------------|
| `connectionLimits.maxConnections`      | `circuit_breakers.thresholds[DEFAULT]` (1)       |
| `connectionLimits.maxPendingRequests`  | the same threshold's `max_pending_requests`      |
| `connectionLimits.maxRequests`         | the same threshold's `max_requests`              |
| `connectionLimits.maxRetries`          | the same threshold's `max_retries`               |
| `connectionLimits.maxConnectionPools`  | the same threshold's `max_connection_pools`      |
| `outlierDetection.interval`            | `outlier_detection.interval`                     |
| `outlierDetection.baseEjectionTime`    | `outlier_detection.base_ejection_time`           |
| `outlierDetection.maxEjectionPercent`  | `outlier_detection.max_ejection_percent`         |
| `...splitExternalAndLocalErrors`       | `split_external_local_origin_errors`             |
| `...totalFailures.consecutive`         | `consecutive_5xx` (2)                            |
| `...gatewayFailures.consecutive`       | `consecutive_gateway_failure` (2)                |
| `...localOriginFailures.consecutive`   | `consecutive_local_origin_failure` (2)           |
| `...successRate` (given)               | `success_rate_minimum_hosts`, `_request_volume`, |
|                                        | `_stdev_factor` (the factor times 1000) (3)      |
| `...failurePercentage` (given)         | `failure_percentage_minimum_hosts`,              |
|                                        | `_request_volume`, `_threshold` (3)              |

(1) `max_connections`; (2) and its `enforcing_...` 100; (3) and its `enforcing_...` and
`enforcing_..._local_origin` 100.

A cluster a MeshCircuitBreaker configures gets the DEFAULT priority threshold with
`track_remaining` (Kuma's), whatever it sets. With `outlierDetection` (and not `disabled`),
a detector not given is not enforced (its enforcing is 0, Kuma's), and Envoy's defaults
stand for what is left out (interval 10 s, base ejection time 30 s, 10 % ejected at most);
`disabled: true` sets no outlier detection. Limits left out are Envoy's (1024 connections,
pending and requests, 3 retries).

**meshlog's deviations.** Kuma sets `track_remaining` on every cluster of every proxy, with
or without a policy; meshlog only on the clusters a MeshCircuitBreaker configures, so the
config without one is what it was before MeshCircuitBreaker existed. A proxyless gRPC
client's clusters take the fields gRPC reads only (`maxRequests`, gRFC A32; outlier
detection by success rate or failure percentage, A50), set by `broken_cluster` too
(`proxyless_policies.for_cluster`). Not modelled (refused as unknown fields): `rules[]`
(inbound), `healthyPanicThreshold`.
"""

from __future__ import annotations

from typing import Any

from envoy.config.cluster.v3.circuit_breaker_pb2 import CircuitBreakers as EnvoyBreakers
from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3.base_pb2 import RoutingPriority
from msgspec import Struct

from events import MeshCircuitBreaker
from events._circuit_breaker_rules import stdev_factor_milli
from events.resources import MeshCircuitBreakerConf
from xds_gateway.resources import policy_rules

__all__ = ["NO_CIRCUIT_BREAKERS", "Applying", "CircuitBreakers", "applying", "broken_cluster",
           "for_destination", "merged"]

_LIMITS = ("max_connections", "max_connection_pools", "max_pending_requests", "max_retries",
           "max_requests")


class CircuitBreakers(Struct, frozen=True, kw_only=True):
    """The merged MeshCircuitBreaker of one outbound (durations in nanoseconds); None: not
    set by any entry. Hashable: part of the cache key of the cluster it changes."""

    max_connections: int | None = None
    max_connection_pools: int | None = None
    max_pending_requests: int | None = None
    max_retries: int | None = None
    max_requests: int | None = None
    outlier: bool | None = None
    """Some entry has `outlierDetection`."""
    disabled: bool | None = None
    interval: int | None = None
    base_ejection: int | None = None
    max_ejection_percent: int | None = None
    split: bool | None = None
    total_failures: int | None = None
    gateway_failures: int | None = None
    local_origin_failures: int | None = None
    success_rate: bool | None = None
    """Some entry has `detectors.successRate` (its fields or not)."""
    sr_minimum_hosts: int | None = None
    sr_request_volume: int | None = None
    sr_stdev_milli: int | None = None
    failure_percentage: bool | None = None
    fp_minimum_hosts: int | None = None
    fp_request_volume: int | None = None
    fp_threshold: int | None = None


Applying = policy_rules.Applying
NO_CIRCUIT_BREAKERS = policy_rules.NOTHING_APPLIES


def for_destination(policies: Applying, service: str | None) -> CircuitBreakers | None:
    """The merged MeshCircuitBreaker of the outbound to MeshService `service` (None: a
    MeshMultiZoneService, Mesh entries only); None when no entry is about it."""
    return policies.for_destination(service, CircuitBreakers)


def broken_cluster(cluster: Cluster, cb: CircuitBreakers | None) -> Cluster:
    """`cluster` (an outbound's) with the connection limits and outlier detection of `cb`."""
    if cb is None:
        return cluster
    threshold = _default_threshold(cluster.circuit_breakers)
    threshold.track_remaining = True
    for name in _LIMITS:
        value = getattr(cb, name)
        if value is not None:
            getattr(threshold, name).value = value
    if cb.outlier and not cb.disabled:
        _outlier_detection(cluster, cb)
    return cluster


def _default_threshold(breakers: EnvoyBreakers) -> EnvoyBreakers.Thresholds:
    for threshold in breakers.thresholds:
        if threshold.priority == RoutingPriority.DEFAULT:
            return threshold
    return breakers.thresholds.add(priority=RoutingPriority.DEFAULT)


def _outlier_detection(cluster: Cluster, cb: CircuitBreakers) -> None:
    od = cluster.outlier_detection
    od.SetInParent()
    if cb.interval is not None:
        od.interval.CopyFrom(policy_rules.proto_duration(cb.interval))
    if cb.base_ejection is not None:
        od.base_ejection_time.CopyFrom(policy_rules.proto_duration(cb.base_ejection))
    if cb.split is not None:
        od.split_external_local_origin_errors = cb.split
    if cb.max_ejection_percent is not None:
        od.max_ejection_percent.value = cb.max_ejection_percent
    for count, consecutive, enforcing in (
            (cb.total_failures, od.consecutive_5xx, od.enforcing_consecutive_5xx),
            (cb.gateway_failures, od.consecutive_gateway_failure,
             od.enforcing_consecutive_gateway_failure),
            (cb.local_origin_failures, od.consecutive_local_origin_failure,
             od.enforcing_consecutive_local_origin_failure)):
        enforcing.value = 0 if count is None else 100
        if count is not None:
            consecutive.value = count
    od.enforcing_success_rate.value = od.enforcing_local_origin_success_rate.value = (
        100 if cb.success_rate else 0)
    if cb.success_rate:
        for value, field in ((cb.sr_minimum_hosts, od.success_rate_minimum_hosts),
                             (cb.sr_request_volume, od.success_rate_request_volume),
                             (cb.sr_stdev_milli, od.success_rate_stdev_factor)):
            if value is not None:
                field.value = value
    od.enforcing_failure_percentage.value = (
        od.enforcing_failure_percentage_local_origin.value) = (
        100 if cb.failure_percentage else 0)
    if cb.failure_percentage:
        for value, field in ((cb.fp_minimum_hosts, od.failure_percentage_minimum_hosts),
                             (cb.fp_request_volume, od.failure_percentage_request_volume),
                             (cb.fp_threshold, od.failure_percentage_threshold)):
            if value is not None:
                field.value = value


def _fields(conf: MeshCircuitBreakerConf) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (limits := conf.connection_limits) is not None:
        out.update({name: getattr(limits, name) for name in _LIMITS})
    if (od := conf.outlier_detection) is not None:
        out.update(outlier=True, disabled=od.disabled,
                   interval=policy_rules.positive_ns(od.interval),
                   base_ejection=policy_rules.positive_ns(od.base_ejection_time),
                   max_ejection_percent=od.max_ejection_percent,
                   split=od.split_external_and_local_errors)
        detectors = od.detectors
        if detectors is not None:
            for name, detector in (("total_failures", detectors.total_failures),
                                   ("gateway_failures", detectors.gateway_failures),
                                   ("local_origin_failures", detectors.local_origin_failures)):
                out[name] = None if detector is None else detector.consecutive
            if (rate := detectors.success_rate) is not None:
                factor = rate.standard_deviation_factor
                out.update(success_rate=True, sr_minimum_hosts=rate.minimum_hosts,
                           sr_request_volume=rate.request_volume,
                           sr_stdev_milli=None if factor is None else stdev_factor_milli(factor))
            if (percentage := detectors.failure_percentage) is not None:
                out.update(failure_percentage=True, fp_minimum_hosts=percentage.minimum_hosts,
                           fp_request_volume=percentage.request_volume,
                           fp_threshold=percentage.threshold)
    return {name: value for name, value in out.items() if value is not None}




_MERGE: policy_rules.Merge[MeshCircuitBreaker] = policy_rules.Merge(_fields)
applying = _MERGE.applying
"""The MeshCircuitBreakers (rows of the Dataplane's mesh) that apply to `dataplane` (as
MeshTimeout's rules 1, 2)."""
merged = _MERGE.merged
"""Kuma's order over the MeshCircuitBreakers given, as per-field last values."""
