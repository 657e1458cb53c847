"""MeshHTTPRoute to Envoy: the routes of a proxy's L7 outbounds (ports of protocol `http`,
`http2`, `grpc`), on the outbound listener's HttpConnectionManager.

What applies, precisely (Kuma 2.x, `pkg/plugins/policies/meshhttproute` and its policy
merge, `core/rules/merge`):

1. **Which policies.** As MeshTimeout's rule 1 (`timeouts.py`): a MeshHTTPRoute of the
   proxy's mesh whose top-level targetRef selects the Dataplane.
2. **Which rules, merged.** The `to[]` entries naming the destination MeshService, of the
   applying policies taken in MeshTimeout's rule 2 order (less specific top-level targetRef
   first, then names descending), give their rules; rules with equal `matches` (the whole
   list, compared as written) are one rule whose `default` is merged field by field, a later
   policy's `filters` or `backendRefs` replacing the earlier list whole (within one entry,
   the earlier rule's). The merged list is in Kuma's "first rule wins" order: the most
   specific policy's rules first, each entry's rules as written (a policy's later `to[]`
   entry before its earlier one), a merged rule where its first-winning copy is.
3. **Routes.** Each match of each rule is one Envoy route, stably sorted by Kuma's
   precedence (`api/v1alpha1/compare.go`, Gateway API's): a path before none; Exact before
   PathPrefix before RegularExpression, and a longer prefix or expression (in UTF-8 bytes,
   as Kuma's Go `len`) first; then a
   method before none; then more header matches first; then more query-parameter matches
   first. Envoy takes the first route that matches.
4. **Default.** Unless a route's match is exactly `{path: {type: PathPrefix, value: /}}`,
   a last route sends everything else to the outbound's own cluster, as without
   MeshHTTPRoute (Kuma's `prepareRoutes`, after the sort: a match without a path placed
   after such a catch-all is never reached, in Kuma too). A rule without `backendRefs`, or
   with `backendRefs: []` (which replaces an earlier policy's in the merge, as Kuma's JSON
   merge patch does), goes to the outbound's own cluster too.

What each part sets:

| field                         | Envoy route                                              |
|-------------------------------|----------------------------------------------------------|
| `path` Exact                  | `path`                                                   |
| `path` PathPrefix             | `path_separated_prefix` (`prefix: /` for `/`)            |
| `path` RegularExpression      | `safe_regex`                                             |
| no `path`                     | `prefix: /`                                              |
| `method`                      | header `:method` exact                                   |
| `headers[]` Exact, Prefix, RegularExpression | header `string_match` exact, prefix, safe_regex |
| `headers[]` Present, Absent   | `present_match`, and `invert_match` for Absent (3)       |
| `queryParams[]`               | `query_parameters` `string_match` exact or safe_regex    |
| `backendRefs`                 | `cluster` (one), `weighted_clusters` by `weight` (more)  |
| `RequestHeaderModifier`       | `request_headers_to_add`, `request_headers_to_remove` (2) |
| `ResponseHeaderModifier`      | the same on the response                                 |
| `URLRewrite.hostname`         | `host_rewrite_literal`                                   |
| `URLRewrite` ReplaceFullPath  | `regex_rewrite` of `^.*$`                                |
| `URLRewrite` ReplacePrefixMatch | `prefix_rewrite` (1)                                   |
| `RequestRedirect`             | `redirect` instead of `route` (4)                        |
| `RequestMirror`               | `request_mirror_policies` of the route's action (5)      |

(1) a replacement ending in `/` (or empty, which Gateway API reads as `/`), or a match of
the prefix `/`, is a `regex_rewrite` of the prefix and the slashes after it, so `/v2/x` under
`/v2` with `/` becomes `/x`, not `//x` (Gateway API's meaning). A replacement in a
`regex_rewrite` is literal (a backslash escaped, never an RE2 capture group).
(2) `set` overwrites the header (`OVERWRITE_IF_EXISTS_OR_ADD`), `add` appends a value
(`APPEND_IF_EXISTS_OR_ADD`).
(3) as Kuma's `routeHeadersMatch`: a Prefix of `''` is `present_match` (Envoy refuses an
empty prefix), and of several matches of one header name (any case) the first is kept.
(4) Kuma's `requestRedirect`: `scheme_redirect`, `host_redirect`, `port_redirect`, the path
as a URLRewrite's (`prefix_rewrite` or `regex_rewrite`, (1)), `response_code` of
`statusCode` (302 if left out: Kuma's CRD default and Gateway API's; Kuma's code, which a
Universal policy reaches undefaulted, answers 301, which clients cache). Envoy answers it;
with `hostname` and no `port` the `Location` has no port (Envoy drops the request's, as in
Kuma). The rule sends to no
cluster (validation refuses backendRefs, a URLRewrite or a RequestMirror beside it), and its
header modifiers stay on the route.
(5) Kuma's `RequestMirrorConfigurer`: one policy per filter, to the cluster of its
backendRef (resolved as a rule's backendRefs, below), with `runtime_fraction` of
`percentage` (Kuma's `ConvertPercentage`: whole percents in HUNDRED, else TEN_THOUSAND, else
MILLION; none left out). The shadow request's answer is dropped; the client gets the
route's backend's.

Routed listeners normalize the request path first (`normalize_path`, RFC 3986 dot segments,
as Kuma's outbound HttpConnectionManager), so `/v20/../v2/x` takes `/v2`'s route and cannot
reach another route's backend with a path its own route would not match.

A backendRef names a MeshService of the mesh and a port (left out: the port of the
outbound's number if the service has it, else its only port). It resolves to that port's
cluster, which the proxy is sent with its endpoints even when it could not reach the service
otherwise (`reachableBackends`, `meshServices.mode`): the route's author chose it, as Kuma
does. A backendRef to no such MeshService or port, to a port that is not `http`, `http2` or
`grpc` (Kuma's `backendRefProducesHTTPSplit`), or of weight 0, is unresolved. As Kuma's
(after 2.14, kumahq/kuma#18146, and Gateway API's rule for backendRefs that do not
resolve): a rule whose backendRefs all fail to resolve answers its requests 500 (a
`direct_response`, with the rule's header modifiers; a URLRewrite has nothing to rewrite);
one where some resolve gets, before each of its routes, a route of the same match that
answers 500 to the unresolved weight's share of the requests (`runtime_fraction` of
unresolved / total weight, Kuma's `fractionalPercent`), so each resolved backend keeps its
own share. A catch-all rule whose backends do not resolve is such a 500 route, and replaces
the default route. A RequestMirror whose backendRef does not resolve is left out (as
Kuma's current `RequestMirrorConfigurer`, "no split means no cluster"; older Kuma failed the
proxy's whole config: "could not find cluster for backendRef"); a 500 route
mirrors nothing (it forwards nothing). A mirror's cluster is sent to the proxy like a
backend's. MeshTimeout and MeshRetry apply to every route of the outbound that
sends to a backend alike (not to a 500 route). A MeshMultiZoneService outbound, an
explicit outbound to one get no routes (docs/status.md); proxyless gRPC clients get what
gRPC reads of them (`proxyless_routes.py`).
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec
from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption, RuntimeFractionalPercent
from envoy.config.listener.v3.listener_pb2 import Listener
from envoy.config.route.v3.route_components_pb2 import (
    DirectResponseAction,
    HeaderMatcher,
    QueryParameterMatcher,
    Route,
    RouteAction,
    RouteMatch,
    WeightedCluster,
)
from envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2 import (  # noqa: E501
    HttpConnectionManager,
)
from envoy.type.matcher.v3.regex_pb2 import RegexMatcher
from envoy.type.matcher.v3.string_pb2 import StringMatcher
from envoy.type.v3.percent_pb2 import FractionalPercent
from google.protobuf.duration_pb2 import Duration
from google.protobuf.wrappers_pb2 import BoolValue, UInt32Value
from msgspec import Struct

from events import Dataplane, MeshHTTPRoute
from events.resources import (
    HeaderModifier,
    HttpRouteBackendRef,
    HttpRouteFilter,
    HttpRouteMatch,
    MeshHTTPRouteRule,
    PathMatch,
    RuleConf,
)
from projections import MeshServiceRow, PolicyRow
from xds_gateway.resources import _route_filters, listeners, names, policy_rules

__all__ = ["NO_ROUTES", "Applying", "Backend", "RouteSpec", "Routed", "applying", "envoy_route",
           "for_destination", "resolve", "routed_listener"]

_HCM = "envoy.filters.network.http_connection_manager"
_CATCH_ALL = [HttpRouteMatch(path=PathMatch(type="PathPrefix", value="/"))]


class Applying(Struct, frozen=True):
    """The MeshHTTPRoutes that apply to one proxy: each destination's merged rules
    (rule 2)."""

    names: tuple[str, ...]
    services: dict[str, tuple[MeshHTTPRouteRule, ...]]

    def __bool__(self) -> bool:
        return bool(self.names)


NO_ROUTES = Applying((), {})


class Backend(Struct, frozen=True, array_like=True):
    cluster: str
    weight: int


class Mirror(Struct, frozen=True, array_like=True):
    cluster: str
    fraction: tuple[int, int] | None
    """(numerator, denominator: 100, 10 000 or 1 000 000); None: every request."""


class RouteSpec(Struct, frozen=True, array_like=True, omit_defaults=True):
    """One Envoy route, resolved: what `_route` builds."""

    match: HttpRouteMatch
    filters: list[HttpRouteFilter]
    backends: list[Backend]
    """One: `cluster`; several: `weighted_clusters`; none: a redirect if `filters` has
    one, else a direct 500 response."""
    share: tuple[int, int] | None = None
    """A 500 route that takes this share (unresolved weight, total weight) of the requests
    its match takes (`runtime_fraction`); the rule's own route follows it."""
    mirrors: list[Mirror] = []
    """Of a route with backends: its resolved RequestMirrors, in the filters' order."""


