"""What MeshHTTPRoutes do to a proxy's L7 outbounds (xds_gateway.resources.http_routes):
Kuma's precedence of routes, its merge of rules with equal matches across policies, the
default route, weighted backends (and their clusters, reachable or not), nothing without a
policy about the destination. The full config of one case: testdata/meshhttproute.*; a real
Envoy routing: tests/integration/test_meshhttproute.py; what every outbound policy kind does
alike: test_outbound_policy_config.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

from events import MESH_HTTP_ROUTE, MESH_TIMEOUT, InvalidResource, MeshHTTPRoute
from tests._policy_samples import document, resource
from tests.harness import envoy_binary
from tests.xds_gateway._bootstrap import static_bootstrap
from tests.xds_gateway._outbound import apply, dataplane, view_of
from tests.xds_gateway._routes import (
    BACKEND as _BACKEND,
)
from tests.xds_gateway._routes import (
    OWN as _OWN,
)
from tests.xds_gateway._routes import (
    V2 as _V2,
)
from tests.xds_gateway._routes import (
    WEB as _WEB,
)
from tests.xds_gateway._routes import (
    failing as _failing,
)
from tests.xds_gateway._routes import (
    hcms as _hcms,
)
from tests.xds_gateway._routes import (
    route as _route,
)
from tests.xds_gateway._routes import (
    routes as _routes,
)
from tests.xds_gateway._routes import (
    rule as _rule,
)
from tests.xds_gateway._routes import (
    to as _to,
)
from tests.xds_gateway._routes import (
    view as _view,
)
from tests.xds_gateway._routes import (
    where as _where,
)
from tests.xds_gateway.test_golden_config import compute
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json


def test_routes_follow_kumas_precedence_and_end_with_the_default_route() -> None:
    view, projection = _view()
    apply(view, projection, _route(
        "order",
        _rule({"headers": [{"name": "a", "value": "1"}]}),
        _rule({"headers": [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]}),
        _rule({"method": "GET"}),
        _rule({"path": {"type": "RegularExpression", "value": "/x.*"}}),
        _rule({"path": {"type": "PathPrefix", "value": "/a"}}),
        _rule({"path": {"type": "PathPrefix", "value": "/a/b"}}),
        _rule({"path": {"type": "Exact", "value": "/z"}}),
        _rule({"path": {"type": "PathPrefix", "value": "/q"},
               "queryParams": [{"type": "Exact", "name": "v", "value": "1"}]}),
        _rule({"path": {"type": "PathPrefix", "value": "/q"}, "method": "PUT"})))

    matches = [r["match"] for r in _routes(view)]

    assert [m.get("path") or m.get("pathSeparatedPrefix") or m.get("safeRegex", {}).get("regex")
            or m.get("prefix") for m in matches] == [
        "/z", "/a/b", "/q", "/q", "/a", "/x.*", "/", "/", "/", "/"]
    assert [h["name"] for h in matches[2]["headers"]] == [":method"]  # a method first
    assert "queryParameters" in matches[3]
    # no path: a method first, then more headers first
    assert [[h["name"] for h in m.get("headers", [])] for m in matches[6:]] == [
        [":method"], ["a", "b"], ["a"], []]
    assert matches[-1] == {"prefix": "/"}  # the default route: everything else, to backend


def test_rules_with_equal_matches_merge_across_policies_field_by_field() -> None:
    view, projection = _view()
    v2 = {"path": {"type": "PathPrefix", "value": "/v2"}}
    header = {"type": "RequestHeaderModifier", "requestHeaderModifier": {
        "set": [{"name": "x-version", "value": "v2"}]}}
    apply(view, projection,
          _route("mesh-wide", _rule(v2, filters=[header], backendRefs=_to(("backend", 1)))),
          # more specific: its backendRefs win, the mesh-wide filters stay
          _route("web", _rule(v2, backendRefs=_to(("backend-v2", 1))), target=_WEB))

    routes = _routes(view)

    assert len(routes) == 2
    assert _where(routes[0]) == _V2
    assert routes[0]["requestHeadersToAdd"][0]["header"] == {"key": "x-version",
                                                             "value": "v2"}


def test_empty_backend_refs_replace_an_earlier_policys_and_go_to_the_destination() -> None:
    view, projection = _view()
    v2 = {"path": {"type": "PathPrefix", "value": "/v2"}}
    apply(view, projection,
          _route("mesh-wide", _rule(v2, backendRefs=_to(("backend-v2", 1)))),
          _route("web", _rule(v2, backendRefs=[]), target=_WEB))

    # Kuma: no explicit backendRefs, the outbound's own service (never a route left out)
    assert [(r["match"].get("pathSeparatedPrefix"), _where(r)) for r in _routes(view)] == [
        ("/v2", _OWN), (None, _OWN)]


def test_within_one_policy_the_first_of_two_equal_rules_wins() -> None:
    view, projection = _view()
    v2 = {"path": {"type": "PathPrefix", "value": "/v2"}}
    apply(view, projection, _route("twice", _rule(v2, backendRefs=_to(("backend-v2", 1))),
                                   _rule(v2, backendRefs=_to(("backend", 1)))))

    assert [_where(r) for r in _routes(view)] == [_V2, _OWN]  # Kuma's reversed merge


def test_among_equal_precedence_the_more_specific_policys_rule_comes_first() -> None:
    view, projection = _view()
    apply(view, projection,
          _route("aaa", _rule({"headers": [{"name": "x-mesh", "value": "1"}]})),
          _route("zzz", _rule({"headers": [{"name": "x-web", "value": "1"}]}), target=_WEB))

    routes = _routes(view)

    assert [r["match"]["headers"][0]["name"] for r in routes[:2]] == ["x-web", "x-mesh"]


def test_within_one_kind_of_policy_the_alphabetically_first_name_comes_first() -> None:
    view, projection = _view()
    apply(view, projection,
          _route("bbb", _rule({"headers": [{"name": "x-b", "value": "1"}]})),
          _route("aaa", _rule({"headers": [{"name": "x-a", "value": "1"}]})))

    routes = _routes(view)

    assert [r["match"]["headers"][0]["name"] for r in routes[:2]] == ["x-a", "x-b"]


def test_unresolved_backend_refs_answer_500_for_their_share_as_kumas() -> None:
    """Kuma after 2.14 (kumahq/kuma#18146): the unresolved weight's share of a rule's
    requests is answered 500 by a route of the same match before it, all of them when no
    backendRef resolves (a weight of 0 counts for nothing)."""
    view, projection = _view()
    apply(view, projection, _route(
        "split",
        _rule({"path": {"type": "PathPrefix", "value": "/split"}},
              backendRefs=_to(("backend", 30), ("backend-v2", 70), ("backend-v2", 0),
                              ("nowhere", 5))),
        _rule({"path": {"type": "PathPrefix", "value": "/gone"}},
              backendRefs=_to(("nowhere", 1)))))

    routes = _routes(view)

    assert [_where(r) for r in routes] == [
        "500 47619/MILLION", {_OWN: 30, _V2: 70},  # 5 of 105: 4.7619 %
        "500", _OWN]  # /gone, then the default route
    assert routes[0]["match"]["pathSeparatedPrefix"] == "/split"
    assert routes[2]["match"]["pathSeparatedPrefix"] == "/gone"


def test_a_backend_ref_port_names_the_services_port_else_the_outbounds_number() -> None:
    view, projection = _view()
    apply(view, projection, _route("ports", _rule(
        {"path": {"type": "PathPrefix", "value": "/p"}},
        backendRefs=[{"kind": "MeshService", "name": "backend-v2", "port": 8080},
                     {"kind": "MeshService", "name": "backend-v2", "port": 9999}])))

    # 9999 is no port of backend-v2: unresolved, half the weight
    assert [_where(r) for r in _routes(view)] == ["500 50/HUNDRED", _V2, _OWN]


def test_a_backend_the_proxy_cannot_reach_otherwise_gets_its_cluster_and_endpoints() -> None:
    web = dataplane("web-1", "10.0.0.9", 7070, "web")
    web["networking"]["transparentProxying"] = {"reachableBackends": {"refs": [_BACKEND]}}
    view, projection = view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                               dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"), web)
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _route("v2", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=_to(("backend-v2", 1)))))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert _V2 not in {c["name"] for c in before["clusters"]}
    assert _V2 in {c["name"] for c in config["clusters"]}
    assert _V2 in {e["name"] for e in config["endpoints"]}
    assert len(config["listeners"]) == len(before["listeners"])  # no listener of its own


def test_a_catch_all_match_replaces_the_default_route() -> None:
    view, projection = _view()
    apply(view, projection, _route("all", _rule(
        {"path": {"type": "Exact", "value": "/a"}}, {"path": {"type": "PathPrefix", "value": "/"}},
        backendRefs=_to(("backend-v2", 1)))))

    assert [_where(r) for r in _routes(view)] == [_V2, _V2]  # one rule, two matches


def test_a_catch_all_whose_backends_do_not_resolve_answers_500_for_everything() -> None:
    view, projection = _view()
    apply(view, projection, _route("all", _rule(
        {"path": {"type": "PathPrefix", "value": "/"}}, backendRefs=_to(("nowhere", 1)))))

    assert [_where(r) for r in _routes(view)] == ["500"]  # no default route after it


def test_a_route_about_one_destination_leaves_the_others_byte_identical() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _route("other", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=_to(("backend", 1))),
        to={"kind": "MeshService", "name": "backend-v2"}))

    after = config_json(view, "default", "web-1", ResourceCache())

    changed = [a["name"] for a, b in zip(after["listeners"], before["listeners"], strict=True)
               if a != b]
    assert changed == [next(r["name"] for r in after["listeners"]
                            if r["resource"]["name"] == r["name"] and _V2 in json.dumps(r))]
    assert after["clusters"] == before["clusters"]


def test_a_tcp_destination_gets_no_routes_nor_their_backends() -> None:
    web = dataplane("web-1", "10.0.0.9", 7070, "web")
    web["networking"]["transparentProxying"] = {"reachableBackends": {"refs": [
        {"kind": "MeshService", "name": "db"}]}}
    view, projection = view_of(dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"),
                               dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"), web)
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _route("db", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=_to(("backend-v2", 1))),
        to={"kind": "MeshService", "name": "db"}))

    assert config_json(view, "default", "web-1", ResourceCache()) == before


def test_a_meshtimeout_applies_to_every_route() -> None:
    view, projection = _view()
    apply(view, projection, _route("v2", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=_to(("backend-v2", 1)))),
        resource(MESH_TIMEOUT, "t", spec={"to": [{"targetRef": _BACKEND, "default": {
            "http": {"requestTimeout": "3s"}}}]}))

    assert [r["route"]["timeout"] for r in _routes(view)] == ["3s", "3s"]


def test_a_500_route_keeps_its_header_modifiers_and_no_timeout_or_retry_replaces_it() -> None:
    view, projection = _view()
    _failing(view, projection)

    routes = _routes(view)

    # /gone's, then /some's share (1 of 3) and its backend; rules of one length as written
    assert [_where(r) for r in routes] == ["500", "500 333333/MILLION", _V2, _OWN]
    for r in routes[:2]:
        assert "route" not in r  # a MeshTimeout or MeshRetry setting one would replace it
        assert r["requestHeadersToAdd"][0]["header"] == {"key": "x-a", "value": "1"}
        assert r["responseHeadersToAdd"][0]["header"] == {"key": "x-b", "value": "2"}
    assert routes[2]["route"]["timeout"] == "3s"
    assert routes[2]["route"]["retryPolicy"]["numRetries"] == 2
    assert routes[2]["route"]["hostRewriteLiteral"] == "h.example"


@pytest.mark.integration
def test_envoy_validates_routes_that_answer_500(tmp_path: Path) -> None:
    view, projection = _view()
    _failing(view, projection)
    config = config_json(view, "default", "web-1", ResourceCache())
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(config)))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
def test_envoy_validates_the_golden_case(tmp_path: Path) -> None:
    """Every field a MeshHTTPRoute sets (testdata/meshhttproute: every match kind, weighted
    clusters, header modifiers, both path rewrites, a host rewrite) is one Envoy accepts."""
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(compute("meshhttproute"))))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr


def test_header_matches_follow_kumas_empty_prefix_and_first_of_a_name() -> None:
    view, projection = _view()
    apply(view, projection, _route("headers", _rule({"headers": [
        {"name": "x-p", "type": "Prefix", "value": ""},
        {"name": "x-a", "value": "1"}, {"name": "X-A", "value": "2"}]})))

    headers = _routes(view)[0]["match"]["headers"]

    # an empty prefix: any value (Envoy refuses one); x-a's second match is not ANDed in
    assert headers == [{"name": "x-p", "presentMatch": True},
                       {"name": "x-a", "stringMatch": {"exact": "1"}}]


def test_an_empty_prefix_replacement_drops_the_prefix_as_gateway_apis_slash() -> None:
    view, projection = _view()
    apply(view, projection, _route("strip", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}},
        filters=[{"type": "URLRewrite", "urlRewrite": {"path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": ""}}}])))

    action = _routes(view)[0]["route"]

    assert "prefixRewrite" not in action  # an empty one would be no rewrite at all
    assert action["regexRewrite"] == {"pattern": {"regex": "^/v2/*"}, "substitution": "/"}


def test_a_backend_ref_to_a_tcp_port_is_dropped_and_its_cluster_not_sent() -> None:
    view, projection = _view()
    before = config_json(view, "default", "web-1", ResourceCache())
    apply(view, projection, _route("to-db", _rule(
        {"path": {"type": "PathPrefix", "value": "/db"}},
        backendRefs=[{"kind": "MeshService", "name": "db", "port": 5432}])))

    config = config_json(view, "default", "web-1", ResourceCache())

    assert [_where(r) for r in _routes(view)] == ["500", _OWN]  # as Kuma's: unresolved
    assert [c["name"] for c in config["clusters"]] == [c["name"] for c in before["clusters"]]


def test_a_longer_prefix_counts_utf8_bytes_as_kumas_go_len() -> None:
    view, projection = _view()
    apply(view, projection, _route(
        "bytes", _rule({"path": {"type": "PathPrefix", "value": "/abcde"}}),
        _rule({"path": {"type": "PathPrefix", "value": "/ééé"}})))  # 4 characters, 7 bytes

    assert [r["match"].get("pathSeparatedPrefix") for r in _routes(view)] == [
        "/ééé", "/abcde", None]


def test_a_routed_listener_normalizes_the_path_and_an_unrouted_one_is_unchanged() -> None:
    view, projection = _view()
    apply(view, projection, _route("v2", _rule(
        {"path": {"type": "PathPrefix", "value": "/v2"}}, backendRefs=_to(("backend-v2", 1)))))

    config = config_json(view, "default", "web-1", ResourceCache())

    normalized = {hcm["routeConfig"]["name"]: hcm.get("normalizePath") for hcm in _hcms(config)}
    assert normalized[_OWN] is True
    assert normalized["default_backend-v2___msvc_8080"] is None  # no MeshHTTPRoute about it


_BAD_ROUTES: list[Any] = [
    pytest.param(_rule({"headers": [{"name": "x", "type": "Prefix", "value": ""}]}),
                 id="empty header prefix: valid, Kuma's present match"),
    pytest.param(_rule({"headers": [{"name": "x", "type": "RegularExpression", "value": ""}]}),
                 id="empty header regular expression"),
    pytest.param(_rule({"queryParams": [{"name": "x", "type": "RegularExpression",
                                         "value": ""}]}),
                 id="empty query parameter regular expression"),
    pytest.param(_rule({"headers": [{"name": "x\ny", "value": "1"}]}),
                 id="header name with a newline"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "x", "value": "a\r\nb"}]}}]), id="header value with CR LF"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "remove": ["x\0y"]}}]), id="removed header name with NUL"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}},
                       backendRefs=_to(("backend", 2**32 - 1), ("backend-v2", 1))),
                 id="weights over Envoy's total"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath",
                                                       "replaceFullPath": "/x"}}},
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                       "replacePrefixMatch": "/v3"}}}]),
                 id="two URLRewrites"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplacePrefixMatch",
                                                       "replacePrefixMatch": "/a\nb"}}}]),
                 id="prefix replacement with a newline"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "URLRewrite", "urlRewrite": {"path": {"type": "ReplaceFullPath",
                                                       "replaceFullPath": "/a\rb"}}}]),
                 id="full path replacement with a CR"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "add": [{"name": "x", "value": "v" * 16385}]}}]), id="header value over 16 KiB"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}}, filters=[
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "add": [{"name": "x", "value": "v" * 16384}]}}]), id="header value of 16 KiB"),
    pytest.param(_rule({"queryParams": [{"name": "q" * 1025, "type": "Exact", "value": "1"}]}),
                 id="query parameter name over 1 KiB"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}},
                       backendRefs=_to(("backend-v2", 2**32 - 1), ("backend-v2", 1),
                                       ("backend", 1))),
                 id="one cluster's weights over a weight's range"),
    pytest.param(_rule({"path": {"type": "PathPrefix", "value": "/v2"}},
                       backendRefs=_to(("backend", 2**31), ("backend-v2", 2**31 - 1))),
                 id="weights at Envoy's total"),
]


@pytest.mark.integration
@pytest.mark.parametrize("rule", _BAD_ROUTES)
def test_a_rule_is_refused_exactly_when_envoy_would_refuse_its_config(
        rule: dict[str, Any], tmp_path: Path) -> None:
    """The rules meshlog checks are the ones Envoy's: a valid route is one Envoy accepts (no
    NACK for a stored policy), and a refused one is one it would refuse."""
    spec = {"to": [{"targetRef": _BACKEND, "rules": [rule]}]}
    try:
        policy = resource(MESH_HTTP_ROUTE, "probe", spec=spec)
        refused = False
    except InvalidResource:
        policy = msgspec.convert(document(MESH_HTTP_ROUTE, "probe", spec=spec), MeshHTTPRoute)
        refused = True
    view, projection = _view()
    apply(view, projection, policy)
    try:
        config = config_json(view, "default", "web-1", ResourceCache())
    except ValueError:  # protobuf refuses a field out of range: no config at all
        assert refused
        return
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(config)))

    envoy = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                           capture_output=True, text=True, timeout=60)

    assert refused == (envoy.returncode != 0), envoy.stdout + envoy.stderr
