"""MeshTimeout and MeshRetry to proxyless gRPC clients: what of them a gRPC channel to
`xds:///<target>` reads, on the route of the target's RouteConfiguration (`proxyless.py`).

Which policies apply and how their `to[]` entries merge per destination are the rules every
proxy gets (`timeouts.py` 1-3, `policy_rules.py`); this module takes the merged result of one
destination (`timeouts.for_destination`, `retries.for_destination`) and maps what gRPC's xDS
client honours. Kuma has no proxyless gRPC (kumahq/kuma#7152, closed), so the mapping is
gRPC's, with Kuma's meaning of each field:

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

Not read by gRPC's route parser, so not mapped (docs/status.md): `connectionTimeout`,
`idleTimeout` (newer gRPC-core reads a cluster's `upstream_config` idle timeout; meshlog's
clusters carry theirs elsewhere and a proxyless client's get none), `http.streamIdleTimeout`,
`http.maxConnectionDuration`, `http.requestHeadersTimeout`, `grpc.perTryTimeout` (gRFC A44
leaves it out) and MeshRetry's `http` and `tcp` sections. A proxyless client speaks gRPC
whatever the port's `appProtocol`, so the `grpc` section and the `http` timeouts apply to
every target. The client's clusters and outbound listeners (which gRPC ignores, or reads
without these fields) stay as they are without policies.
"""

from __future__ import annotations

from envoy.config.route.v3.route_components_pb2 import RetryPolicy
from envoy.config.route.v3.route_pb2 import RouteConfiguration
from google.protobuf.duration_pb2 import Duration
from msgspec import Struct

from events.resources import GRPC_RETRY_ON
from xds_gateway.resources import proxyless
from xds_gateway.resources.cache import EncodedResource, ResourceCache
from xds_gateway.resources.retries import Retries
from xds_gateway.resources.timeouts import Timeouts
from xds_gateway.type_urls import LISTENER, ROUTE

__all__ = ["GrpcRoute", "for_route", "grpc_target", "routed"]

_KUMA_GRPC_DEFAULT = ("cancelled", "connect-failure", "gateway-error", "refused-stream",
                      "reset", "resource-exhausted", "unavailable")
_BASE_NS = 25_000_000  # Envoy's and gRPC's default base interval


class GrpcRoute(Struct, frozen=True, kw_only=True):
    """What a proxyless client's route to one destination takes (durations in ns); None:
    not set. Hashable: part of the cache key of the RouteConfiguration it changes."""

    max_stream: int | None = None
    retry_on: tuple[str, ...] | None = None
    """Set when the route has a retry policy."""
    num_retries: int | None = None
    base: int | None = None
    max: int | None = None


_NOTHING = GrpcRoute()


def for_route(timeouts: Timeouts | None, retries: Retries | None) -> GrpcRoute | None:
    """What of one destination's merged `timeouts` and `retries` (`for_destination`'s) a
    proxyless client's route takes; None: nothing, the route is as without policies."""
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
    return None if route == _NOTHING else route


def routed(route_config: RouteConfiguration, route: GrpcRoute | None) -> RouteConfiguration:
    """`route_config` (a target's, `proxyless.route_configuration`) with `route` set on its
    routes."""
    if route is None:
        return route_config
    for host in route_config.virtual_hosts:
        for r in host.routes:
            action = r.route
            if route.max_stream is not None:
                action.max_stream_duration.max_stream_duration.CopyFrom(
                    _duration(route.max_stream))
                action.max_stream_duration.grpc_timeout_header_max.CopyFrom(
                    _duration(route.max_stream))
            if route.retry_on is not None:
                action.retry_policy.CopyFrom(_retry_policy(route))
    return route_config


def grpc_target(cache: ResourceCache, target: str, cluster: str, route: GrpcRoute | None
                ) -> tuple[EncodedResource, EncodedResource]:
    """The api_listener of `target` and its RouteConfiguration to `cluster` with `route`."""
    # the listener references no cluster directly: its route does, and gRPC asks for the
    # cluster by the route's name (xds-rules.md #13: LDS -> RDS -> CDS -> EDS)
    return (cache.get(LISTENER, target, "api_listener",
                      lambda: proxyless.api_listener(target)),
            cache.get(ROUTE, target,
                      ("grpc", cluster) + (() if route is None else (route,)),  # none: as ever
                      lambda: routed(proxyless.route_configuration(target, cluster), route),
                      refs=frozenset({cluster})))


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
