"""MeshTimeout, MeshRetry and MeshCircuitBreaker to proxyless gRPC clients: what of them a
gRPC channel to `xds:///<target>` reads, on the route of the target's RouteConfiguration
(`proxyless.py`) and on the cluster that route names.

Which policies apply and how their `to[]` entries merge per destination are the rules every
proxy gets (`timeouts.py` 1-3, `policy_rules.py`); this module takes the merged result of one
destination (`timeouts.for_destination`, `retries.for_destination`,
`circuit_breakers.for_destination`) and maps what gRPC's xDS client honours. Kuma has no
proxyless gRPC (kumahq/kuma#7152, closed), so the mapping is gRPC's, with Kuma's meaning of
each field:

| field                        | the target's route (gRPC reads it as)                     |
|------------------------------|-----------------------------------------------------------|
| `http.requestTimeout`        | `max_stream_duration.max_stream_duration` and             |
| `http.maxStreamDuration`     | `.grpc_timeout_header_max`: the earlier of the two (1)    |
| `grpc.numRetries`            | `retry_policy.num_retries` (gRFC A44; attempts capped at 5)|
| `grpc.backOff.*`             | `retry_policy.retry_back_off` (2)                         |
| `grpc.retryOn`               | `retry_policy.retry_on` (3)                               |

(1) gRFC A31: the value caps the call's deadline (`grpc_timeout_header_max` when present,
else `max_stream_duration`; both are set to the same value, as Istio does for its proxyless
clients, so every gRPC implementation reads it). Behind an Envoy outbound a call ends at
`requestTimeout` (the route's `timeout`) or `maxStreamDuration` (the cluster's), whichever
comes first; a proxyless call gets that earlier one as its deadline. `0s` is "none" for
each, as in Envoy, so a MeshService entry's `0s` lifts a Mesh entry's; with neither above 0
the route has no `max_stream_duration`.
(2) the merged intervals as for Envoy (`retries.py`: a `maxInterval` alone gets the base
`min(25ms, maxInterval)`, which gRPC needs as Envoy does).
(3) Kuma's default when `retryOn` is left out, narrowed to the conditions gRPC knows
(`cancelled,resource-exhausted,unavailable`; gRPC ignores `connect-failure`, `reset`, ...);
the values `grpc.retryOn` takes are all gRPC's. `numRetries: 0` is no retry policy, as for
Envoy (gRPC would NACK a `num_retries` of 0).

Checked against gRPC-core's route parser (`xds_route_config_parser.cc`: `RetryPolicyParse`,
`RouteActionParse`; `retry_service_config.cc` clamps attempts at 5) and shown with grpcio
1.85 (tests/integration/test_proxyless_policies.py).

MeshCircuitBreaker on the target's cluster (`for_cluster`: the merged fields gRPC reads, set
as for an Envoy by `circuit_breakers.broken_cluster`, so the cluster is the bytes an Envoy
gets from the same fields):

| field (under `default`)               | the cluster (gRPC reads it as)                     |
|---------------------------------------|----------------------------------------------------|
| `connectionLimits.maxRequests`        | `circuit_breakers.thresholds[DEFAULT].max_requests`|
|                                       | (gRFC A32: calls in flight at once, per cluster,   |
|                                       | past which a call fails UNAVAILABLE at once)       |
| `outlierDetection.interval`           | `outlier_detection.interval` (gRFC A50)            |
| `outlierDetection.baseEjectionTime`   | `.base_ejection_time`                              |
| `outlierDetection.maxEjectionPercent` | `.max_ejection_percent`                            |
| `...detectors.successRate`            | `.enforcing_success_rate` 100, `success_rate_*`    |
| `...detectors.failurePercentage`      | `.enforcing_failure_percentage` 100,               |
|                                       | `failure_percentage_*`                             |

Outlier detection goes to the cluster only with a `successRate` or `failurePercentage`
detector (and not `disabled`): gRPC ejects by these two only, so without them it would
eject nothing. gRPC's defaults stand for what is left out (A50: interval 10 s, base
ejection time 30 s, 10 %; success rate 5 hosts, 100 requests, factor 1.9; failure
percentage 5 hosts, 50 requests, 85 %; MeshCircuitBreaker has no max ejection time). Left out,
as gRPC does not read them: `maxConnections`, `maxConnectionPools`, `maxPendingRequests`,
`maxRetries` (gRPC's retries are capped by the route's policy, A44), `totalFailures`,
`gatewayFailures`, `localOriginFailures`, `splitExternalAndLocalErrors`. The cluster keeps
what `broken_cluster` sets besides (the DEFAULT threshold's `track_remaining`, the
`enforcing_*` of the other detectors at 0, the local-origin ones), which gRPC ignores.
Nothing gRPC refuses can get there: validation keeps percentages within 0..100 and
durations above 0 (gRPC NACKs a percentage above 100).

Checked against gRPC-core's cluster parser (`xds_cluster_parser.cc`, `CdsResourceParse`:
the first DEFAULT threshold's `max_requests`; an outlier detector counts only with its
`enforcing_*` present and not 0) and shown with grpcio 1.85 (circuit breaking:
tests/integration/test_proxyless_circuit_breaker.py; outlier detection on config only).

MeshLoadBalancingStrategy (`for_load_balancing`, gRFC A42), merged as for an Envoy
(`load_balancing.for_destination`): a RingHash destination's cluster gets `lb_policy:
RING_HASH` and the merged `minRingSize`/`maxRingSize` (set by `balanced_cluster`, so a
minimum above the maximum is bounded as for Envoy; gRPC NACKs min > max, and caps the ring
at 4096 at run time by default) and no `hash_function` (gRPC NACKs all but XX_HASH, its
default), and the target's routes the hash policies gRPC reads: `Header` (not a `-bin`
one) and `FilterState` `io.grpc.channel_id` (gRPC ignores cookie, connection, query
parameter and other filter-state policies). RoundRobin is gRPC's default, and LeastRequest
(gRPC-core NACKs `lb_policy: LEAST_REQUEST` and registers no A48 `least_request`
extension), Random and Maglev (gRPC has none) leave the cluster and route as without a
policy. Shown with grpcio 1.85
(tests/integration/test_proxyless_load_balancing.py).

Not read by gRPC's route parser, so not mapped (docs/status.md): `connectionTimeout`,
`idleTimeout` (newer gRPC-core reads a cluster's `upstream_config` idle timeout; meshlog's
clusters carry theirs elsewhere and a proxyless client's get none), `http.streamIdleTimeout`,
`http.maxConnectionDuration`, `http.requestHeadersTimeout`, `grpc.perTryTimeout` (gRFC A44
leaves it out) and MeshRetry's `http` and `tcp` sections. A proxyless client speaks gRPC
whatever the port's `appProtocol`, so the `grpc` section and the `http` timeouts apply to
every target. The client's outbound listeners (which gRPC ignores) stay as they are without
policies, and so do its clusters without a MeshCircuitBreaker about them.
"""

