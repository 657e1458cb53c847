"""Cross-zone traffic in a real global + two zones deployment (issue 12's demonstration).

One global and two zones (east, west), each a real `meshlog up` with its own embedded
nats-server (own ports, store, JetStream domain), the zones joined to global over leafnodes
and running with global's secret key (`--secret-key-file`), so they open the mesh's CA that
global created. On global: a Mesh with builtin mTLS, an allow-all MeshTrafficPermission and a
MeshMultiZoneService `redis`. Real HTTP backends behind real Envoy sidecars in both zones
(`redis-1` in each, the client `web-1` in east) and a real Envoy as west's zone ingress (on
Delta xDS). Both zones check their proxies' tokens: dataplane tokens for the sidecars, each
issued by its own zone (signed with the zone's own key, sealed with global's secret key), and,
for west's ingress, a zone token of west with scope ingress generated on global, as in Kuma
(signed with global's zone-token key, which reaches west through the sync).

Shown: the client in east calling `redis.mzsvc.mesh.local`'s VIP is served by east's redis;
when east's redis goes away (deregistered), by west's, through west's ingress (mTLS end to
end between the sidecars, the ingress routing by SNI); when east's comes back, by east's
again; when east's redis app stops, its sidecar's `serviceProbe` (a TCP check the gateway
asks for over HDS) fails, the inbound turns unready and traffic fails over to west again,
coming back once the app is up; and `redis.svc.west.mesh.local`'s VIP (west's redis, synced
into east as `redis-<hash>`) is west's only.

Addresses on loopback: east's redis sidecar 127.0.0.2, west's 127.0.0.3, web 127.0.0.4, west's
ingress 127.0.0.5; VIPs inside 127.0.0.0/8 so Envoy binds them without iptables. Only web's
Envoy has outbound listeners (sidecars sharing loopback would share a VIP's connections).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events.kds_hash import hashed_name
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

EAST_REDIS, WEST_REDIS, WEB, INGRESS = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
MESH = {"type": "Mesh", "name": "default", "mtls": {"enabledBackend": "ca-1", "backends": [
    {"name": "ca-1", "type": "builtin", "mode": "STRICT"}]}}
ALLOW_ALL = {"type": "MeshTrafficPermission", "mesh": "default", "name": "allow-all", "spec": {
    "targetRef": {"kind": "Mesh"},
    "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": "Allow"}}]}}
SYNCED = hashed_name("default", "redis", "west")
"""West's `redis` as east (and global) name it."""


def _dataplane(name: str, address: str, port: int, service: str, app_port: int | None = None
               ) -> dict[str, Any]:
    """`app_port`: a backend's sidecar, which reaches nothing (no outbound listeners) and
    TCP-checks its app (HDS)."""
    inbound: dict[str, Any] = {"port": port, "tags": {"kuma.io/service": service}}
    networking: dict[str, Any] = {"address": address, "inbound": [inbound]}
    if app_port is not None:
        inbound["servicePort"] = app_port
        inbound["serviceProbe"] = {"interval": "0.5s", "timeout": "0.5s", "tcp": {}}
        networking["transparentProxying"] = {"reachableBackends": {"refs": [
            {"kind": "MeshService", "name": "nothing"}]}}
    return {"type": "Dataplane", "mesh": "default", "name": name, "networking": networking}


def _get(cp: ControlPlane, path: str) -> dict[str, Any] | None:
    response = cp.api.get(path)
    return response.json() if response.status_code == 200 else None


def _listening(envoy: Envoy, listener: str) -> bool:
    return listener in envoy.listeners()


def _vip(cp: ControlPlane, path: str) -> str | None:
    vips = (_get(cp, path) or {}).get("status", {}).get("vips", [])
    return vips[0]["ip"] if vips else None


