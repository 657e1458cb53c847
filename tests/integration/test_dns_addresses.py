"""Dataplanes whose address is a DNS name, against `meshlog up` and real Envoys.

`backend-1` gives `localhost` as its address (as an ECS task's Dataplane gives a name that
gets its IP later); its sidecar Envoy forwards to a real HTTP app. The gateway resolves the
name: `web-1`'s Envoy gets the endpoint as 127.0.0.1 in EDS and `backend-1`'s Envoy binds its
inbound listener there, so traffic goes web's Envoy -> the VIP -> backend's Envoy -> the app.
Before, the endpoint was left out of EDS and nothing reached the app.

A `meshlog gateway` process pointed at a DNS server the test runs (`--dns-server`) follows
the answer for a name: traffic moves from one app to another without a change in the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.cli.bootstrap import sidecar_bootstrap
from tests._dns_server import dns_server_thread
from tests.harness import (
    ControlPlane,
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    meshlog_up,
    run_envoy,
    run_gateway_process,
    wait_for,
)

pytestmark = pytest.mark.integration

WEB = "127.0.0.4"


def _dataplane(name: str, address: str, port: int, service: str, **inbound: int
               ) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}, **inbound}]}}


def _bootstrap(cp: ControlPlane, name: str, xds_port: int | None = None) -> dict[str, Any]:
    return sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                             xds_port=xds_port or cp.xds_port, admin_port=0,
                             token=cp.dataplane_token(name))


def test_a_dataplane_named_localhost_gets_traffic_through_envoy(tmp_path: Path) -> None:
    inbound, app, web_port = free_port(), free_port(), free_port(WEB)
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend("127.0.0.1", app, "backend-1 app"):
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", "localhost", inbound, "backend", servicePort=app))
        cp.apply(_dataplane("web-1", WEB, web_port, "web"))
        # the read model keeps the name as given
        assert cp.api.get("/meshes/default/dataplanes/backend-1").json()[
            "networking"]["address"] == "localhost"
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        with run_envoy(_bootstrap(cp, "backend-1"), tmp_path / "envoy", "backend-1") as backend, \
                run_envoy(_bootstrap(cp, "web-1"), tmp_path / "envoy", "web-1") as web:
            wait_for(lambda: f"inbound:127.0.0.1:{inbound}" in backend.listeners(), timeout=60,
                     what="backend-1's inbound listener on the answer for localhost")
            wait_for(lambda: f"outbound:{vip}:{inbound}" in web.listeners(), timeout=60,
                     what="the backend VIP listener in web-1's Envoy")
            assert wait_for(lambda: fetch(f"http://{vip}:{inbound}/"), timeout=60,
                            what="traffic from web-1 through backend-1's Envoy to the app"
                            ) == "backend-1 app"
            clusters = web.admin.get("/clusters").text
            assert f"default_backend___msvc_{inbound}::127.0.0.1:{inbound}::" in clusters
            bound = backend.config_dump("dynamic_listeners")["configs"]
            [listener] = [c["active_state"]["listener"] for c in bound
                          if c["name"] == f"inbound:127.0.0.1:{inbound}"]
            assert listener["address"]["socket_address"]["address"] == "127.0.0.1"
            for envoy in (backend, web):
                rejected = envoy.stats("update_rejected")
                assert rejected and all(v == 0 for v in rejected.values()), rejected


def test_a_gateway_follows_the_answer_of_its_dns_server(tmp_path: Path) -> None:
    port, web_port = free_port_on_all(["127.0.0.2", "127.0.0.3"]), free_port(WEB)
    with dns_server_thread() as dns, \
            meshlog_up(tmp_path / "cp", "--vip-cidr", "127.100.0.0/16") as cp, \
            http_backend("127.0.0.2", port, "first"), http_backend("127.0.0.3", port, "second"):
        dns.records["backend.test"] = ["127.0.0.2"]
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("backend-1", "backend.test", port, "backend"))
        cp.apply(_dataplane("web-1", WEB, web_port, "web"))
        vip = cp.meshservice("backend")["status"]["vips"][0]["ip"]
        with run_gateway_process(cp.where["nats"], tmp_path / "gw", "gw", "--nats-creds",
                                 str(cp.creds("gateway")), "--dns-cache-ttl", "100ms",
                                 "--dns-server", f"127.0.0.1:{dns.port}") as gateway, \
                run_envoy(_bootstrap(cp, "web-1", gateway.port), tmp_path / "envoy",
                          "web-1") as web:
            url = f"http://{vip}:{port}/"
            assert wait_for(lambda: fetch(url), timeout=60,
                            what="traffic to the first answer") == "first"
            seq = cp.stream_last_seq()
            dns.records["backend.test"] = ["127.0.0.3"]
            wait_for(lambda: fetch(url) == "second", timeout=60,
                     what="traffic to the second answer")
            assert cp.stream_last_seq() == seq  # nothing was written: the answer moved
            rejected = web.stats("update_rejected")
            assert rejected and all(v == 0 for v in rejected.values()), rejected