from __future__ import annotations

from envoy.config.route.v3.route_components_pb2 import RetryPolicy
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.duration_pb2 import Duration
from msgspec import Struct, structs

from events.resources import GRPC_RETRY_ON, HashPolicy
from xds_gateway.resources import load_balancing, proxyless, proxyless_routes
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.resources.circuit_breakers import CircuitBreakers
from xds_gateway.resources.http_routes import Routed
from xds_gateway.resources.load_balancing import LoadBalancing
from xds_gateway.resources.retries import Retries
from xds_gateway.resources.timeouts import Timeouts
from xds_gateway.type_urls import LISTENER, ROUTE

__all__ = ["GrpcRoute", "for_cluster", "for_load_balancing", "for_route", "grpc_target",
           "routed"]

_KUMA_GRPC_DEFAULT = ("cancelled", "connect-failure", "gateway-error", "refused-stream",
                      "reset", "resource-exhausted", "unavailable")
_BASE_NS = 25_000_000  # Envoy's and gRPC's default base interval
_CHANNEL_ID = "io.grpc.channel_id"  # the one filter state key gRPC hashes (gRFC A42)


class GrpcRoute(Struct, frozen=True, kw_only=True):
    """What a proxyless client's route to one destination takes (durations in ns); None:
    not set. Hashable: part of the cache key of the RouteConfiguration it changes."""

    max_stream: int | None = None
    retry_on: tuple[str, ...] | None = None
    """Set when the route has a retry policy."""
    num_retries: int | None = None
    base: int | None = None
    max: int | None = None
    hash_policies: tuple[HashPolicy, ...] | None = None
    """The route's `hash_policy` (a RingHash destination's, `for_load_balancing`)."""


_NOTHING = GrpcRoute()
_NO_LIMITS = CircuitBreakers()


def for_route(timeouts: Timeouts | None, retries: Retries | None,
              lb: LoadBalancing | None = None) -> GrpcRoute | None:
    """What of one destination's merged `timeouts`, `retries` and `lb` (`for_destination`'s)
    a proxyless client's route takes; None: nothing, the route is as without policies."""
    deadlines = [] if timeouts is None else [
        v for v in (timeouts.request, timeouts.max_stream) if v is not None and v > 0]
    route = GrpcRoute(max_stream=min(deadlines) if deadlines else None)
    if retries is not None and retries.grpc_retries != 0 and any(
            v is not None for v in (retries.grpc_retries, retries.grpc_base, retries.grpc_max,
                                    retries.grpc_on, retries.grpc_per_try)):
        on = retries.grpc_on or _KUMA_GRPC_DEFAULT
        base, top = retries.grpc_base, retries.grpc_max
        if base is None and top is not None:
            base = min(_BASE_NS, top)
        codes = tuple(v for v in on if v in GRPC_RETRY_ON)
        if codes:  # gRPC refuses a retry policy without a status code it retries on
            route = GrpcRoute(max_stream=route.max_stream, retry_on=codes,
                              num_retries=retries.grpc_retries, base=base, max=top)
    hashes = _grpc_hash_policies(lb)
    if hashes:
        route = structs.replace(route, hash_policies=hashes)
    return None if route == _NOTHING else route


