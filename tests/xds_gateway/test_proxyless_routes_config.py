"""What MeshHTTPRoutes do to a proxyless gRPC client's config
(xds_gateway.resources.proxyless_routes): its targets' RouteConfigurations take the routes an
Envoy outbound gets (`http_routes`: precedence, merge, default route, weighted backends) as
far as gRPC's xDS client reads them, the backends' clusters are sent, and MeshTimeout and
MeshRetry stay on every route that forwards. Real grpcio clients:
tests/integration/test_proxyless_routes.py."""

from __future__ import annotations

from typing import Any

from events import MESH_HTTP_ROUTE, MESH_RETRY, MESH_TIMEOUT
from tests._policy_samples import resource
from tests.projections._histories import History
from tests.xds_gateway._outbound import apply, dataplane, view_of
from tests.xds_gateway._routes import BACKEND, OWN, V2, route, rule, to, view, where
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.node import ProxyNode
from xds_gateway.view import ProjectionView

Config = dict[str, list[dict[str, Any]]]
_GRPC = ProxyNode(user_agent_name="gRPC C-core linux")
_TARGETS = ("backend:8080", "backend.svc.mesh.local:8080")


def _config(v: ProjectionView, cache: ResourceCache | None = None) -> Config:
    return config_json(v, "default", "web-1", cache or ResourceCache(), node=_GRPC)


def _routes(config: Config, target: str = "backend:8080") -> list[dict[str, Any]]:
    for entry in config["routes"]:
        if entry["name"] == target:
            (host,) = entry["resource"]["virtualHosts"]
            routes: list[dict[str, Any]] = host["routes"]
            return routes
    raise AssertionError(f"no route {target}")


def test_a_header_match_routes_both_targets_of_the_destination_and_nothing_else() -> None:
    v, projection = view()
    before = _config(v)
    apply(v, projection, route("v2", rule(
        {"headers": [{"name": "x-version", "value": "v2"}]}, backendRefs=to(("backend-v2", 1)))))

    after = _config(v)

    for target in _TARGETS:
        assert _routes(after, target) == [
            {"match": {"prefix": "/", "headers": [
                {"name": "x-version", "stringMatch": {"exact": "v2"}}]},
             "route": {"cluster": V2}},
            {"match": {"prefix": "/"}, "route": {"cluster": OWN}}]  # the default route
    # the other targets, the clusters and the (ignored) outbound listeners are as before
    assert [r for r in after["routes"] if r["name"] not in _TARGETS] == [
        r for r in before["routes"] if r["name"] not in _TARGETS]
    for section in ("clusters", "endpoints", "listeners"):
        assert after[section] == before[section], section


def test_a_weighted_split_and_an_unresolved_share_as_grpc_reads_them() -> None:
    v, projection = view()
    apply(v, projection, route(
        "split",
        rule({"path": {"type": "PathPrefix", "value": "/pkg.Echo"}},
             backendRefs=to(("backend", 1), ("backend-v2", 1))),
        rule({"path": {"type": "Exact", "value": "/pkg.Echo/Gone"}},
             backendRefs=to(("nowhere", 1), ("backend-v2", 3)))))

    routes = _routes(_config(v))

    assert [where(r) for r in routes] == [
        "500 25/HUNDRED", V2, {OWN: 1, V2: 1}, OWN]
    assert routes[0]["match"]["path"] == routes[1]["match"]["path"] == "/pkg.Echo/Gone"
    # gRPC NACKs Envoy's path_separated_prefix: the same paths by a full-match regex
    assert routes[2]["match"] == {"safeRegex": {"regex": r"/pkg\.Echo(/.*)?"}}


def test_what_grpc_cannot_match_or_do_is_left_out() -> None:
    v, projection = view()
    apply(v, projection, route(
        "filters",
        rule({"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"},
             backendRefs=to(("backend-v2", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/b"},
              "queryParams": [{"type": "Exact", "name": "q", "value": "1"}]},
             backendRefs=to(("backend-v2", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/c"}, "method": "POST"},
             backendRefs=to(("backend-v2", 1)), filters=[
                 {"type": "RequestHeaderModifier", "requestHeaderModifier": {
                     "set": [{"name": "x-a", "value": "1"}]}},
                 {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
                     "remove": ["x-b"]}},
                 {"type": "URLRewrite", "urlRewrite": {"hostname": "h.example", "path": {
                     "type": "ReplacePrefixMatch", "replacePrefixMatch": "/d"}}},
                 {"type": "RequestMirror", "requestMirror": {
                     "backendRef": {"kind": "MeshService", "name": "web", "port": 7070}}}])))

    routes = _routes(_config(v))

    # GET: never a gRPC call; a query: gRPC has none; POST: every gRPC call
    assert routes == [
        {"match": {"safeRegex": {"regex": "/c(/.*)?"}}, "route": {"cluster": V2}},
        {"match": {"prefix": "/"}, "route": {"cluster": OWN}}]


def test_a_backend_the_client_cannot_reach_otherwise_gets_its_cluster_but_not_a_mirror() -> None:
    web = dataplane("web-1", "10.0.0.9", 7070, "web")
    web["networking"]["transparentProxying"] = {"reachableBackends": {"refs": [BACKEND]}}
    v, projection = view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                            dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"),
                            dataplane("db-1", "10.0.0.3", 8080, "db"), web)
    reaching = _config(view_of(dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"),
                               dataplane("web-1", "10.0.0.9", 7070, "web"))[0])
    apply(v, projection, route("v2", rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=to(("backend-v2", 1)),
        filters=[{"type": "RequestMirror", "requestMirror": {
            "backendRef": {"kind": "MeshService", "name": "db"}}}])))

    config = _config(v)

    clusters = {c["name"]: c for c in config["clusters"]}
    assert set(clusters) == {OWN, V2, "localhost:7070"}  # not db's, the mirror's
    # the one a client that reaches backend-v2 gets (a proxyless client's: no mTLS)
    assert clusters[V2] == next(c for c in reaching["clusters"] if c["name"] == V2)
    assert V2 in {e["name"] for e in config["endpoints"]}
    assert {r["name"] for r in config["routes"]} == set(_TARGETS)  # no target of its own