class Routed(Struct, frozen=True):
    """An outbound's routes (rules 3 and 4) and the MeshService ports they send to."""

    routes: tuple[RouteSpec, ...]
    ports: tuple[tuple[str, int], ...]
    """(MeshService, port) of every backend and mirror: their clusters must be sent too."""

    @property
    def clusters(self) -> frozenset[str]:
        """Every cluster the routes name (backends and mirrors)."""
        return frozenset(c for r in self.routes
                         for c in [*(b.cluster for b in r.backends),
                                   *(m.cluster for m in r.mirrors)])

    @property
    def key(self) -> bytes:
        """What the listener's cache key takes of it."""
        return msgspec.json.encode(self.routes)


def _merged(policies: tuple[MeshHTTPRoute, ...]) -> Applying:
    """Rule 2 over `policies` (applying to one proxy), as Kuma's merge does it: each entry's
    rules reversed, in the policies' order (a later default overrides), then the whole
    reversed back (`api/v1alpha1/helpers.go`: "the first rule wins")."""
    by_service: dict[str, list[MeshHTTPRouteRule]] = {}
    for policy in policy_rules.in_rule_2_order(policies):
        for to in policy.spec.to:
            if to.target_ref.kind == "MeshService" and to.target_ref.name is not None:
                by_service.setdefault(to.target_ref.name, []).extend(reversed(to.rules))
    return Applying(tuple(sorted(p.name for p in policies)), {
        service: _first_rule_wins(rules, rules[::-1]) for service, rules in by_service.items()})