def for_load_balancing(lb: LoadBalancing | None) -> LoadBalancing | None:
    """What of one destination's merged MeshLoadBalancingStrategy `lb` a proxyless client's
    cluster takes (`load_balancing.balanced_cluster`'s input): RingHash's ring sizes only;
    None for every other type (round robin, gRPC's default), so the cluster is as without."""
    if lb is None or lb.type != "RingHash":
        return None
    return LoadBalancing(type="RingHash", min_ring_size=lb.min_ring_size,
                         max_ring_size=lb.max_ring_size)


def _grpc_hash_policies(lb: LoadBalancing | None) -> tuple[HashPolicy, ...]:
    """The hash policies of a RingHash `lb` gRPC reads (gRFC A42): headers (not binary
    ones) and the filter state `io.grpc.channel_id`."""
    if for_load_balancing(lb) is None or lb is None:
        return ()
    return tuple(
        p for p in lb.route_hash_policies or ()
        if (p.type == "Header" and p.header is not None
            and not p.header.name.lower().endswith("-bin"))
        or (p.type == "FilterState" and p.filter_state is not None
            and p.filter_state.key == _CHANNEL_ID))


def for_cluster(cb: CircuitBreakers | None) -> CircuitBreakers | None:
    """What of one destination's merged MeshCircuitBreaker `cb` (`for_destination`'s) a
    proxyless client's cluster takes; None: nothing, the cluster is as without policies."""
    if cb is None:
        return None
    if cb.outlier and not cb.disabled and (cb.success_rate or cb.failure_percentage):
        grpc = CircuitBreakers(
            max_requests=cb.max_requests, outlier=True, interval=cb.interval,
            base_ejection=cb.base_ejection, max_ejection_percent=cb.max_ejection_percent,
            success_rate=cb.success_rate, sr_minimum_hosts=cb.sr_minimum_hosts,
            sr_request_volume=cb.sr_request_volume, sr_stdev_milli=cb.sr_stdev_milli,
            failure_percentage=cb.failure_percentage, fp_minimum_hosts=cb.fp_minimum_hosts,
            fp_request_volume=cb.fp_request_volume, fp_threshold=cb.fp_threshold)
    else:
        grpc = CircuitBreakers(max_requests=cb.max_requests)
    return None if grpc == _NO_LIMITS else grpc


def routed(route_config: RouteConfiguration, route: GrpcRoute | None) -> RouteConfiguration:
    """`route_config` (a target's, `proxyless.route_configuration`) with `route` set on its
    routes."""
    if route is None:
        return route_config
    for host in route_config.virtual_hosts:
        for r in host.routes:
            if not r.HasField("route"):  # a MeshHTTPRoute's 500 or redirect forwards nothing
                continue
            action = r.route
            if route.max_stream is not None:
                action.max_stream_duration.max_stream_duration.CopyFrom(
                    _duration(route.max_stream))
                action.max_stream_duration.grpc_timeout_header_max.CopyFrom(
                    _duration(route.max_stream))
            if route.retry_on is not None:
                action.retry_policy.CopyFrom(_retry_policy(route))
            if route.hash_policies:
                action.hash_policy.extend(
                    load_balancing.hash_policy(p) for p in route.hash_policies)
    return route_config


def grpc_target(cache: ResourceCache, target: str, cluster: str, route: GrpcRoute | None,
                routes: Routed | None = None) -> tuple[EncodedResource, EncodedResource]:
    """The api_listener of `target` and its RouteConfiguration to `cluster`, or `routes`
    (MeshHTTPRoute's, `proxyless_routes.grpc_routed`), with `route` on each route."""
    # the listener references no cluster directly: its route does, and gRPC asks for the
    # cluster by the route's name (xds-rules.md #13: LDS -> RDS -> CDS -> EDS)
    return (cache.get(LISTENER, target, "api_listener",
                      lambda: proxyless.api_listener(target)),
            cache.get(ROUTE, target,
                      ("grpc", cluster) + (() if route is None else (route,))  # none: as ever
                      + (() if routes is None else (routes.key,)),
                      lambda: routed(proxyless.route_configuration(
                          target, cluster,
                          None if routes is None else proxyless_routes.grpc_routes(
                              routes, target)),
                          route),
                      refs=frozenset({cluster}) if routes is None else routes.clusters))


def _retry_policy(route: GrpcRoute) -> RetryPolicy:
    policy = RetryPolicy(retry_on=",".join(route.retry_on or ()))
    if route.num_retries is not None:
        policy.num_retries.value = route.num_retries
    if route.base is not None:
        policy.retry_back_off.base_interval.CopyFrom(_duration(route.base))
        if route.max is not None:
            policy.retry_back_off.max_interval.CopyFrom(_duration(route.max))
    return policy


def _duration(ns: int) -> Duration:
    return Duration(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)