@contextlib.contextmanager
def _deployment(tmp_path: Path) -> Iterator[dict[str, ControlPlane]]:
    with meshlog_up(tmp_path / "global", "--mode", "global", "--leaf-port", "0") as central:
        url = central.where["global_url"]
        key = str(central.data_dir / "secret.key")
        with meshlog_up(tmp_path / "east", "--zone", "east", "--global", url,
                        "--secret-key-file", key, "--vip-cidr", "127.110.0.0/16",
                        "--mmzs-vip-cidr", "127.143.0.0/16") as east, \
                meshlog_up(tmp_path / "west", "--zone", "west", "--global", url,
                           "--secret-key-file", key, "--vip-cidr", "127.111.0.0/16",
                           "--mmzs-vip-cidr", "127.144.0.0/16") as west:
            yield {"global": central, "east": east, "west": west}


def _sidecar(cp: ControlPlane, name: str, *, backend: bool, token: bool = False
             ) -> dict[str, Any]:
    boot = sidecar_bootstrap(mesh="default", name=name, xds_host="127.0.0.1",
                             xds_port=cp.xds_port, admin_port=0,
                             token=cp.dataplane_token(name) if token else None)
    if backend:  # its DNS listener (transparent proxying) on a free port, not 15053
        boot["node"]["metadata"] = {"dataplane.dns.port": str(free_port("127.0.0.1"))}
    return boot


def _zone_token(cp: ControlPlane, zone: str) -> str:
    """A zone token of `zone` with scope ingress, from `cp`'s API (global's)."""
    response = cp.api.post("/tokens/zone", json={"zone": zone, "scope": ["ingress"]})
    assert response.status_code == 200, response.text
    return response.text


@contextlib.contextmanager
def _envoys(planes: dict[str, ControlPlane], tmp_path: Path) -> Iterator[dict[str, Envoy]]:
    east, west = planes["east"], planes["west"]
    boots = {"east/redis-1": _sidecar(east, "redis-1", backend=True, token=True),
             "west/redis-1": _sidecar(west, "redis-1", backend=True, token=True),
             "west/ingress": zone_ingress_bootstrap(name="west-ingress", xds_host="127.0.0.1",
                                                    xds_port=west.xds_port, admin_port=0,
                                                    delta=True,
                                                    token=_zone_token(planes["global"], "west")),
             "east/web-1": _sidecar(east, "web-1", backend=False, token=True)}
    with contextlib.ExitStack() as stack:
        yield {name: stack.enter_context(run_envoy(boot, tmp_path / "envoy",
                                                   name.replace("/", "-")))
               for name, boot in boots.items()}


def _inbound_ready(cp: ControlPlane, name: str) -> bool:
    inbound = (_get(cp, f"/meshes/default/dataplanes/{name}") or {}).get(
        "networking", {}).get("inbound", [{}])[0]
    return bool(inbound.get("health", {}).get("ready", True))


def _counter(envoy: Envoy, name: str) -> int:
    return envoy.stats(name).get(name, 0)