def _first_rule_wins(merge_order: list[MeshHTTPRouteRule],
                     first_wins: list[MeshHTTPRouteRule]) -> tuple[MeshHTTPRouteRule, ...]:
    """Rules with equal matches as one, in `first_wins` order (a rule where it first
    appears), each `default` merged over `merge_order` (a later list replaces)."""
    keys = [msgspec.json.encode(r.matches) for r in merge_order]
    merged: dict[bytes, RuleConf] = {}
    for key, rule in zip(keys, merge_order, strict=True):
        before = merged.get(key)
        conf = rule.default
        if before is not None:
            conf = RuleConf(
                filters=conf.filters if conf.filters is not None else before.filters,
                backend_refs=(conf.backend_refs if conf.backend_refs is not None
                              else before.backend_refs))
        merged[key] = conf
    out: list[MeshHTTPRouteRule] = []
    for rule in first_wins:
        key = msgspec.json.encode(rule.matches)
        found: RuleConf | None = merged.pop(key, None)
        if found is not None:
            out.append(MeshHTTPRouteRule(matches=rule.matches, default=found))
    return tuple(out)


_MEMO: policy_rules.Memo[MeshHTTPRoute, Applying] = policy_rules.Memo()


def applying(rows: Mapping[str, PolicyRow[MeshHTTPRoute]] | None,
             dataplane: Dataplane, services: Mapping[str, MeshServiceRow]) -> Applying:
    """The MeshHTTPRoutes (rows of the Dataplane's mesh) that apply to `dataplane`
    (rules 1, 2)."""
    if not rows:
        return NO_ROUTES
    picked = policy_rules.chosen((row.policy for row in rows.values()), dataplane, services)
    return _MEMO.get(picked, _merged) if picked else NO_ROUTES


