"""What the API shows of other control planes' resources, in process on a real nats-server:
global lists and gets the zones' Dataplanes under Kuma's synced names with their zone's
labels, a zone lists only its own, a write to a synced Dataplane or MeshService is refused
naming where to make it, and global's Mesh shows `kuma.io/origin: global` everywhere.

One log holds what global, west and east wrote (each on its own subjects, as stream sources
bring them together); global's and east's projectors fold it into their own read models, and
each API app serves its own, with its own deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import GLOBAL_ZONE, JetStreamEventLog, Mesh, decode_resource
from events.commands import Commands
from events.kds_hash import hashed_name
from projections import Projector, ReadModelStore, open_store
from services.api.app import create_app

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]

SYNCED_DP = hashed_name("default", "redis-1", "west")
SYNCED_MS = hashed_name("default", "redis", "west")


def _dp(name: str, service: str, address: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "labels": {"team": service},
            "networking": {"address": address, "inbound": [
                {"port": 6379, "tags": {"kuma.io/service": service}}]}}


class Apis(msgspec.Struct):
    central: httpx.AsyncClient
    east: httpx.AsyncClient


@pytest.fixture
async def apis(nc: NATS, tmp_path: Path) -> AsyncIterator[Apis]:
    log = await JetStreamEventLog.open(nc)
    central = Commands(log, zone=GLOBAL_ZONE, deployment="global")
    east = Commands(log, zone="east", deployment="zone")
    await central.apply(Mesh(name="default"))
    await Commands(log, zone="west", deployment="zone").apply(
        decode_resource(_dp("redis-1", "redis", "10.2.0.1")))
    last = (await east.apply(decode_resource(_dp("web-1", "web", "10.1.0.1")))).seq
    stores: list[ReadModelStore] = []
    clients = []
    try:
        for zone, commands in ((GLOBAL_ZONE, central), ("east", east)):
            store = await open_store(f"sqlite:///{tmp_path / f'{zone}.db'}")
            stores.append(store)
            await Projector(log, store, None, zone=zone, export_metrics=False).run(
                until_seq=last)
            # no projector follows the writes the tests make: none waits for one
            app = create_app(commands, store, projection_wait_s=0)
            # Litestar's scope is a TypedDict, httpx wants a MutableMapping:
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            clients.append(httpx.AsyncClient(transport=transport, base_url="http://api"))
        yield Apis(central=clients[0], east=clients[1])
    finally:
        for client in clients:
            await client.aclose()
        for store in stores:
            await store.close()


async def test_global_lists_and_gets_the_zones_dataplanes_as_kuma_names_and_labels_them(
        apis: Apis) -> None:
    listed = (await apis.central.get("/meshes/default/dataplanes")).json()
    assert [i["name"] for i in listed["items"]] == sorted(
        [SYNCED_DP, hashed_name("default", "web-1", "east")])
    assert listed["total"] == 2
    one = (await apis.central.get(f"/meshes/default/dataplanes/{SYNCED_DP}")).json()
    assert one["name"] == SYNCED_DP == "redis-1-4vd49bdbbz9x8b6x"
    assert one["labels"] == {
        "team": "redis", "kuma.io/display-name": "redis-1", "kuma.io/mesh": "default",
        "kuma.io/origin": "zone", "kuma.io/zone": "west", "kuma.io/env": "universal",
        "kuma.io/proxy-type": "sidecar", "meshlog.io/registered-by": "api"}
    assert one["networking"]["address"] == "10.2.0.1"
    west_only = (await apis.central.get(
        "/meshes/default/dataplanes?filter[labels.kuma.io/zone]=west")).json()
    assert [i["name"] for i in west_only["items"]] == [SYNCED_DP]
    # their proxies' insights stay in their zones: said so, not shown as disconnected
    overviews = (await apis.central.get("/meshes/default/dataplanes+insights")).json()
    west_overview = next(i for i in overviews["items"] if i["name"] == SYNCED_DP)
    assert west_overview["dataplaneInsight"] == {"unavailable": (
        "the insight of zone 'west''s proxy is not synced to global: see it on zone 'west''s "
        "control plane")}
    inspected = await apis.central.get(f"/meshes/default/dataplanes/{SYNCED_DP}/_overview")
    assert inspected.status_code == 404
    assert "its proxy's _overview and _config are on zone 'west''s control plane (as " \
        "'redis-1')" in inspected.json()["detail"]
    # a zone lists its own Dataplanes only: Kuma syncs none from zone to zone
    in_east = (await apis.east.get("/meshes/default/dataplanes")).json()
    assert [i["name"] for i in in_east["items"]] == ["web-1"]
    assert (await apis.east.get(f"/meshes/default/dataplanes/{SYNCED_DP}")).status_code == 404


async def test_a_write_to_a_synced_dataplane_or_meshservice_is_refused_naming_its_zone(
        apis: Apis) -> None:
    doc = _dp(SYNCED_DP, "redis", "10.2.0.9")
    for response in (await apis.central.put(f"/meshes/default/dataplanes/{SYNCED_DP}", json=doc),
                     await apis.central.delete(f"/meshes/default/dataplanes/{SYNCED_DP}")):
        assert response.status_code == 409
        assert response.json()["detail"] == (
            f"Dataplane {SYNCED_DP!r} of mesh 'default' is zone 'west''s Dataplane 'redis-1', "
            "synced here under its synced name, read-only: change it on zone 'west''s control "
            "plane (as 'redis-1')")
    service = {"type": "MeshService", "mesh": "default", "name": SYNCED_MS,
               "spec": {"ports": [{"port": 6379}]}}
    for api in (apis.central, apis.east):
        path = f"/meshes/default/meshservices/{SYNCED_MS}"
        for response in (await api.put(path, json=service), await api.delete(path)):
            assert response.status_code == 409
            assert "is zone 'west''s MeshService 'redis'" in response.json()["detail"]
    # the synced ones are unchanged, and each zone still writes its own
    got = (await apis.central.get(f"/meshes/default/dataplanes/{SYNCED_DP}")).json()
    assert got["networking"]["address"] == "10.2.0.1"
    assert (await apis.east.delete("/meshes/default/dataplanes/web-1")).status_code == 200


async def test_globals_mesh_shows_origin_global_on_global_and_in_a_zone(apis: Apis) -> None:
    for api in (apis.central, apis.east):
        mesh = (await api.get("/meshes/default")).json()
        assert mesh["labels"] == {"kuma.io/origin": "global"}
    # applying back what a GET returned changes nothing (the origin is the control plane's)
    mesh = (await apis.central.get("/meshes/default")).json()
    again = await apis.central.put("/meshes/default", json=mesh)
    assert again.status_code == 200 and again.json()["unchanged"]
