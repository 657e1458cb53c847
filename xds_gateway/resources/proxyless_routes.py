"""MeshHTTPRoute to proxyless gRPC clients: what of an outbound's routes
(`http_routes.resolve`, Kuma's merge, precedence, default route and unresolved backends, the
same as an Envoy's) the RouteConfiguration of a gRPC target (`proxyless.py`) takes.

gRPC's xDS client routes by gRFC A28 (grpc-core's `xds_route_config.cc`, `ParseRoute`,
`RoutePathMatchParse`, `RouteHeaderMatchersParse`, `RouteActionParse`): the first route whose
match takes the call, by `prefix`, `path` or `safe_regex` (a full match) of the call's
`/<service>/<method>`, header matchers, and `runtime_fraction`; a route's `cluster` or
`weighted_clusters` (a share by weight). What it does not do is left out here:

| MeshHTTPRoute                  | the target's route                                        |
|--------------------------------|-----------------------------------------------------------|
| `path` Exact, RegularExpression| `path`, `safe_regex`, as for Envoy (1)                    |
| `path` PathPrefix              | `safe_regex` `<prefix>(/.*)?` (gRPC NACKs Envoy's         |
|                                | `path_separated_prefix`); `/`: `prefix: /`                |
| `method`                       | none: a gRPC call is a POST; another method: no route (2) |
| `headers[]`                    | as for Envoy (`string_match`, `present_match`), the name  |
|                                | lowercased (3)                                            |
| `queryParams[]`                | no route: a gRPC call has no query (gRPC skips the route) |
| `backendRefs`                  | `cluster` or `weighted_clusters`, as for Envoy (4)        |
| RequestHeaderModifier, ResponseHeaderModifier, URLRewrite, RequestMirror | left out (5) |
| RequestRedirect; backends that do not resolve | the route as for Envoy: gRPC fails the |
|                                | call UNAVAILABLE ("Matching route has inappropriate action")|

(1) gRPC ignores an Exact path that is not `/<service>/<method>` (it matches no call).
(2) the route of a rule whose match names another method is left out, as it never matches.
(3) gRPC reads no `-bin` header (a match on one sees it absent) and reads `content-type` as
`application/grpc`. It routes a call before its `:authority` (the target's name, unless the
call sets its own), `:method` (POST) and `:scheme` (http: no mTLS) are added, so a matcher on
one of these is decided here, per target, as Envoy would for such a call: the route keeps
the others, or is left out. Envoy matches a header name in any case; gRPC looks the matcher's name
up as written among the call's metadata keys, which are lowercase (grpcio refuses others),
so the name goes out lowercased.
(4) the backends' clusters, each a MeshService port's EDS cluster, are sent to the client with
their endpoints (xds-rules.md #8), as the MeshTimeout, MeshRetry, MeshCircuitBreaker and
MeshLoadBalancingStrategy of their destination set them for a proxyless client; a mirror's
are not (gRPC mirrors nothing). A 500 route's `runtime_fraction` (the unresolved weight's
share) is gRPC's too.
(5) gRPC's client ignores `request_headers_to_add` and the other header modifiers, host and
path rewrites and mirror policies; a call goes out with the client's own path and metadata.

Only a port whose `appProtocol` is `http`, `http2` or `grpc` takes routes (as for Envoy,
Kuma's MeshHTTPRoute rule); the client's target of another port keeps its one route. The
target's MeshTimeout and MeshRetry settings (`proxyless_policies.routed`) go on every route
that sends to a backend, as on an Envoy outbound's.
"""

from __future__ import annotations

import re

import re2
from envoy.config.route.v3.route_components_pb2 import HeaderMatcher, Route
from envoy.type.matcher.v3.regex_pb2 import RegexMatcher
from msgspec import structs

from xds_gateway.resources import http_routes, names
from xds_gateway.resources.http_routes import Routed, RouteSpec

__all__ = ["grpc_routed", "grpc_routes"]

_POST = "POST"


def grpc_routed(routed: Routed | None, mesh: str) -> Routed | None:
    """What of `routed` (`http_routes.resolve`'s, in `mesh`) a gRPC client can take: its
    routes without what gRPC cannot match or do (the table), and the ports of the
    backends they still send to."""
    if routed is None:
        return None
    kept: list[RouteSpec] = []
    for spec in routed.routes:
        match = spec.match
        if match.query_params:
            continue
        if match.method is not None:
            if match.method.upper() != _POST:
                continue
            match = structs.replace(match, method=None)
        kept.append(RouteSpec(
            match, [f for f in spec.filters if f.request_redirect is not None],
            spec.backends, spec.share))
    clusters = {b.cluster for r in kept for b in r.backends}
    return Routed(tuple(kept), tuple(
        p for p in routed.ports if names.msvc_cluster(mesh, *p) in clusters))


def grpc_routes(routed: Routed, target: str) -> list[Route]:
    """The routes of `routed` (`grpc_routed`'s) as gRPC reads them for calls to `target`."""
    pseudo = {":authority": target, ":method": _POST, ":scheme": "http"}
    return [r for spec in routed.routes
            if (r := _grpc_route(http_routes.envoy_route(spec), pseudo)) is not None]


def _grpc_route(route: Route, pseudo: dict[str, str]) -> Route | None:
    """`route` as gRPC reads it; None if a matcher on a header of `pseudo` (gRPC adds them
    after routing, (3)) cannot match."""
    match = route.match
    headers = []
    for header in match.headers:  # Envoy's names match in any case, gRPC's as written
        header.name = header.name.lower()  # among metadata keys, all lowercase
        value = pseudo.get(header.name)
        if value is None:
            headers.append(header)
        elif not _matches(header, value):
            return None
    del match.headers[:]
    match.headers.extend(headers)
    if match.HasField("path_separated_prefix"):
        prefix = match.path_separated_prefix.rstrip("/")
        match.safe_regex.CopyFrom(RegexMatcher(regex=f"{re.escape(prefix)}(/.*)?"))
    if route.HasField("route"):
        route.route.ClearField("timeout")  # Envoy's; gRPC caps calls by max_stream_duration
    return route


def _matches(header: HeaderMatcher, value: str) -> bool:
    """Whether `header` (of `http_routes`: present or a string match) takes `value`."""
    invert: bool = header.invert_match
    if header.HasField("present_match"):
        present: bool = header.present_match
        return present != invert
    m = header.string_match
    kind = m.WhichOneof("match_pattern")
    found: bool = (value == m.exact if kind == "exact" else value.startswith(m.prefix)
                   if kind == "prefix" else re2.fullmatch(m.safe_regex.regex, value) is not None)
    return found != invert
