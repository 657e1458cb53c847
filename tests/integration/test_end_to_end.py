"""The whole path with real parts: API -> JetStream -> projector -> gateway -> a real Envoy.

Two real HTTP backends are registered as `backend` Dataplanes; a `web` sidecar Envoy gets all
of its config from the gateway. The IPAM CIDR is inside 127.0.0.0/8 so Envoy can bind VIPs
without iptables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    meshlog_up,
    run_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration

BACKENDS = {"backend-1": "127.0.0.2", "backend-2": "127.0.0.3"}


def _dataplane(name: str, address: str, port: int, service: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "name": "http", "protocol": "http",
                 "tags": {"kuma.io/service": service}}]}}


def test_dataplanes_become_working_routes_in_envoy(tmp_path: Path) -> None:
    port = free_port_on_all(list(BACKENDS.values()))
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend(BACKENDS["backend-1"], port, "backend-1"), \
            http_backend(BACKENDS["backend-2"], port, "backend-2"):
        cp.apply({"type": "Mesh", "name": "default"})
        for name, address in BACKENDS.items():
            cp.apply(_dataplane(name, address, port, "backend"))
        web_port = free_port("127.0.0.4")
        cp.apply(_dataplane("web-1", "127.0.0.4", web_port, "web"))

        backend = cp.meshservice("backend")
        vip = backend["status"]["vips"][0]["ip"]
        assert vip.startswith("127.100.")
        assert backend["status"]["addresses"][0]["hostname"] == "backend.svc.mesh.local"

        bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-1"))
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            wait_for(lambda: f"outbound:{vip}:{port}" in envoy.listeners(), timeout=60,
                     what="the backend VIP listener in Envoy")
            url = f"http://{vip}:{port}/"

            # both backends answer through the VIP
            seen: set[str] = set()

            def both_seen() -> bool:
                seen.add(fetch(url) or "")
                return {"backend-1", "backend-2"} <= seen

            wait_for(both_seen, timeout=30, what="responses from both backends")

            # deregister backend-2: then only backend-1 answers. How soon is a figure of
            # `meshlog bench propagation`, not a test's assertion: a fold, a push and Envoy's
            # update take far longer on a loaded CI machine than on an idle one
            assert cp.api.delete("/meshes/default/dataplanes/backend-2").status_code == 200

            def only_backend_1() -> bool:
                return all(fetch(url) == "backend-1" for _ in range(10))

            wait_for(only_backend_1, timeout=30, interval=0.01,
                     what="traffic to reach only backend-1")

            # a MeshService applied later gets a listener
            cp.apply({"type": "MeshService", "mesh": "default", "name": "backend-api",
                      "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "backend"}},
                               "ports": [{"port": 9090, "targetPort": "http",
                                          "appProtocol": "http"}]}})
            api_vip = cp.meshservice("backend-api")["status"]["vips"][0]["ip"]
            wait_for(lambda: f"outbound:{api_vip}:9090" in envoy.listeners(), timeout=30,
                     what="the listener of the MeshService applied later")
            assert wait_for(lambda: fetch(f"http://{api_vip}:9090/"), timeout=30,
                            what="traffic through the later MeshService") == "backend-1"

            rejected = envoy.stats("update_rejected")
            assert rejected, "Envoy reported no update_rejected counters"
            assert all(v == 0 for v in rejected.values()), rejected
