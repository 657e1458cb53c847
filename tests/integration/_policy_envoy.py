"""What the policy tests with a real Envoy share (MeshTimeout, MeshRetry, MeshCircuitBreaker):
web's sidecar with an outbound to `backend` (one Dataplane, `http`), a backend whose answers
the test decides, and the route of an active listener."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    ControlPlane,
    Envoy,
    free_port,
    run_envoy,
    wait_for,
)

BACKEND = "127.0.0.2"


def _dataplane(name: str, address: str, port: int, service: str, protocol: str = "http"
               ) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "main", "protocol": protocol,
                 "tags": {"kuma.io/service": service}}]}}


@contextlib.contextmanager
def web_to_backend(cp: ControlPlane, tmp_path: Path, port: int, protocol: str = "http",
                   backends: tuple[str, ...] = (BACKEND,)) -> Iterator[tuple[Envoy, str, str]]:
    """The mesh, `backend-<i>` at each of `backends`:`port` (its inbound of `protocol`) and
    web's Envoy, once backend's endpoints are in its cluster; yields (web's Envoy, backend's
    VIP, the outbound listener's name)."""
    cp.apply({"type": "Mesh", "name": "default"})
    for i, address in enumerate(backends, start=1):
        cp.apply(_dataplane(f"backend-{i}", address, port, "backend", protocol))
    cp.apply(_dataplane("web-1", "127.0.0.4", free_port("127.0.0.4"), "web"))
    vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
    bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                  xds_port=cp.xds_port, admin_port=0,
                                  token=cp.dataplane_token("web-1"))
    with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
        wait_for(lambda: envoy.stats("default_backend___msvc_").get(
            f"cluster.default_backend___msvc_{port}.membership_healthy") == len(backends),
            timeout=60, what="the backends in the cluster")
        yield envoy, vip, f"outbound:{vip}:{port}"


def active_route(config: dict[str, Any], listener: str) -> dict[str, Any] | None:
    """The route action of `listener` in Envoy's listeners config dump, once it is active."""
    for entry in config.get("configs", []):
        active = entry.get("active_state", {}).get("listener", {})
        if active.get("name") == listener:
            hcm = active["filter_chains"][0]["filters"][0]["typed_config"]
            route: dict[str, Any] = hcm["route_config"]["virtual_hosts"][0]["routes"][0][
                "route"]
            return route
    return None


def get(url: str) -> httpx.Response:
    with httpx.Client(timeout=30) as client:
        return client.get(url)


def active_routes(envoy: Envoy, listener: str) -> list[dict[str, Any]]:
    """The routes of `listener` once it is active in `envoy` ([] before)."""
    for entry in envoy.config_dump("dynamic_listeners").get("configs", []):
        active = entry.get("active_state", {}).get("listener", {})
        if active.get("name") == listener:
            hcm = active["filter_chains"][0]["filters"][0]["typed_config"]
            routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
            return routes
    return []
