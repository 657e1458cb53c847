"""A MeshMultiZoneService with real parts: `meshlog up` (embedded nats-server, projector,
gateway, API), real HTTP backends and real Envoys.

Zone `default` (a standalone control plane) has its own `redis`; a MeshService of zone `west`
and its Dataplane are put in its log on zone west's subjects, as global's stream sources will
bring them (the sync itself is not built yet), with `spec.state: Available`. A client calling
the MeshMultiZoneService's VIP is served by the local redis; when the local one goes, by
west's (Envoy's priority failover); when it comes back, by the local one again. A transparent
proxy resolves `redis.mzsvc.mesh.local` to that VIP. Both CIDRs are inside 127.0.0.0/8 so
Envoy can bind VIPs without iptables.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import pytest

from events import (
    DataplaneRegistered,
    MeshServiceApplied,
    connect_nats,
    decode_resource,
    encode_event,
    now_ms,
    resource_subject,
)
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION
from services.cli.bootstrap import sidecar_bootstrap
from tests.harness import (
    ControlPlane,
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    meshlog_up,
    run_envoy,
    wait_for,
)

pytestmark = pytest.mark.integration

LOCAL, WEST = "127.0.0.2", "127.0.0.3"


def _dataplane(name: str, address: str, port: int, service: str, **networking: object) -> dict:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, **networking, "inbound": [
                {"port": port, "tags": {"kuma.io/service": service}}]}}


def _from_west(cp: ControlPlane, port: int) -> None:
    """west's redis MeshService and its Dataplane, on zone west's subjects of this log."""
    ms = decode_resource({"type": "MeshService", "mesh": "default", "name": "redis-west",
                          "labels": {"kuma.io/display-name": "redis"},
                          "spec": {"selector": {"dataplaneTags": {
                              "kuma.io/service": "redis-west"}},
                                   "ports": [{"port": port}], "state": "Available"}})
    dp = decode_resource(_dataplane("redis-west-1", WEST, port, "redis-west"))
    events = [
        (resource_subject("MeshService", "default", "redis-west", "west"),
         MeshServiceApplied(at=now_ms(), meshservice=ms)),  # type: ignore[arg-type]
        (resource_subject("Dataplane", "default", "redis-west-1", "west"),
         DataplaneRegistered(at=now_ms(), dataplane=dp)),  # type: ignore[arg-type]
    ]

    async def publish() -> None:
        nc = await connect_nats(cp.where["nats"], name="test-west", credentials=cp.nats_creds)
        try:
            js = nc.jetstream()
            for subject, event in events:
                await js.publish(subject, encode_event(event),
                                 headers={SCHEMA_HEADER: str(SCHEMA_VERSION)})
        finally:
            await nc.close()

    asyncio.run(publish())


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
        return s.getsockname()[1]


def test_the_mmzs_vip_serves_locally_fails_over_to_west_and_comes_back(tmp_path: Path) -> None:
    port = free_port_on_all([LOCAL, WEST])
    with meshlog_up(tmp_path / "cp", "--vip-cidr", "127.110.0.0/16",
                    "--mmzs-vip-cidr", "127.143.0.0/16") as cp, \
            http_backend(LOCAL, port, "redis-default"), http_backend(WEST, port, "redis-west"):
        cp.apply({"type": "Mesh", "name": "default"})
        cp.apply(_dataplane("redis-1", LOCAL, port, "redis"))
        _from_west(cp, port)
        cp.apply({"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                  "spec": {"selector": {"meshService": {"matchLabels": {
                      "kuma.io/display-name": "redis"}}}, "ports": [{"port": port}]}})
        web_port = free_port("127.0.0.4")
        cp.apply(_dataplane("web-1", "127.0.0.4", web_port, "web"))

        def matched() -> dict | None:
            body = cp.api.get("/meshes/default/meshmultizoneservices/redis").json()
            return body if len(body["status"].get("meshServices", [])) == 2 else None

        status = wait_for(matched, timeout=10, what="both redis MeshServices matched")["status"]
        assert [(m["name"], m["zone"]) for m in status["meshServices"]] == [
            ("redis", "default"), ("redis", "west")]
        vip = status["vips"][0]["ip"]
        assert vip.startswith("127.143.")
        assert [a["hostname"] for a in status["addresses"]] == ["redis.mzsvc.mesh.local"]

        bootstrap = sidecar_bootstrap(mesh="default", name="web-1", xds_host="127.0.0.1",
                                      xds_port=cp.xds_port, admin_port=0,
                                      token=cp.dataplane_token("web-1"))
        with run_envoy(bootstrap, tmp_path / "envoy", "web-1") as envoy:
            wait_for(lambda: f"outbound:{vip}:{port}" in envoy.listeners(), timeout=20,
                     what="the MeshMultiZoneService's VIP listener in Envoy")
            url = f"http://{vip}:{port}/"

            def only(name: str) -> bool:
                return all(fetch(url) == name for _ in range(10))

            wait_for(lambda: only("redis-default"), timeout=10,
                     what="the local redis to serve the VIP")

            assert cp.api.delete("/meshes/default/dataplanes/redis-1").status_code == 200
            wait_for(lambda: only("redis-west"), timeout=10, interval=0.05,
                     what="failover to west's redis")

            cp.apply(_dataplane("redis-1", LOCAL, port, "redis"))
            wait_for(lambda: only("redis-default"), timeout=10, interval=0.05,
                     what="traffic back to the local redis")

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
                            timeout=20, what="the MeshMultiZoneService's A record") == [vip]
