"""One global and two zones (east, west), each a real `meshlog up` with its own embedded
nats-server (own ports, store, JetStream domain), zones joined to global over leafnodes: a Mesh
applied on global reaches both zones (labelled `kuma.io/origin: global`); a Dataplane
registered in west yields in east a MeshService under Kuma's synced name with a 241/8 VIP and
`<svc>.svc.west.mesh.local`, and is listed on global under its synced name, read-only, its
inbound tagged `kuma.io/zone: west` there as in west; a
generated one keeps west's ports and west's grace period in east and on global; global
shows both zones connected; then each log replays to its live read models byte for byte.
A cut link: test_multizone_cut.py."""

from __future__ import annotations

import functools
import ipaddress
import subprocess
from pathlib import Path
from typing import Any

import pytest

from events.kds_hash import hashed_name
from tests.harness import VENV_BIN, ControlPlane, wait_for
from tests.integration import _multizone
from tests.integration._multizone import (
    WEST_GRACE_S,
    _dataplane,
    _get,
    _meshlog,
)

pytestmark = pytest.mark.integration

# this module's own global and zones (module-scoped fixtures)
joined, planes = _multizone.joined, _multizone.planes

REDIS = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
         "networking": {"address": "10.2.0.1", "inbound": [
             {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}


def test_a_mesh_applied_on_global_reaches_both_zones(planes: dict[str, ControlPlane]) -> None:
    planes["global"].apply({"type": "Mesh", "name": "default"})
    for zone in ("global", "east", "west"):
        mesh = wait_for(functools.partial(_get, planes[zone], "/meshes/default"), timeout=30,
                        what=f"the Mesh in {zone}")
        assert mesh["name"] == "default"
        # global's, as Kuma's global-to-zone sync labels it in zones
        assert mesh["labels"] == {"kuma.io/origin": "global"}, zone


def test_each_sync_runs_as_the_sync_user_within_its_permissions(
        planes: dict[str, ControlPlane]) -> None:
    """`meshlog up` connects its multi-zone sync as the sync role's user (its sources kept,
    each zone registered: the test before), and no nats-server refused anything."""
    for name, cp in planes.items():
        server_log = (cp.data_dir / "nats" / "nats-server.log").read_text()
        assert [line for line in server_log.splitlines() if "Violation" in line] == [], name
    zones = _get(planes["global"], "/zones")
    assert zones is not None and sorted(z["name"] for z in zones["items"]) == ["east", "west"]


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


def test_global_lists_wests_dataplane_under_its_synced_name_read_only(
        planes: dict[str, ControlPlane]) -> None:
    """West's redis-1 (the test before) on global as Kuma's global lists it: its synced name
    and west's labels; a write to it there is refused naming west; east lists none of west's
    Dataplanes (Kuma syncs none zone to zone)."""
    central, east = planes["global"], planes["east"]
    wait_for(lambda: _get(planes["west"], "/meshes/default"), timeout=30, what="west's Mesh")
    planes["west"].apply(REDIS)  # unchanged if the test before ran
    name = hashed_name("default", "redis-1", "west")
    path = f"/meshes/default/dataplanes/{name}"
    dp = wait_for(lambda: _get(central, path), timeout=30, what="west's redis-1 on global")
    assert dp["name"] == name == "redis-1-4vd49bdbbz9x8b6x"
    assert {k: v for k, v in dp["labels"].items() if k.startswith("kuma.io/")} == {
        "kuma.io/display-name": "redis-1", "kuma.io/mesh": "default", "kuma.io/origin": "zone",
        "kuma.io/zone": "west", "kuma.io/env": "universal", "kuma.io/proxy-type": "sidecar"}
    # west's control plane tagged its inbound with its zone, and global shows the same tag
    own = _get(planes["west"], "/meshes/default/dataplanes/redis-1")
    assert own is not None and [i["tags"] for i in own["networking"]["inbound"]] == [
        {"kuma.io/service": "redis", "kuma.io/zone": "west"}]
    assert dp["networking"]["inbound"] == own["networking"]["inbound"]
    listed = _get(central, "/meshes/default/dataplanes?filter[labels.kuma.io/zone]=west")
    assert listed is not None and name in [i["name"] for i in listed["items"]]
    for refused in (central.api.put(path, json={**REDIS, "name": name}),
                    central.api.delete(path)):
        assert refused.status_code == 409
        assert "zone 'west''s Dataplane 'redis-1'" in refused.json()["detail"]
    assert (_get(central, path) or {}).get("networking") == dp["networking"]
    in_east = _get(east, "/meshes/default/dataplanes?size=1000")
    assert in_east is not None and not [
        i for i in in_east["items"] if i["labels"].get("kuma.io/zone") != "east"]
    assert _get(east, path) is None


def test_a_synced_generated_meshservice_keeps_its_zones_ports_and_grace_period(
        planes: dict[str, ControlPlane]) -> None:
    """West's generated `cache` has, in east and on global, the ports it has in west (the
    existing ones win while a Dataplane has them, over the oldest's and a newer one's), and
    when its last Dataplane goes it waits out west's grace period (15 s, not the other
    planes' 1 h) in all three, with the same expiry, then goes."""
    west = planes["west"]
    planes["global"].apply({"type": "Mesh", "name": "default"})  # also when run alone
    wait_for(lambda: _get(west, "/meshes/default"), timeout=30, what="west's Mesh")
    west.apply(_dataplane("cache-1", "cache", "10.2.0.5", port=6379))
    west.apply(_dataplane("cache-2", "cache", "10.2.0.6", port=6379))
    west.apply(_dataplane("cache-1", "cache", "10.2.0.5", port=7000))  # the oldest's change
    west.apply(_dataplane("cache-3", "cache", "10.2.0.7", port=8000))
    paths = {zone: "/meshes/default/meshservices/" + (
        "cache" if zone == "west" else hashed_name("default", "cache", "west"))
        for zone in planes}

    def with_all(zone: str) -> dict[str, Any] | None:
        doc = _get(planes[zone], paths[zone])
        return doc if doc and doc["status"]["dataplaneProxies"]["total"] == 3 else None

    for zone in planes:  # cache-3 is there, so what west wrote before it is too
        ms = wait_for(functools.partial(with_all, zone), timeout=30,
                      what=f"west's cache with its three Dataplanes in {zone}")
        assert [p["port"] for p in ms["spec"]["ports"]] == [6379], zone

    for dp in ("cache-1", "cache-2", "cache-3"):
        assert west.api.delete(f"/meshes/default/dataplanes/{dp}").status_code == 200

    def expiring(zone: str) -> str | None:
        doc = _get(planes[zone], paths[zone])
        return next((c["message"] for c in (doc or {}).get("status", {}).get("conditions", [])
                     if c["type"] == "Expiring"), None)

    messages: dict[str, str] = {}

    def seen_expiring_everywhere() -> bool:
        # every plane polled in one loop: each shows `Expiring` only within the grace period,
        # which starts in each log when it folds the deregistrations
        for zone in planes.keys() - messages.keys():
            message = expiring(zone)
            if message is not None:
                messages[zone] = message
        return len(messages) == len(planes)

    wait_for(seen_expiring_everywhere, timeout=WEST_GRACE_S,
             what="west's cache waiting out its grace period in every plane")
    assert len(set(messages.values())) == 1, messages  # one expiry, west's, in every log

    def gone(zone: str) -> bool:
        return _get(planes[zone], paths[zone]) is None

    for zone in planes:
        wait_for(functools.partial(gone, zone), timeout=WEST_GRACE_S + 30,
                 what=f"west's cache gone from {zone} after west's grace period")


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
    west = _get(east, "/zones/west")
    assert west is not None and west["enabled"] is False
    assert central.api.put("/zones/west", json={"enabled": True}).status_code == 200
    wait_for(lambda: _has(east, "redis", "west"), timeout=30, what="west back")


def _services(cp: ControlPlane) -> set[tuple[str, str]]:
    """(display name, zone) of every MeshService `cp` has, local or synced."""
    items = (_get(cp, "/meshes/default/meshservices?size=1000") or {}).get("items", [])
    return {(i["labels"]["kuma.io/display-name"], i["labels"]["kuma.io/zone"]) for i in items}


def _has(cp: ControlPlane, service: str, zone: str) -> bool:
    return (service, zone) in _services(cp)


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