def for_destination(policies: Applying, service: str | None
                    ) -> tuple[MeshHTTPRouteRule, ...] | None:
    """The merged rules of the outbound to MeshService `service` (None: not a MeshService);
    None when no rule is about it."""
    return None if service is None else policies.services.get(service)


def resolve(rules: tuple[MeshHTTPRouteRule, ...] | None, mesh: str, own: str, port: int,
            services: Mapping[str, MeshServiceRow]) -> Routed | None:
    """Rules 3 and 4 for the outbound to MeshService port `port`, whose cluster is `own`,
    with `rules` (`for_destination`'s)."""
    if rules is None:
        return None
    keyed: list[RouteSpec] = []
    ports: set[tuple[str, int]] = set()
    for rule in rules:
        filters = rule.default.filters or []
        if any(f.request_redirect is not None for f in filters):  # Envoy answers it
            keyed.extend(RouteSpec(m, filters, []) for m in rule.matches)
            continue
        backends, unresolved = _backends(rule.default, mesh, own, port, services, ports)
        mirrors = _mirrors(filters, mesh, port, services, ports) if backends else []
        for m in rule.matches:
            if backends and unresolved:  # the unresolved weight's share answers 500
                total = unresolved + sum(b.weight for b in backends)
                keyed.append(RouteSpec(m, filters, [], (unresolved, total)))
            keyed.append(RouteSpec(m, filters, backends, mirrors=mirrors))  # none: 500
    routes = sorted(keyed, key=lambda r: _precedence(r.match))  # stable
    if _CATCH_ALL[0] not in (r.match for r in routes):
        routes.append(RouteSpec(_CATCH_ALL[0], [], [Backend(own, 1)]))
    return Routed(tuple(routes), tuple(sorted(ports)))


def _backends(conf: RuleConf, mesh: str, own: str, port: int,
              services: Mapping[str, MeshServiceRow], ports: set[tuple[str, int]]
              ) -> tuple[list[Backend], int]:
    """The rule's resolved backends and the weight of those that do not resolve (Kuma's
    `UnresolvedBackendRefsWeight`; a backendRef of weight 0 adds none)."""
    if not conf.backend_refs:  # None or [] (Kuma: no explicit backendRefs)
        return [Backend(own, 1)], 0
    weights: dict[str, int] = {}
    unresolved = 0
    for ref in conf.backend_refs:
        found = _service_port(ref, port, services) if ref.weight > 0 else None
        if found is None:
            unresolved += ref.weight
            continue
        ports.add(found)
        cluster = names.msvc_cluster(mesh, *found)
        weights[cluster] = weights.get(cluster, 0) + ref.weight
    return [Backend(c, w) for c, w in weights.items()], unresolved


