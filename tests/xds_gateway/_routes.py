"""What the MeshHTTPRoute config tests share (and the tests of what other outbound policies
do to its routes): a mesh with `backend`, `backend-v2`, `db` (tcp) and `web`, policies about
`backend`, and the routes of web's outbound to it."""

from __future__ import annotations

from typing import Any

from events import MESH_HTTP_ROUTE, MESH_RETRY, MESH_TIMEOUT
from tests._policy_samples import resource
from tests.xds_gateway._outbound import apply, dataplane, view_of
from xds_gateway.resources.cache import ResourceCache
from xds_gateway.resources.config_dump import config_json
from xds_gateway.view import ProjectionView

BACKEND = {"kind": "MeshService", "name": "backend"}
WEB = {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}}
OWN = "default_backend___msvc_8080"
V2 = "default_backend-v2___msvc_8080"


def view(*more: dict[str, Any]) -> tuple[ProjectionView, Any]:
    return view_of(dataplane("backend-1", "10.0.0.1", 8080, "backend"),
                   dataplane("backend-v2-1", "10.0.0.2", 8080, "backend-v2"),
                   dataplane("db-1", "10.0.0.3", 5432, "db", "tcp"),
                   dataplane("web-1", "10.0.0.9", 7070, "web"), *more)


def route(name: str, *rules: dict[str, Any], target: dict[str, Any] | None = None,
          to: dict[str, Any] = BACKEND) -> Any:
    spec: dict[str, Any] = {"to": [{"targetRef": to, "rules": list(rules)}]}
    if target is not None:
        spec["targetRef"] = target
    return resource(MESH_HTTP_ROUTE, name, spec=spec)


def rule(*matches: dict[str, Any], **default: Any) -> dict[str, Any]:
    return {"matches": list(matches), "default": default}


def to(*services: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"kind": "MeshService", "name": s, "weight": w} for s, w in services]


def routes(view: ProjectionView) -> list[dict[str, Any]]:
    config = config_json(view, "default", "web-1", ResourceCache())
    routes: list[dict[str, Any]] = next(
        hcm["routeConfig"]["virtualHosts"][0]["routes"] for hcm in hcms(config)
        if hcm["routeConfig"]["name"] == OWN)  # backend's outbound
    return routes


def hcms(config: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [f["typedConfig"] for r in config["listeners"] if r["name"].startswith("outbound:")
            for f in r["resource"]["filterChains"][0]["filters"]
            if "routeConfig" in f["typedConfig"]]


def where(route: dict[str, Any]) -> Any:
    """A route's cluster, or its clusters' weights, or `500` (a direct response), with the
    share of requests it takes (`500 50/HUNDRED`)."""
    if "directResponse" in route:
        assert route["directResponse"] == {"status": 500}
        share = route["match"].get("runtimeFraction", {}).get("defaultValue")
        return "500" if share is None else \
            f"500 {share.get('numerator', 0)}/{share.get('denominator', 'HUNDRED')}"
    action = route["route"]
    if "cluster" in action:
        return action["cluster"]
    return {c["name"]: c["weight"] for c in action["weightedClusters"]["clusters"]}


def failing(view: ProjectionView, projection: Any) -> None:
    """Routes that answer 500 (all, a share) with header modifiers and a rewrite, and a
    MeshTimeout and a MeshRetry over them."""
    modifiers = [
        {"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "x-a", "value": "1"}]}},
        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {
            "add": [{"name": "x-b", "value": "2"}]}},
        {"type": "URLRewrite", "urlRewrite": {"hostname": "h.example", "path": {
            "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    apply(view, projection, route(
        "failing",
        rule({"path": {"type": "PathPrefix", "value": "/gone"}}, filters=modifiers,
              backendRefs=to(("nowhere", 1))),
        rule({"path": {"type": "PathPrefix", "value": "/some"}}, filters=modifiers,
              backendRefs=to(("nowhere", 1), ("backend-v2", 2)))),
        resource(MESH_TIMEOUT, "t", spec={"to": [{"targetRef": BACKEND, "default": {
            "http": {"requestTimeout": "3s"}}}]}),
        resource(MESH_RETRY, "r", spec={"to": [{"targetRef": BACKEND, "default": {
            "http": {"numRetries": 2}}}]}))
