"""MeshHTTPRoute's RequestRedirect and RequestMirror in a real Envoy: web's requests to
`backend` under `/moved` are answered by its Envoy with a redirect (status and `Location`
built from the filter), and never reach a backend; those under `/mirrored` reach
`backend`, whose answer the client gets, and a copy of each reaches `shadow`, the mirror's
MeshService (resources.http_routes, `_route_filters`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.harness import answering_backend, free_port, meshlog_up, wait_for
from tests.integration._policy_envoy import BACKEND, active_routes, get, web_to_backend

pytestmark = pytest.mark.integration

SHADOW = "127.0.0.3"

_ROUTE = {"type": "MeshHTTPRoute", "mesh": "default", "name": "filters", "spec": {"to": [
    {"targetRef": {"kind": "MeshService", "name": "backend"}, "rules": [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/moved"}}],
         "default": {"filters": [{"type": "RequestRedirect", "requestRedirect": {
             "scheme": "https", "hostname": "new.example", "port": 8443, "statusCode": 301,
             "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/v3"}}}]}},
        {"matches": [{"path": {"type": "PathPrefix", "value": "/mirrored"}}],
         "default": {"filters": [{"type": "RequestMirror", "requestMirror": {
             "backendRef": {"kind": "MeshService", "name": "shadow"}}}]}}]}]}}


class _Seen:
    """The paths under the route's prefixes a backend was sent, from its server's
    threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._paths: list[str] = []

    def answer(self, name: str) -> Callable[[str], tuple[int, bytes]]:
        def answer(path: str) -> tuple[int, bytes]:
            if path.startswith(("/moved", "/mirrored")):
                with self._lock:
                    self._paths.append(path)
            return 200, name.encode()
        return answer

    @property
    def paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)




def test_a_redirect_is_answered_and_a_mirror_copies_requests(tmp_path: Path) -> None:
    port = free_port(BACKEND)
    backend, shadow = _Seen(), _Seen()
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            answering_backend(BACKEND, port, backend.answer("backend")), \
            answering_backend(SHADOW, port, shadow.answer("shadow")), \
            web_to_backend(cp, tmp_path, port) as (envoy, vip, listener):
        cp.apply({"type": "Dataplane", "mesh": "default", "name": "shadow-1",
                  "networking": {"address": SHADOW, "inbound": [
                      {"port": port, "name": "main", "protocol": "http",
                       "tags": {"kuma.io/service": "shadow"}}]}})
        cp.apply(_ROUTE)
        shadow_cluster = f"default_shadow___msvc_{port}"
        wait_for(lambda: len(active_routes(envoy, listener)) == 3, timeout=60,
                 what="the redirect's and the mirror's routes in web's Envoy")
        wait_for(lambda: envoy.stats(shadow_cluster).get(
            f"cluster.{shadow_cluster}.membership_healthy") == 1,
            timeout=60, what="the mirror's endpoint in web's Envoy")

        moved = get(f"http://{vip}:{port}/moved/page?q=1")

        assert moved.status_code == 301
        assert moved.headers["location"] == "https://new.example:8443/v3/page?q=1"
        assert backend.paths == [] and shadow.paths == []  # Envoy answered it

        mirrored = get(f"http://{vip}:{port}/mirrored/item")

        assert (mirrored.status_code, mirrored.text) == (200, "backend")
        assert backend.paths == ["/mirrored/item"]
        wait_for(lambda: shadow.paths == ["/mirrored/item"], timeout=30,
                 what="the mirrored copy at shadow")