def _mirrors(filters: list[HttpRouteFilter], mesh: str, port: int,
             services: Mapping[str, MeshServiceRow], ports: set[tuple[str, int]]
             ) -> list[Mirror]:
    """The rule's RequestMirrors whose backendRef resolves (the others are left out)."""
    out: list[Mirror] = []
    for f in filters:
        mirror = f.request_mirror
        found = None if mirror is None else _service_port(mirror.backend_ref, port, services)
        if mirror is None or found is None:
            continue
        ports.add(found)
        out.append(Mirror(names.msvc_cluster(mesh, *found),
                          _route_filters.mirror_fraction(mirror.percentage)))
    return out


def _service_port(ref: HttpRouteBackendRef, port: int, services: Mapping[str, MeshServiceRow]
                  ) -> tuple[str, int] | None:
    """The (MeshService, port) `ref` names, if it has that port and the port is HTTP; the
    port left out: the outbound's number `port` if the service has it, else its only one."""
    ms = None if ref.name is None else services.get(ref.name)
    if ref.name is None or ms is None:
        return None
    numbers = [p.port for p in ms.spec.ports]
    if ref.port is not None:
        chosen = ref.port if ref.port in numbers else None
    else:
        chosen = port if port in numbers else (numbers[0] if len(numbers) == 1 else None)
    if chosen is None or listeners.port_protocol(ms.spec.ports, chosen) not in \
            listeners.HTTP_PROTOCOLS:
        return None
    return ref.name, chosen


def _precedence(match: HttpRouteMatch) -> tuple[int, int, int, int, int]:
    """Kuma's `CompareMatch` as a sort key: smaller first."""
    p = match.path
    kind = 3 if p is None else {"Exact": 0, "PathPrefix": 1, "RegularExpression": 2}[p.type]
    length = 0 if p is None or p.type == "Exact" else -len(p.value.encode())
    return (kind, length, 0 if match.method is not None else 1,
            -len(match.headers or []), -len(match.query_params or []))


def routed_listener(listener: Listener, routed: Routed | None) -> Listener:
    """`listener` (an L7 outbound's) with its one route replaced by `routed`'s."""
    if routed is None:
        return listener
    for chain in listener.filter_chains:
        for network_filter in chain.filters:
            if network_filter.name != _HCM:
                continue
            hcm = HttpConnectionManager()
            network_filter.typed_config.Unpack(hcm)
            hcm.normalize_path.CopyFrom(BoolValue(value=True))
            for host in hcm.route_config.virtual_hosts:
                del host.routes[:]
                host.routes.extend(envoy_route(r) for r in routed.routes)
            network_filter.typed_config.Pack(hcm)
    return listener


def envoy_route(spec: RouteSpec) -> Route:
    """The Envoy route of `spec` (the table above)."""
    redirect = next((f.request_redirect for f in spec.filters
                     if f.request_redirect is not None), None)
    if redirect is not None:
        route = Route(match=_match(spec.match),
                      redirect=_route_filters.redirect(redirect, spec.match))
        _modify_headers(spec.filters, route)
        return route
    if not spec.backends:  # Kuma's: header modifiers apply, a rewrite has nothing to rewrite
        route = Route(match=_match(spec.match), direct_response=DirectResponseAction(status=500))
        if spec.share is not None:
            route.match.runtime_fraction.CopyFrom(RuntimeFractionalPercent(
                default_value=_fraction(*spec.share)))
        _modify_headers(spec.filters, route)
        return route
    route = Route(match=_match(spec.match), route=RouteAction(timeout=Duration(seconds=0)))
    if len(spec.backends) == 1:
        route.route.cluster = spec.backends[0].cluster
    else:
        route.route.weighted_clusters.CopyFrom(WeightedCluster(clusters=[
            WeightedCluster.ClusterWeight(name=b.cluster, weight=UInt32Value(value=b.weight))
            for b in spec.backends]))
    _modify_headers(spec.filters, route)
    for f in spec.filters:
        _route_filters.rewrite(f, spec.match, route.route)
    route.route.request_mirror_policies.extend(
        _route_filters.mirror_policy(m.cluster, m.fraction) for m in spec.mirrors)
    return route


