"""Cross-zone traffic through a zone ingress, with real parts: `meshlog up --no-auth`
(embedded nats-server, projector, gateway, API), real HTTP backends, real Envoy sidecars with
the mesh's mTLS, and a real Envoy acting as zone west's ingress.

One control plane (zone `default`) plays both sides: zone west's MeshService `redis-west`
(display name `redis`), its Dataplane and its ZoneIngress are put in the log on west's
subjects by hand, as global's stream sources will bring them (the sync is another branch).
The client `web-1` (zone default) reaches west's redis at its VIP: its Envoy's only endpoint
for it is the ingress's advertised address, to which it originates mTLS with Kuma's SNI for
`redis`; the ingress routes that SNI, TLS untouched, to west's sidecar, which terminates the
mTLS. A MeshMultiZoneService `redis` is served by the local redis, fails over to west's
through the ingress (`mzms` SNI) when the local one goes, and comes back.

Addresses on loopback: local redis sidecar 127.0.0.2, west's 127.0.0.3, web 127.0.0.4, the
ingress 127.0.0.5; VIPs inside 127.0.0.0/8 so Envoy binds them without iptables. Only web's
Envoy has outbound listeners (sidecars sharing loopback would share a VIP's connections).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events import (
    DataplaneRegistered,
    MeshServiceApplied,
    ZoneIngressRegistered,
    connect_nats,
    decode_resource,
    encode_event,
    now_ms,
    resource_subject,
)
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION
from services.cli.bootstrap import sidecar_bootstrap, zone_ingress_bootstrap
from tests.harness import (
    ControlPlane,
    Envoy,
    fetch,
    free_port,
    free_port_on_all,
    http_backend,
    meshlog_up,
    run_envoy,
    wait_for,
)
from xds_gateway.resources import tls

pytestmark = pytest.mark.integration

LOCAL, WEST, WEB, INGRESS = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
MESH = {"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [
    {"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}}
ALLOW_ALL = {"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all", "spec": {
    "targetRef": {"kind": "Mesh"},
    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}


def _dataplane(name: str, address: str, port: int, service: str, app_port: int | None = None
               ) -> dict[str, Any]:
    """`app_port`: a backend's sidecar, which reaches nothing (no outbound listeners)."""
    inbound: dict[str, Any] = {"port": port, "tags": {"kuma.io/service": service}}
    networking: dict[str, Any] = {"address": address, "inbound": [inbound]}
    if app_port is not None:
        inbound["servicePort"] = app_port
        networking["transparentProxying"] = {"reachableBackends": {"refs": [
            {"kind": "MeshService", "name": "nothing"}]}}
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def _from_west(cp: ControlPlane, port: int, app_port: int, ingress_port: int) -> None:
    """west's redis MeshService, its Dataplane and west's ingress, on west's subjects."""
    ms = decode_resource({"type": "MeshService", "mesh": "default", "name": "redis-west",
                          "labels": {"kuma.io/display-name": "redis"},
                          "spec": {"selector": {"dataplaneTags": {
                              "kuma.io/service": "redis-west"}},
                                   "ports": [{"port": port}], "state": "Available"}})
    dp = decode_resource(_dataplane("redis-west-1", WEST, port, "redis-west", app_port))
    ingress = decode_resource({"type": "ZoneIngress", "name": "west-ingress", "networking": {
        "address": INGRESS, "port": ingress_port, "advertisedAddress": INGRESS,
        "advertisedPort": ingress_port}})
    events = [
        (resource_subject("MeshService", "default", "redis-west", "west"),
         MeshServiceApplied(at=now_ms(), meshservice=ms)),  # type: ignore[arg-type]
        (resource_subject("Dataplane", "default", "redis-west-1", "west"),
         DataplaneRegistered(at=now_ms(), dataplane=dp)),  # type: ignore[arg-type]
        (resource_subject("ZoneIngress", None, "west-ingress", "west"),
         ZoneIngressRegistered(at=now_ms(), zoneingress=ingress)),  # type: ignore[arg-type]
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


def _sidecar(cp: ControlPlane, name: str, *, backend: bool) -> dict[str, Any]:
    boot = sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                             xds_port=cp.xds_port, admin_port=0)
    if backend:  # its DNS listener (transparent proxying) on a free port, not 15053
        boot["node"]["metadata"] = {"dataplane.dns.port": str(free_port("127.0.0.1"))}
    return boot


def _counter(envoy: Envoy, name: str) -> int:
    return envoy.stats(name).get(name, 0)