def test_a_client_in_east_fails_over_to_west_through_wests_ingress_and_back(
        tmp_path: Path) -> None:
    port = free_port_on_all([EAST_REDIS, WEST_REDIS])
    east_app, west_app = free_port("127.0.0.1"), free_port("127.0.0.1")
    ingress_port = free_port(INGRESS)
    east_backend = contextlib.ExitStack()
    with _deployment(tmp_path) as planes, east_backend, \
            http_backend("127.0.0.1", west_app, "redis-west"):
        east_backend.enter_context(http_backend("127.0.0.1", east_app, "redis-east"))
        central, east, west = planes["global"], planes["east"], planes["west"]
        central.apply(MESH)
        central.apply(ALLOW_ALL)
        central.apply({"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
                       "spec": {"selector": {"meshService": {"matchLabels": {
                           "kuma.io/display-name": "redis"}}}, "ports": [{"port": port}]}})
        for zone in (east, west):
            wait_for(functools.partial(_get, zone, "/meshes/default"), timeout=60,
                     what="global's Mesh in the zone")
        east.apply(_dataplane("redis-1", EAST_REDIS, port, "redis", east_app))
        east.apply(_dataplane("web-1", WEB, free_port(WEB), "web"))
        west.apply(_dataplane("redis-1", WEST_REDIS, port, "redis", west_app))
        response = west.api.put("/zoneingresses/west-ingress", json={
            "type": "ZoneIngress", "name": "west-ingress", "networking": {
                "address": INGRESS, "port": ingress_port, "advertisedAddress": INGRESS,
                "advertisedPort": ingress_port}})
        assert response.status_code in (200, 201), response.text

        # east sees west's redis under its synced name, with the synced hostname and a VIP
        def synced() -> dict[str, Any] | None:
            doc = _get(east, f"/meshes/default/meshservices/{SYNCED}")
            ok = doc and doc["status"].get("vips") and doc["spec"].get("state") == "Available"
            return doc if ok else None

        ms = wait_for(synced, timeout=60, what="west's redis synced into east")
        ingress = wait_for(lambda: _get(east, "/zoneingresses/" + hashed_name(
            "", "west-ingress", "west")), timeout=60, what="west's ingress synced into east")
        assert ingress["zone"] == "west" and ingress["labels"]["kuma.io/zone"] == "west"
        assert [a["hostname"] for a in ms["status"]["addresses"]] == [
            "redis.svc.west.mesh.local"]
        west_vip = ms["status"]["vips"][0]["ip"]
        mz_vip = wait_for(lambda: _vip(east, "/meshes/default/meshmultizoneservices/redis"),
                          timeout=60, what="the MeshMultiZoneService's VIP in east")

        with _envoys(planes, tmp_path) as envoys:
            web, gate = envoys["east/web-1"], envoys["west/ingress"]
            for envoy, listener in ((envoys["east/redis-1"], f"inbound:{EAST_REDIS}:{port}"),
                                    (envoys["west/redis-1"], f"inbound:{WEST_REDIS}:{port}"),
                                    (gate, f"inbound:{INGRESS}:{ingress_port}"),
                                    (web, f"outbound:{west_vip}:{port}"),
                                    (web, f"outbound:{mz_vip}:{port}")):
                wait_for(functools.partial(_listening, envoy, listener), timeout=60,
                         what=f"listener {listener}")

            # redis.svc.west.mesh.local: west's only, through west's ingress, mTLS end to end
            to_west = f"tcp.default_redis___msvc_{port}.downstream_cx_total"
            wait_for(lambda: fetch(f"http://{west_vip}:{port}/") == "redis-west", timeout=60,
                     what="west's redis through west's ingress")
            assert all(fetch(f"http://{west_vip}:{port}/") == "redis-west" for _ in range(5))
            assert _counter(gate, to_west) >= 1
            assert tls.sni("default", "redis", port) in str(
                web.config_dump("dynamic_active_clusters"))

            # redis.mzsvc.mesh.local: east's first; west's through the ingress when it goes
            url = f"http://{mz_vip}:{port}/"

            def only(name: str) -> bool:
                return all(fetch(url) == name for _ in range(5))

            wait_for(lambda: only("redis-east"), timeout=60, what="east's redis")
            through = f"tcp.default_redis___mzsvc_{port}.downstream_cx_total"
            before = _counter(gate, through)

            assert east.api.delete("/meshes/default/dataplanes/redis-1").status_code == 200
            wait_for(lambda: only("redis-west"), timeout=60,
                     what="failover to west's redis through west's ingress")
            assert _counter(gate, through) >= before + 5

            east.apply(_dataplane("redis-1", EAST_REDIS, port, "redis", east_app))
            wait_for(lambda: only("redis-east"), timeout=60, what="traffic back to east's redis")

            # east's redis app stops: its sidecar's TCP probe (HDS) fails, the inbound turns
            # unready in the log, and the client fails over to west through the ingress
            before = _counter(gate, through)
            east_backend.close()
            wait_for(lambda: _inbound_ready(east, "redis-1") is False, timeout=60,
                     what="east's redis inbound unready (its probe failing)")
            wait_for(lambda: only("redis-west"), timeout=60,
                     what="failover to west's redis while east's is unhealthy")
            assert _counter(gate, through) >= before + 5
            east_backend.enter_context(http_backend("127.0.0.1", east_app, "redis-east"))
            wait_for(lambda: _inbound_ready(east, "redis-1") is True, timeout=60,
                     what="east's redis inbound ready again")
            wait_for(lambda: only("redis-east"), timeout=60,
                     what="traffic back to east's redis once healthy")

            for envoy in envoys.values():
                rejected = envoy.stats("update_rejected")
                assert all(v == 0 for v in rejected.values()), rejected