def _modify_headers(filters: list[HttpRouteFilter], route: Route) -> None:
    for f in filters:
        if f.request_header_modifier is not None:
            _modify(f.request_header_modifier, route.request_headers_to_add,
                    route.request_headers_to_remove)
        if f.response_header_modifier is not None:
            _modify(f.response_header_modifier, route.response_headers_to_add,
                    route.response_headers_to_remove)


_DENOMINATORS = ((100, FractionalPercent.HUNDRED), (10_000, FractionalPercent.TEN_THOUSAND),
                 (1_000_000, FractionalPercent.MILLION))


def _fraction(part: int, total: int) -> FractionalPercent:
    """`part / total` as Kuma's `fractionalPercent`: exact in the smallest denominator that
    holds it, else in millionths rounded (the coarsest denominator that holds those)."""
    for scale, denominator in _DENOMINATORS:
        if part * scale % total == 0:
            return FractionalPercent(numerator=part * scale // total, denominator=denominator)
    millionths = (part * 2_000_000 + total) // (2 * total)  # rounded half up
    for scale, denominator in _DENOMINATORS:
        if millionths % (1_000_000 // scale) == 0:
            return FractionalPercent(numerator=millionths // (1_000_000 // scale),
                                     denominator=denominator)
    raise AssertionError("unreachable: MILLION holds every millionth")


def _match(m: HttpRouteMatch) -> RouteMatch:
    match = RouteMatch()
    p = m.path
    if p is None or (p.type == "PathPrefix" and p.value == "/"):
        match.prefix = "/"
    elif p.type == "Exact":
        match.path = p.value
    elif p.type == "PathPrefix":
        match.path_separated_prefix = p.value
    else:
        match.safe_regex.CopyFrom(RegexMatcher(regex=p.value))
    if m.method is not None:
        match.headers.append(HeaderMatcher(name=":method",
                                           string_match=StringMatcher(exact=m.method)))
    seen: set[str] = set()
    for h in m.headers or []:
        if h.name.lower() in seen:
            continue  # Kuma's: the first match of a header name is kept
        seen.add(h.name.lower())
        header = HeaderMatcher(name=h.name)
        if h.type in ("Present", "Absent") or (h.type == "Prefix" and not h.value):
            header.present_match = True
            header.invert_match = h.type == "Absent"
        else:
            header.string_match.CopyFrom(_string(h.type, h.value or ""))
        match.headers.append(header)
    for q in m.query_params or []:
        match.query_parameters.append(QueryParameterMatcher(
            name=q.name, string_match=_string(q.type, q.value)))
    return match


def _string(kind: str, value: str) -> StringMatcher:
    if kind == "Prefix":
        return StringMatcher(prefix=value)
    if kind == "RegularExpression":
        return StringMatcher(safe_regex=RegexMatcher(regex=value))
    return StringMatcher(exact=value)


def _modify(modifier: HeaderModifier, to_add: list[HeaderValueOption],
            to_remove: list[str]) -> None:
    for kv, action in [*((kv, HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD)
                         for kv in modifier.set or []),
                       *((kv, HeaderValueOption.APPEND_IF_EXISTS_OR_ADD)
                         for kv in modifier.add or [])]:
        to_add.append(HeaderValueOption(header=HeaderValue(key=kv.name, value=kv.value),
                                        append_action=action))
    to_remove.extend(modifier.remove or [])
