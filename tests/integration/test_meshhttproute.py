"""A MeshHTTPRoute in a real Envoy: web's requests to `backend` under the prefix `/v2` reach a
second service, `backend-v2`, with the prefix rewritten away and a header set that the
backend sees; the others still reach `backend`; a path with dot segments is routed as the
path it resolves to; a 50/50 split reaches both (resources.http_routes); backendRefs that
do not resolve answer 500 for their share. Without the policy every request reaches
`backend`."""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import free_port, meshlog_up, serving, wait_for
from tests.integration._policy_envoy import BACKEND, active_routes, get, web_to_backend

pytestmark = pytest.mark.integration

BACKEND_V2 = "127.0.0.3"


@contextlib.contextmanager
def _backend(name: str, host: str, port: int) -> Iterator[None]:
    """An HTTP server that answers every GET with its name, the path and the `x-version`
    header it was sent, as JSON."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"name": name, "path": self.path,
                               "x-version": self.headers.get("x-version")}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer((host, port), Handler)):
        yield


def _answer(url: str) -> dict[str, Any]:
    response = get(url)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _raw_answer(host: str, port: int, path: str) -> dict[str, Any]:
    """`path` sent as written (HTTP clients resolve dot segments before sending)."""
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        answer: dict[str, Any] = json.loads(body)
        return answer
    finally:
        connection.close()




_ROUTE = {"type": "MeshHTTPRoute", "mesh": "default", "name": "web-to-backend", "spec": {
    "targetRef": {"kind": "MeshSubset", "tags": {"kuma.io/service": "web"}},
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/v2"}}],
         "default": {
             "backendRefs": [{"kind": "MeshService", "name": "backend-v2"}],
             "filters": [
                 {"type": "RequestHeaderModifier",
                  "requestHeaderModifier": {"set": [{"name": "x-version", "value": "v2"}]}},
                 {"type": "URLRewrite", "urlRewrite": {"path": {
                     "type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/split"}}],
         "default": {"backendRefs": [
             {"kind": "MeshService", "name": "backend", "weight": 50},
             {"kind": "MeshService", "name": "backend-v2", "weight": 50}]}}]}]}}


def test_requests_are_routed_by_path_rewritten_and_split(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _backend("backend", BACKEND, port), _backend("backend-v2", BACKEND_V2, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        cp.apply({"type": "Dataplane", "mesh": "default", "name": "backend-v2-1",
                  "networking": {"address": BACKEND_V2, "inbound": [
                      {"port": port, "name": "main", "protocol": "http",
                       "tags": {"kuma.io/service": "backend-v2"}}]}})
        v2_cluster = f"default_backend-v2___msvc_{port}"
        wait_for(lambda: envoy.stats(v2_cluster).get(
            f"cluster.{v2_cluster}.membership_healthy") == 1,
            timeout=60, what="backend-v2's endpoint in web's Envoy")

        assert _answer(f"http://{vip}:{port}/v2/items")["name"] == "backend"

        cp.apply(_ROUTE)
        wait_for(lambda: len(active_routes(envoy, listener)) == 3, timeout=60,
                 what="the MeshHTTPRoute's routes in web's Envoy")

        assert _answer(f"http://{vip}:{port}/v2/items") == {
            "name": "backend-v2", "path": "/items", "x-version": "v2"}
        assert _answer(f"http://{vip}:{port}/v20") == {
            "name": "backend", "path": "/v20", "x-version": None}  # a prefix is whole segments
        # routed as the path the backend reads, never `/v20`'s route with `/v2/items` behind it
        assert _raw_answer(vip, port, "/v20/../v2/items") == {
            "name": "backend-v2", "path": "/items", "x-version": "v2"}
        reached = set()
        for _ in range(200):  # both are reached long before: 2**-199 that one is not
            reached.add(_answer(f"http://{vip}:{port}/split")["name"])
            if len(reached) == 2:
                break
        assert reached == {"backend", "backend-v2"}


def _rewrite(prefix: str, **path: str) -> dict[str, Any]:
    return {"matches": [{"path": {"type": "PathPrefix", "value": prefix}}], "default": {
        "filters": [{"type": "URLRewrite", "urlRewrite": {"path": path}}]}}


_REWRITES = {"type": "MeshHTTPRoute", "mesh": "default", "name": "rewrites", "spec": {"to": [
    {"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        _rewrite("/strip", type="ReplacePrefixMatch", replacePrefixMatch=""),
        _rewrite("/dir", type="ReplacePrefixMatch", replacePrefixMatch="/v3/"),
        _rewrite("/swap", type="ReplacePrefixMatch", replacePrefixMatch="/v3"),
        _rewrite("/full", type="ReplaceFullPath", replaceFullPath="/a\\1b")]}]}}


_REWRITTEN = {
    "/strip/x": "/x", "/strip": "/",  # Gateway API: an empty replacement is `/`
    "/dir/x": "/v3/x", "/dir": "/v3/",
    "/swap/x": "/v3/x", "/swap": "/v3",
    "/full/x?q=1": "/a\\1b?q=1",  # the replacement as written (no RE2 group), query kept
}


def test_path_rewrites_reach_the_backend_as_gateway_api_says(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _backend("backend", BACKEND, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        cp.apply(_REWRITES)
        wait_for(lambda: len(active_routes(envoy, listener)) == 5, timeout=60,
                 what="the rewrites' routes in web's Envoy")

        seen = {path: _raw_answer(vip, port, path)["path"] for path in _REWRITTEN}

        assert seen == _REWRITTEN


_UNRESOLVED = {"type": "MeshHTTPRoute", "mesh": "default", "name": "unresolved", "spec": {
    "to": [{"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/gone"}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "nowhere"}]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/half"}}],
         "default": {"backendRefs": [{"kind": "MeshService", "name": "backend"},
                                     {"kind": "MeshService", "name": "nowhere"}]}}]}]}}
_TIMEOUT = {"type": "MeshTimeout", "mesh": "default", "name": "t", "spec": {"to": [
    {"targetRef": {"kind": "MeshService", "name": "backend"},
     "default": {"http": {"requestTimeout": "5s"}}}]}}


def test_unresolved_backends_answer_500_for_their_share(tmp_path: Path) -> None:
    """As Kuma after 2.14: `/gone`'s one backend does not resolve, so it answers 500 (its
    requests used to take the default route to backend); `/half`'s does for half of its
    requests, backend for the others; a MeshTimeout on the same routes is taken (it used to
    turn a 500 route into one without a cluster, which Envoy refuses)."""
    port = free_port(BACKEND)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            _backend("backend", BACKEND, port), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        cp.apply(_TIMEOUT)
        cp.apply(_UNRESOLVED)
        wait_for(lambda: len(active_routes(envoy, listener)) == 4, timeout=60,
                 what="the routes (two of them 500s) in web's Envoy")

        assert get(f"http://{vip}:{port}/gone/x").status_code == 500
        assert _answer(f"http://{vip}:{port}/other")["name"] == "backend"
        seen = set()
        for _ in range(200):  # both are seen long before: 2**-199 that one is not
            seen.add(get(f"http://{vip}:{port}/half").status_code)
            if len(seen) == 2:
                break
        assert seen == {200, 500}