@contextlib.contextmanager
def _envoys(cp: ControlPlane, tmp_path: Path) -> Iterator[dict[str, Envoy]]:
    boots = {"redis-1": _sidecar(cp, "redis-1", backend=True),
             "redis-west-1": _sidecar(cp, "redis-west-1", backend=True),
             # the ingress on Delta xDS, the sidecars on State of the World: both serve it
             "west-ingress": zone_ingress_bootstrap(name="west-ingress", xds_host="127.0.0.1",
                                                    xds_port=cp.xds_port, admin_port=0,
                                                    delta=True),
             "web-1": _sidecar(cp, "web-1", backend=False)}
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(run_envoy(boot, tmp_path / "envoy", name))
               for name, boot in boots.items()}


def test_a_client_reaches_a_remote_service_and_fails_over_through_the_zone_ingress(
        tmp_path: Path) -> None:
    port = free_port_on_all([LOCAL, WEST])
    local_app, west_app = free_port("127.0.0.1"), free_port("127.0.0.1")
    ingress_port = free_port(INGRESS)
    with meshlog_up(tmp_path / "cp", "--no-auth", "--vip-cidr", "127.110.0.0/16",
                    "--mmzs-vip-cidr", "127.143.0.0/16") as cp, \
            http_backend("127.0.0.1", local_app, "redis-default"), \
            http_backend("127.0.0.1", west_app, "redis-west"):
        cp.apply(MESH)
        cp.apply(ALLOW_ALL)
        cp.apply(_dataplane("redis-1", LOCAL, port, "redis", local_app))
        cp.apply(_dataplane("web-1", WEB, free_port(WEB), "web"))
        _from_west(cp, port, west_app, ingress_port)
        cp.apply({"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                  "spec": {"selector": {"meshService": {"matchLabels": {
                      "kuma.io/display-name": "redis"}}}, "ports": [{"port": port}]}})
        ingress = cp.api.get("/zoneingresses/west-ingress").json()
        assert ingress["zone"] == "west" and ingress["labels"]["kuma.io/zone"] == "west"

        def vip(path: str) -> str | None:
            vips = cp.api.get(path).json().get("status", {}).get("vips", [])
            return vips[0]["ip"] if vips else None

        west_vip = wait_for(lambda: vip("/meshes/default/meshservices/redis-west"),
                            timeout=10, what="redis-west's VIP")
        mz_vip = wait_for(lambda: vip("/meshes/default/meshmultizoneservices/redis"),
                          timeout=10, what="the MeshMultiZoneService's VIP")

        with _envoys(cp, tmp_path) as envoys:
            web, gate = envoys["web-1"], envoys["west-ingress"]
            for envoy, listener in ((envoys["redis-1"], f"inbound:{LOCAL}:{port}"),
                                    (envoys["redis-west-1"], f"inbound:{WEST}:{port}"),
                                    (gate, f"inbound:{INGRESS}:{ingress_port}"),
                                    (web, f"outbound:{west_vip}:{port}"),
                                    (web, f"outbound:{mz_vip}:{port}")):
                wait_for(lambda e=envoy, name=listener: name in e.listeners(), timeout=30,
                         what=f"listener {listener}")

            # west's redis, from web, through west's ingress, mTLS end to end
            to_west = f"tcp.default_redis-west___msvc_{port}.downstream_cx_total"
            wait_for(lambda: fetch(f"http://{west_vip}:{port}/") == "redis-west", timeout=20,
                     what="west's redis through the ingress")
            assert _counter(gate, to_west) >= 1
            clusters = web.config_dump("dynamic_active_clusters")
            assert tls.sni("default", "redis", port) in str(clusters)

            # the MeshMultiZoneService: local first, west through the ingress when it goes
            url = f"http://{mz_vip}:{port}/"

            def only(name: str) -> bool:
                return all(fetch(url) == name for _ in range(5))

            wait_for(lambda: only("redis-default"), timeout=20, what="the local redis")
            through = f"tcp.default_redis___mzsvc_{port}.downstream_cx_total"
            before = _counter(gate, through)

            assert cp.api.delete("/meshes/default/dataplanes/redis-1").status_code == 200
            wait_for(lambda: only("redis-west"), timeout=20, interval=0.05,
                     what="failover to west's redis through the ingress")
            assert _counter(gate, through) >= before + 5

            cp.apply(_dataplane("redis-1", LOCAL, port, "redis", local_app))
            wait_for(lambda: only("redis-default"), timeout=20, interval=0.05,
                     what="traffic back to the local redis")

            for envoy in envoys.values():
                rejected = envoy.stats("update_rejected")
                assert all(v == 0 for v in rejected.values()), rejected
