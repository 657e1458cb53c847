"""A MeshMultiZoneService with real parts, in one zone: `meshlog up` (embedded nats-server,
projector, gateway, API), real HTTP backends and real Envoys.

A standalone control plane (zone `default`) has two MeshServices its MeshMultiZoneService
selects (`redis` and `redis-b`, labelled `app: redis`): a client calling its VIP is served by
both (one priority: the local zone's), by `redis-b` alone while `redis`'s Dataplane is gone,
and by both again when it comes back. A transparent proxy resolves `redis.mzsvc.mesh.local`
to that VIP. Both CIDRs are inside 127.0.0.0/8 so Envoy can bind VIPs without iptables.

Failover to another zone (priority 1, through that zone's ingress, with mTLS) needs a real
global and zones: tests/integration/test_multizone_traffic.py.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
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

A, B = "127.0.0.2", "127.0.0.3"


def _dataplane(name: str, address: str, port: int, service: str,
               **networking: object) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, **networking, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}}]}}


def _meshservice(name: str, port: int) -> dict[str, Any]:
    return {"type": "MeshService", "mesh": "default", "name": name, "labels": {"app": "redis"},
            "spec": {"selector": {"dataplaneTags": {"kuma.io/service": name}},
                     "ports": [{"port": port}]}}


def _a_records(port: int, name: str) -> list[str]:
    try:
        response = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port,
                                 timeout=1)
    except dns.exception.Timeout:
        return []
    return [item.address for rrset in response.answer if rrset.rdtype == dns.rdatatype.A
            for item in rrset]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_mmzs_vip_serves_every_local_match_and_follows_their_endpoints(
        tmp_path: Path) -> None:
    port = free_port_on_all([A, B])
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.110.0.0/16",
                    "--mmzs-vip-cidr", "127.143.0.0/16") as cp, \
            http_backend(A, port, "redis"), http_backend(B, port, "redis-b"):
        cp.apply({"type": "Mesh", "name": "default"})
        for name, address in (("redis", A), ("redis-b", B)):
            cp.apply(_meshservice(name, port))
            cp.apply(_dataplane(f"{name}-1", address, port, name))
        cp.apply({"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                  "spec": {"selector": {"meshService": {"matchLabels": {"app": "redis"}}},
                           "ports": [{"port": port}]}})
        web_port = free_port("127.0.0.4")
        cp.apply(_dataplane("web-1", "127.0.0.4", web_port, "web"))

        def matched() -> dict[str, Any] | None:
            body = cp.api.get("/meshes/default/meshmultizoneservices/redis").json()
            return body if len(body["status"].get("meshServices", [])) == 2 else None

        status = wait_for(matched, timeout=60, what="both redis MeshServices matched")["status"]
        assert [(m["name"], m["zone"]) for m in status["meshServices"]] == [
            ("redis", "default"), ("redis-b", "default")]
        vip = status["vips"][0]["ip"]
        assert vip.startswith("127.143.")
        assert [a["hostname"] for a in status["addresses"]] == ["redis.mzsvc.mesh.local"]

        bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-1"))
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            wait_for(lambda: f"outbound:{vip}:{port}" in envoy.listeners(), timeout=60,
                     what="the MeshMultiZoneService's VIP listener in Envoy")
            url = f"http://{vip}:{port}/"

            def served_by() -> set[str | None]:
                return {fetch(url) for _ in range(20)}

            wait_for(lambda: served_by() == {"redis", "redis-b"}, timeout=60,
                     what="both local matches to serve the VIP")

            assert cp.api.delete("/meshes/default/dataplanes/redis-1").status_code == 200
            wait_for(lambda: served_by() == {"redis-b"}, timeout=60,
                     what="redis-b alone while redis has no endpoint")

            cp.apply(_dataplane("redis-1", A, port, "redis"))
            wait_for(lambda: served_by() == {"redis", "redis-b"}, timeout=60,
                     what="both again when redis comes back")

            rejected = envoy.stats("update_rejected")
            assert rejected and all(v == 0 for v in rejected.values()), rejected

        # a transparent proxy resolves the MeshMultiZoneService's hostname to its VIP
        cp.apply(_dataplane("web-2", "127.0.0.4", free_port("127.0.0.4"), "web",
                            transparentProxying={}))
        dns_port = _free_udp_port()
        bootstrap = sidecar_bootstrap(mesh="default", name="web-2", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-2"))
        bootstrap["node"]["metadata"] = {"dataplane.dns.port": str(dns_port)}
        with run_envoy(bootstrap, tmp_path / "envoy-2", "web-2"):
            assert wait_for(lambda: _a_records(dns_port, "redis.mzsvc.mesh.local"),
                            timeout=60, what="the MeshMultiZoneService's A record") == [vip]
