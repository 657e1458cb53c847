"""One global and two zones (east, west), each a real `meshlog up` with its own embedded
nats-server (own ports, store, JetStream domain), zones joined to global over leafnodes: a Mesh
applied on global reaches both zones; a Dataplane registered in west yields in east a
MeshService under Kuma's synced name with a 241/8 VIP and `<svc>.svc.west.mesh.local`; global
shows both zones connected; each log replays to its live read models byte for byte."""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from events import connect_nats
from events.bus.sources import zone_filter
from events.kds_hash import hashed_name
from tests._tcp_proxy import TcpProxy, tcp_proxy
from tests.harness import VENV_BIN, ControlPlane, meshlog_up, wait_for

pytestmark = pytest.mark.integration

REDIS = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
         "networking": {"address": "10.2.0.1", "inbound": [
             {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}


def _meshlog(*args: str) -> str:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120, check=True).stdout


@pytest.fixture(scope="module")
def central(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with meshlog_up(tmp_path_factory.mktemp("global"), "--mode", "global",
                    "--leaf-port", "0") as cp:
        yield cp


@pytest.fixture(scope="module")
def link(central: ControlPlane) -> Iterator[TcpProxy]:
    """East's leafnode link to global, through a proxy the tests can cut."""
    port = int(central.where["global_url"].rpartition(":")[2])
    with tcp_proxy(("127.0.0.1", port)) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def planes(central: ControlPlane, link: TcpProxy, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[dict[str, ControlPlane]]:
    url = central.where["global_url"]
    through_proxy = f"{url.rpartition(':')[0]}:{link.port}"
    with ExitStack() as stack:
        zones = {zone: stack.enter_context(meshlog_up(
            tmp_path_factory.mktemp(zone), "--zone", zone,
            "--global", through_proxy if zone == "east" else url))
            for zone in ("east", "west")}
        yield {"global": central, **zones}


def _get(cp: ControlPlane, path: str) -> dict[str, Any] | None:
    response = cp.api.get(path)
    return response.json() if response.status_code == 200 else None


def test_a_mesh_applied_on_global_reaches_both_zones(planes: dict[str, ControlPlane]) -> None:
    planes["global"].apply({"type": "Mesh", "name": "default"})
    for zone in ("east", "west"):
        mesh = wait_for(lambda z=zone: _get(planes[z], "/meshes/default"), timeout=30,
                        what=f"the Mesh in {zone}")
        assert mesh["name"] == "default"


def test_a_zone_refuses_globals_kinds_and_global_refuses_dataplanes(
        planes: dict[str, ControlPlane]) -> None:
    refused = planes["east"].api.put("/meshes/other", json={"type": "Mesh", "name": "other"})
    assert refused.status_code == 409 and "global control plane" in refused.json()["detail"]
    mmzs = {"type": "MeshMultiZoneService", "mesh": "default", "name": "redis",
            "spec": {"selector": {"meshService": {"matchLabels": {"app": "redis"}}},
                     "ports": [{"port": 6379}]}}
    refused = planes["east"].api.put("/meshes/default/meshmultizoneservices/redis", json=mmzs)
    assert refused.status_code == 409
    assert "MeshMultiZoneService 'redis' belongs to the global control plane: apply it there" in (
        refused.json()["detail"])
    refused = planes["global"].api.put("/meshes/default/dataplanes/redis-1", json=REDIS)
    assert refused.status_code == 409 and "zone" in refused.json()["detail"]


def test_a_dataplane_in_west_yields_a_synced_meshservice_in_east(
        planes: dict[str, ControlPlane]) -> None:
    wait_for(lambda: _get(planes["west"], "/meshes/default"), timeout=30, what="west's Mesh")
    planes["west"].apply(REDIS)
    name = hashed_name("default", "redis", "west")
    assert name == "redis-f8xz8bddwx8b5c22"  # the same on global and in every zone

    def synced() -> dict[str, Any] | None:
        doc = _get(planes["east"], f"/meshes/default/meshservices/{name}")
        return doc if doc and doc["status"].get("addresses") else None

    ms = wait_for(synced, timeout=30, what="west's redis in east")
    assert ipaddress.ip_address(ms["status"]["vips"][0]["ip"]) in ipaddress.ip_network(
        "241.0.0.0/8")
    assert [a["hostname"] for a in ms["status"]["addresses"]] == ["redis.svc.west.mesh.local"]
    assert ms["labels"]["kuma.io/zone"] == "west"
    assert ms["labels"]["kuma.io/display-name"] == "redis"
    assert ms["spec"]["state"] == "Available"
    # east's proxies get no endpoint of west's Dataplane (cross-zone goes through ingress)
    assert _get(planes["east"], "/meshes/default/dataplanes/redis-1") is None
    on_global = wait_for(lambda: _get(planes["global"], f"/meshes/default/meshservices/{name}"),
                         timeout=30, what="west's redis on global")
    assert on_global["labels"]["kuma.io/origin"] == "zone"


def test_global_shows_both_zones_connected(planes: dict[str, ControlPlane]) -> None:
    def connected() -> list[str] | None:
        doc = _get(planes["global"], "/zone-insights")
        names = sorted(i["name"] for i in (doc or {}).get("items", []) if i["connected"])
        return names if names == ["east", "west"] else None

    wait_for(connected, timeout=30, what="both zones connected")
    table = _meshlog("--api", planes["global"].where["api"], "get", "zones")
    assert [line.split()[:3] for line in table.splitlines()[1:]] == [
        ["east", "yes", "yes"], ["west", "yes", "yes"]]


def test_a_local_proxy_in_east_gets_no_endpoint_of_wests_dataplane(
        planes: dict[str, ControlPlane]) -> None:
    east = planes["east"]
    name = hashed_name("default", "redis", "west")
    vip = wait_for(lambda: (_get(east, f"/meshes/default/meshservices/{name}") or {}).get(
        "status", {}).get("vips"), timeout=30, what="the synced VIP")[0]["ip"]
    east.apply(_dataplane("web-1", "web", "10.1.0.9"))

    def config() -> dict[str, Any] | None:
        response = east.api.get("/meshes/default/dataplanes/web-1/_config")
        return response.json() if response.status_code == 200 else None

    doc = wait_for(config, timeout=30, what="web-1's computed config")
    text = str(doc)
    assert f"{name}" in text and vip in text  # an outbound for west's redis, on its VIP
    assert "10.2.0.1" not in text  # but west's Dataplane is no endpoint here


def test_a_zone_disabled_on_global_disappears_from_the_others_and_comes_back(
        planes: dict[str, ControlPlane], tmp_path: Path) -> None:
    central, east = planes["global"], planes["east"]
    wait_for(lambda: _has(east, "redis", "west"), timeout=30, what="the sync")
    api = central.where["api"]
    refused = subprocess.run([str(VENV_BIN / "meshlog"), "--api", api, "delete", "zone",
                              "west"], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "is online" in refused.stderr
    zone = tmp_path / "zone.yaml"
    zone.write_text("type: Zone\nname: west\nenabled: false\n")  # as kumactl applies it
    assert _meshlog("--api", api, "apply", "-f", str(zone)) == "zone 'west' disabled\n"
    wait_for(lambda: not _has(east, "redis", "west") and not _has(central, "redis", "west"),
             timeout=30, what="west hidden")
    assert _get(east, "/zones/west")["enabled"] is False  # type: ignore[index]
    assert central.api.put("/zones/west", json={"enabled": True}).status_code == 200
    wait_for(lambda: _has(east, "redis", "west"), timeout=30, what="west back")


@pytest.mark.parametrize("plane", ["global", "east", "west"])
def test_each_log_replays_to_its_live_read_models(planes: dict[str, ControlPlane], plane: str,
                                                  tmp_path: Path) -> None:
    cp = planes[plane]
    wait_for(lambda: _get(planes["east"], "/meshes/default/meshservices/"
                          + hashed_name("default", "redis", "west")), timeout=30,
             what="the sync")
    deployment = ["--mode", "global"] if plane == "global" else ["--zone", plane]
    live = _meshlog("export", "--data-dir", str(cp.data_dir))
    target = f"sqlite:///{tmp_path / 'replayed.db'}"
    _meshlog("replay", "--data-dir", str(cp.data_dir), "--database", target, "-q", *deployment)
    assert _meshlog("export", "--database", target) == live


def _dataplane(name: str, service: str, address: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": 8080, "tags": {"kuma.io/service": service}}]}}


def _services(cp: ControlPlane) -> set[tuple[str, str]]:
    """(display name, zone) of every MeshService `cp` has, local or synced."""
    items = (_get(cp, "/meshes/default/meshservices?size=1000") or {}).get("items", [])
    return {(i["labels"]["kuma.io/display-name"], i["labels"]["kuma.io/zone"]) for i in items}


def _has(cp: ControlPlane, service: str, zone: str) -> bool:
    return (service, zone) in _services(cp)


def _insight(cp: ControlPlane, zone: str) -> dict[str, Any]:
    overview = _get(cp, f"/zones/{zone}/_overview")
    assert overview is not None
    insight: dict[str, Any] = overview["zoneInsight"]
    return insight


async def _events_of(cp: ControlPlane, zone: str) -> int:
    """How many events of `zone` the stream of `cp` holds."""
    nc = await connect_nats(cp.where["nats"], name="test", credentials=cp.nats_creds,
                            reconnect=False)
    try:
        info = await nc.jetstream().stream_info("MESHLOG_EVENTS",
                                                subjects_filter=zone_filter(zone))
        return sum((info.state.subjects or {}).values())
    finally:
        await nc.close()


def test_a_cut_link_keeps_both_sides_serving_and_converges_after(
        planes: dict[str, ControlPlane], link: TcpProxy) -> None:
    central, east, west = planes["global"], planes["east"], planes["west"]
    wait_for(lambda: _has(east, "redis", "west"), timeout=30, what="the first sync")
    before = wait_for(lambda: (lambda e: e if _services(central) == e == _services(west)
                               else None)(_services(east)), timeout=30, what="one view")
    link.cut()
    # global: east silent; `lag` says nothing during a cut, the time since it was heard does
    insight = wait_for(lambda: (lambda i: i if not i["connected"] else None)(
        _insight(central, "east")), timeout=45, what="east shown disconnected")
    assert insight["syncLag"]["seconds"] >= 10
    east.apply(_dataplane("api-1", "api", "10.1.0.1"))
    west.apply(_dataplane("cache-1", "cache", "10.2.0.2"))
    wait_for(lambda: _has(central, "cache", "west") and _has(west, "api", "east") is False,
             timeout=30, what="west's change on global")
    # each side keeps serving what it has: nothing is removed on a disconnect
    assert _has(east, "redis", "west") and _has(east, "api", "east")
    assert not _has(east, "cache", "west") and not _has(central, "api", "east")
    link.restore()
    everywhere = before | {("api", "east"), ("cache", "west")}
    for cp in (central, east, west):
        wait_for(lambda c=cp: _services(c) == everywhere, timeout=120, what="convergence")
    wait_for(lambda: _insight(central, "east")["connected"], timeout=30, what="reconnected")
    # nothing lost, nothing duplicated: each zone's events, counted in every log
    for zone in ("east", "west"):
        counts = [asyncio.run(_events_of(cp, zone)) for cp in (central, east, west)]
        assert counts[0] == counts[1] == counts[2] > 0, (zone, counts)