def test_timeouts_and_retries_go_on_every_forwarding_route_not_on_a_500() -> None:
    v, projection = view()
    apply(v, projection,
          route("split", rule({"headers": [{"name": "x-v", "type": "Present"}]},
                              backendRefs=to(("nowhere", 1), ("backend-v2", 1)))),
          resource(MESH_TIMEOUT, "t", spec={"to": [{"targetRef": BACKEND, "default": {
              "http": {"requestTimeout": "3s"}}}]}),
          resource(MESH_RETRY, "r", spec={"to": [{"targetRef": BACKEND, "default": {
              "grpc": {"numRetries": 2}}}]}))

    routes = _routes(_config(v))

    assert [where(r) for r in routes] == ["500 50/HUNDRED", V2, OWN]
    assert "route" not in routes[0]
    for r in routes[1:]:
        assert r["route"]["maxStreamDuration"] == {
            "maxStreamDuration": "3s", "grpcTimeoutHeaderMax": "3s"}
        assert r["route"]["retryPolicy"]["numRetries"] == 2


def test_deleting_the_route_brings_back_the_same_bytes_through_one_cache() -> None:
    v, projection = view()
    cache = ResourceCache()
    before = _config(v, cache)
    policy = route("v2", rule({"headers": [{"name": "x-version", "value": "v2"}]},
                              backendRefs=to(("backend-v2", 1))))
    apply(v, projection, policy)
    assert _config(v, cache) != before

    v.apply(projection.fold(
        History(start=3_000_000_000_000).delete_policy(MESH_HTTP_ROUTE, "default", "v2").events))

    assert _config(v, cache) == before


def test_a_header_name_is_matched_as_grpc_metadata_keys_are_lowercase() -> None:
    """Envoy matches header names in any case; gRPC looks a matcher's name up as written
    among metadata keys, which are lowercase (grpcio refuses others), so `X-Version` must
    go out as `x-version` or the route never matches a gRPC call."""
    v, projection = view()
    apply(v, projection, route("v2", rule(
        {"headers": [{"name": "X-Version", "value": "v2"},
                     {"name": "X-Canary", "type": "Present"}]},
        backendRefs=to(("backend-v2", 1)))))

    (first, _default) = _routes(_config(v))

    assert [h["name"] for h in first["match"]["headers"]] == ["x-version", "x-canary"]


def test_routes_that_do_not_select_the_client_or_are_about_an_l4_port_change_no_byte() -> None:
    v, projection = view()
    before = _config(v)
    apply(v, projection,
          route("elsewhere", rule({"headers": [{"name": "x-version", "value": "v2"}]},
                                  backendRefs=to(("backend-v2", 1))),
                target={"kind": "MeshSubset", "tags": {"kuma.io/service": "backend"}}),
          route("tcp", rule({"path": {"type": "PathPrefix", "value": "/a"}},
                            backendRefs=to(("backend-v2", 1))),
                to={"kind": "MeshService", "name": "db"}))

    assert _config(v) == before


def test_pseudo_headers_grpc_has_not_at_routing_are_matched_against_the_target() -> None:
    """gRPC routes a call before its `:authority` (the target, unless the call sets one),
    `:method` (POST) and `:scheme` (http: a proxyless client has no mTLS) are added, so a
    matcher on them would see them absent where Envoy sees them: each is decided here,
    per target, the route kept without it or left out."""
    v, projection = view()
    apply(v, projection, route(
        "pseudo",
        rule({"path": {"type": "PathPrefix", "value": "/a"},
              "headers": [{"name": ":Authority", "value": "backend:8080"},
                          {"name": "x-v", "value": "1"}]},
             backendRefs=to(("backend-v2", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/b"},
              "headers": [{"name": ":method", "value": "GET"}]},
             backendRefs=to(("backend-v2", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/c"},
              "headers": [{"name": ":scheme", "type": "RegularExpression", "value": "https?"},
                          {"name": ":authority", "type": "Prefix", "value": "backend"}]},
             backendRefs=to(("backend-v2", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/d"},
              "headers": [{"name": ":authority", "type": "Absent"}]},
             backendRefs=to(("backend-v2", 1)))))

    config = _config(v)

    assert [r["match"] for r in _routes(config, "backend:8080")] == [
        {"safeRegex": {"regex": "/a(/.*)?"},
         "headers": [{"name": "x-v", "stringMatch": {"exact": "1"}}]},
        {"safeRegex": {"regex": "/c(/.*)?"}},
        {"prefix": "/"}]
    assert [r["match"] for r in _routes(config, "backend.svc.mesh.local:8080")] == [
        {"safeRegex": {"regex": "/c(/.*)?"}},
        {"prefix": "/"}]
