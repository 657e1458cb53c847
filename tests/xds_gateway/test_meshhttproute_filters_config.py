"""MeshHTTPRoute's RequestRedirect and RequestMirror filters on a proxy's L7 outbound
(xds_gateway.resources.http_routes, `_route_filters`): a redirect answered by Envoy with no
cluster, a mirror's policy and its cluster sent with it (DESIGN invariant 8), an unresolved
mirror left out. A real Envoy answering and mirroring:
tests/integration/test_meshhttproute_filters.py."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import envoy_binary
from tests.xds_gateway._bootstrap import static_bootstrap
from tests.xds_gateway._outbound import apply, dataplane, view_of
from tests.xds_gateway._routes import BACKEND, OWN, V2, route, routes, rule, to, view, where
from xds_gateway.resources._route_filters import mirror_fraction
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.resources.snapshot import build_snapshot
from xds_gateway.type_urls import CLUSTER, ENDPOINT, LISTENER

_V2_PATH = {"path": {"type": "PathPrefix", "value": "/v2"}}


def _redirect(**fields: Any) -> dict[str, Any]:
    return {"type": "RequestRedirect", "requestRedirect": fields}


def _mirror(name: str, **fields: Any) -> dict[str, Any]:
    return {"type": "RequestMirror", "requestMirror": {
        "backendRef": {"kind": "MeshService", "name": name}, **fields}}


def test_a_redirect_is_answered_by_envoy_with_every_part_kuma_sets() -> None:
    v, projection = view()
    apply(v, projection, route("moved", rule(_V2_PATH, filters=[
        _redirect(scheme="https", hostname="new.example", port=8443, statusCode=308,
                  path={"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v3"}),
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "set": [{"name": "x-moved", "value": "yes"}]}}])))

    first, default = routes(v)

    assert "route" not in first and "directResponse" not in first
    assert first["redirect"] == {"schemeRedirect": "https", "hostRedirect": "new.example",
                                 "portRedirect": 8443, "prefixRewrite": "/v3",
                                 "responseCode": "PERMANENT_REDIRECT"}
    assert first["responseHeadersToAdd"][0]["header"] == {"key": "x-moved", "value": "yes"}
    assert where(default) == OWN


def test_a_redirect_defaults_to_302_and_rewrites_a_full_path_as_a_url_rewrite() -> None:
    v, projection = view()
    apply(v, projection, route("moved", rule(
        {"path": {"type": "Exact", "value": "/old"}},
        filters=[_redirect(path={"type": "ReplaceFullPath", "replaceFullPath": "/new"})])))

    redirect = routes(v)[0]["redirect"]

    assert redirect["responseCode"] == "FOUND"
    assert redirect["regexRewrite"] == {"pattern": {"regex": "^.*$"}, "substitution": "/new"}


def test_a_redirect_sends_to_no_cluster_even_merged_with_another_policys_backends() -> None:
    v, projection = view()
    before = {c["name"] for c in config_json(v, "default", "web-1", ResourceCache())["clusters"]}
    # rules with equal matches merge field by field: one policy's backendRefs, the more
    # specific one's redirect; Envoy answers the redirect, so backend-v2 is not sent
    apply(v, projection, route("a", rule(_V2_PATH, backendRefs=to(("backend-v2", 1)))))
    apply(v, projection, route("b", rule(_V2_PATH, filters=[_redirect(hostname="x.example")]),
                               target={"kind": "MeshService", "name": "web"}))

    config = config_json(v, "default", "web-1", ResourceCache())

    assert [("redirect" in r) for r in routes(v)] == [True, False]
    assert {c["name"] for c in config["clusters"]} == before


def test_a_mirror_copies_to_its_backends_cluster_which_the_proxy_is_sent() -> None:
    v, projection = view()
    apply(v, projection, route("shadow", rule(_V2_PATH, filters=[
        _mirror("backend-v2", percentage="12.5")])))

    first = routes(v)[0]
    config = config_json(v, "default", "web-1", ResourceCache())

    assert where(first) == OWN  # the client's answer: the rule's own backend
    assert first["route"]["requestMirrorPolicies"] == [{
        "cluster": V2, "runtimeFraction": {"defaultValue": {
            "numerator": 1250, "denominator": "TEN_THOUSAND"}}}]
    assert V2 in {c["name"] for c in config["clusters"]}
    assert V2 in {e["name"] for e in config["endpoints"]}


def test_a_mirror_the_proxy_cannot_reach_otherwise_gets_its_cluster_and_listener_ref() -> None:
    """Invariant 8 where it matters: web reaches only `backend`, so backend-v2's cluster is
    sent for the mirror alone, and the listener names it among its refs (a cluster the
    proxy's acknowledged listeners still use is removed last, xds-rules.md 10)."""
    web = dataplane("web-1", "10.0.0.9", 7070, "web")
    web["networking"]["transparentProxying"] = {"reachableBackends": {"refs": [BACKEND]}}
    v, projection = view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                            dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"), web)
    before = build_snapshot(v, "default", "web-1", ResourceCache())
    apply(v, projection, route("shadow", rule(_V2_PATH, filters=[_mirror("backend-v2")])))

    after = build_snapshot(v, "default", "web-1", ResourceCache())

    assert V2 not in before.of(CLUSTER)
    assert V2 in after.of(CLUSTER) and V2 in after.of(ENDPOINT)
    (outbound,) = [r for name, r in after.of(LISTENER).items()
                   if name.startswith("outbound:") and r.refs and OWN in r.refs]
    assert outbound.refs == {OWN, V2}


def test_mirrors_go_on_each_route_of_the_rule_and_not_on_its_500_share() -> None:
    v, projection = view()
    apply(v, projection, route("shadow", rule(
        _V2_PATH, {"method": "POST"},
        filters=[_mirror("backend-v2"), _mirror("nowhere", percentage=50)],
        backendRefs=[*to(("backend", 1)), {"kind": "MeshService", "name": "gone"}])))

    got = [(where(r), [m["cluster"] for m in r.get("route", {}).get(
        "requestMirrorPolicies", [])]) for r in routes(v)]

    # `nowhere` is no MeshService: that mirror is left out; `gone` answers 500 for its half
    assert got == [("500 50/HUNDRED", []), (OWN, [V2]), ("500 50/HUNDRED", []), (OWN, [V2]),
                   (OWN, [])]
    assert "runtimeFraction" not in routes(v)[1]["route"]["requestMirrorPolicies"][0]


def test_a_mirror_to_a_tcp_port_or_a_missing_port_is_left_out() -> None:
    v, projection = view()
    apply(v, projection, route("shadow", rule(_V2_PATH, filters=[
        _mirror("db"), {"type": "RequestMirror", "requestMirror": {"backendRef": {
            "kind": "MeshService", "name": "backend-v2", "port": 9999}}}])))

    assert "requestMirrorPolicies" not in routes(v)[0]["route"]


@pytest.mark.parametrize(("percentage", "fraction"), [
    (None, None), (0, (0, 100)), (50, (50, 100)), ("100", (100, 100)),
    ("12.5", (1250, 10_000)), (0.01, (1, 10_000)), ("33.333", (333330, 1_000_000)),
    ("0.00005", (1, 1_000_000)), ("0.00004", (0, 1_000_000)),
])
def test_a_mirror_percentage_converts_as_kumas(percentage: Any,
                                               fraction: tuple[int, int] | None) -> None:
    assert mirror_fraction(percentage) == fraction


@pytest.mark.integration
def test_envoy_validates_redirects_and_mirrors(tmp_path: Path) -> None:
    """Envoy checks a static route's clusters exist (`validate_clusters`): the mirror's is
    there."""
    v, projection = view()
    apply(v, projection, route("filters",
                               rule(_V2_PATH, filters=[_redirect(
                                   scheme="https", port=443, statusCode=301, path={
                                       "type": "ReplacePrefixMatch", "replacePrefixMatch": ""})]),
                               rule({"path": {"type": "Exact", "value": "/a"}}, filters=[
                                   _redirect(path={"type": "ReplaceFullPath",
                                                   "replaceFullPath": "/b"})]),
                               rule({"method": "PUT"}, filters=[
                                   _mirror("backend-v2", percentage="0.5"),
                                   _mirror("backend-v2")])))
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(static_bootstrap(config_json(v, "default", "web-1",
                                                            ResourceCache()))))

    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stdout + result.stderr
