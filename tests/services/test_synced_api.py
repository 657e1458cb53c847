"""What the API shows of other control planes' resources, in process on a real nats-server:
global lists and gets the zones' Dataplanes under Kuma's synced names with their zone's
labels, a zone lists only its own, a write to a synced resource (a zone's Dataplane,
MeshService or ZoneIngress; global's HostnameGenerator or policy in a zone) is refused naming
where to make it while each control plane writes its own, and global's Mesh shows
`kuma.io/origin: global` everywhere. The refusal is decided from the log: what global and
west write once the projectors have stopped is refused as well, and a read that fails fails
the write.

One log holds what global, west and east wrote (each on its own subjects, as stream sources
bring them together); global's and east's projectors fold it into their own read models, and
each API app serves its own, with its own deployment.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    JetStreamEventLog,
    JetStreamUnavailable,
    Mesh,
    connect_nats,
    decode_resource,
    resource_subject,
)
from events.commands import Commands
from events.commands.zones import ZoneCommands
from events.kds_hash import hashed_name
from events.subjects import EVENTS_STREAM
from services.runtime.embedded_nats import run_nats_server
from tests.services._api_harness import folded_apis, multizone_commands

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]

SYNCED_DP = hashed_name("default", "redis-1", "west")
SYNCED_MS = hashed_name("default", "redis", "west")
SYNCED_ZI = hashed_name("", "zi-west", "west")
FROM_GLOBAL = ("is synced from the global control plane, read-only in this zone: change it on "
               "global (`meshlog --api <global API> ...`)")
WESTS_INGRESS = (f"ZoneIngress {SYNCED_ZI!r} is zone 'west''s ZoneIngress 'zi-west', synced "
                 "here under its synced name, read-only: change it on zone 'west''s control "
                 "plane (as 'zi-west')")


def _dp(name: str, service: str, address: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name, "labels": {"team": service},
            "networking": {"address": address, "inbound": [
                {"port": 6379, "tags": {"kuma.io/service": service}}]}}


def _mtp(name: str, action: str = "Allow") -> dict[str, Any]:
    return {"type": "MeshTrafficPermission", "mesh": "default", "name": name, "spec": {
        "targetRef": {"kind": "Mesh"},
        "from": [{"targetRef": {"kind": "Mesh"}, "default": {"action": action}}]}}


def _generator(template: str = "{{ .DisplayName }}.global.mesh.local") -> dict[str, Any]:
    return {"type": "HostnameGenerator", "name": "global-hg", "spec": {
        "template": template,
        "selector": {"meshService": {"matchLabels": {"kuma.io/display-name": "redis"}}}}}


def _ingress(name: str, address: str = "10.0.0.5") -> dict[str, Any]:
    return {"type": "ZoneIngress", "name": name, "networking": {
        "address": address, "port": 10001, "advertisedAddress": "203.0.113.5",
        "advertisedPort": 443}}


def _service(name: str, port: int) -> dict[str, Any]:
    return {"type": "MeshService", "mesh": "default", "name": name,
            "spec": {"selector": {"dataplaneTags": {"kuma.io/service": name}},
                     "ports": [{"port": port}]}}


class Apis(msgspec.Struct):
    central: httpx.AsyncClient
    east: httpx.AsyncClient
    log: JetStreamEventLog
    writers: dict[str, Commands]
    """The command sides of global (`GLOBAL_ZONE`), east and west, writing to `log`: what
    they write after the fixture is not folded (no projector follows)."""


@pytest.fixture
async def apis(nc: NATS, tmp_path: Path) -> AsyncIterator[Apis]:
    log = await JetStreamEventLog.open(nc)
    central, east, west = multizone_commands(log)
    await central.apply(Mesh(name="default"))
    await central.apply(decode_resource(_generator()))
    await central.apply(decode_resource(_mtp("allow-all")))
    await west.apply(decode_resource(_dp("redis-1", "redis", "10.2.0.1")))
    await west.apply(decode_resource(_ingress("zi-west")))
    await east.apply(decode_resource(_mtp("east-only")))
    await east.apply(decode_resource(_service("cache", 6380)))
    await east.apply(decode_resource(_ingress("zi-east")))
    last = (await east.apply(decode_resource(_dp("web-1", "web", "10.1.0.1")))).seq
    async with folded_apis(log, ((GLOBAL_ZONE, central), ("east", east)), tmp_path,
                           until_seq=last) as (on_global, on_east):
        yield Apis(central=on_global, east=on_east, log=log,
                   writers={GLOBAL_ZONE: central, "east": east, "west": west})


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
    # their proxies' insights come from their zones (tests/integration/
    # test_multizone_insights.py); this API has no NATS to read them from
    overviews = (await apis.central.get("/meshes/default/dataplanes+insights")).json()
    west_overview = next(i for i in overviews["items"] if i["name"] == SYNCED_DP)
    assert "no NATS connection" in west_overview["dataplaneInsight"]["unavailable"]
    inspected = await apis.central.get(f"/meshes/default/dataplanes/{SYNCED_DP}/_overview")
    assert inspected.status_code == 200
    assert inspected.json()["dataplane"]["labels"]["kuma.io/zone"] == "west"
    config = await apis.central.get(f"/meshes/default/dataplanes/{SYNCED_DP}/_config")
    assert config.status_code == 404
    assert "its proxy's _config is computed by zone 'west''s gateways: ask zone 'west''s " \
        "control plane (as 'redis-1')" in config.json()["detail"]
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


async def _refusals(api: httpx.AsyncClient, path: str, doc: dict[str, Any]) -> list[str]:
    """What a PUT of `doc` at `path` and a DELETE there say, both refused (409)."""
    details = []
    for response in (await api.put(path, json=doc), await api.delete(path)):
        assert response.status_code == 409, response.text
        details.append(response.json()["detail"])
    return details


async def _writes(api: httpx.AsyncClient, path: str, doc: dict[str, Any]) -> None:
    """A PUT of `doc` (a change) at `path`, then a DELETE there: both done."""
    put = await api.put(path, json=doc)
    assert put.status_code == 200 and not put.json()["unchanged"], put.text
    deleted = await api.delete(path)
    assert deleted.status_code == 200, deleted.text


async def test_a_zone_refuses_writes_to_what_global_and_other_zones_synced_not_to_its_own(
        apis: Apis) -> None:
    # global's generator and policy are kept under the key a zone's of that name would have:
    # a PUT would replace them in east's view, a DELETE then remove them
    assert await _refusals(apis.east, "/hostnamegenerators/global-hg", _generator(
        "{{ .DisplayName }}.mine")) == [f"HostnameGenerator 'global-hg' {FROM_GLOBAL}"] * 2
    assert await _refusals(apis.east, "/meshes/default/meshtrafficpermissions/allow-all",
                           _mtp("allow-all", "Deny")) == [
        f"MeshTrafficPermission 'allow-all' of mesh 'default' {FROM_GLOBAL}"] * 2
    kept = (await apis.east.get("/meshes/default/meshtrafficpermissions/allow-all")).json()
    assert kept["labels"]["kuma.io/origin"] == "global"
    assert kept["spec"]["from"][0]["default"]["action"] == "Allow"
    # west's ingress, under its synced name (its row's display name is west's name)
    assert await _refusals(apis.east, f"/zoneingresses/{SYNCED_ZI}",
                           _ingress(SYNCED_ZI)) == [WESTS_INGRESS] * 2
    # east's own, labelled `kuma.io/origin: zone`, `kuma.io/zone: east` in its read model
    await _writes(apis.east, "/meshes/default/meshservices/cache", _service("cache", 6381))
    await _writes(apis.east, "/meshes/default/meshtrafficpermissions/east-only",
                  _mtp("east-only", "Deny"))
    await _writes(apis.east, "/zoneingresses/zi-east", _ingress("zi-east", "10.0.0.6"))


async def test_global_refuses_writes_to_a_zones_ingress_not_to_its_own(apis: Apis) -> None:
    assert await _refusals(apis.central, f"/zoneingresses/{SYNCED_ZI}",
                           _ingress(SYNCED_ZI)) == [WESTS_INGRESS] * 2
    await _writes(apis.central, "/hostnamegenerators/global-hg",
                  _generator("{{ .DisplayName }}.g"))
    await _writes(apis.central, "/meshes/default/meshtrafficpermissions/allow-all",
                  _mtp("allow-all", "Deny"))


async def test_globals_mesh_shows_origin_global_on_global_and_in_a_zone(apis: Apis) -> None:
    for api in (apis.central, apis.east):
        mesh = (await api.get("/meshes/default")).json()
        assert mesh["labels"] == {"kuma.io/origin": "global"}
    # applying back what a GET returned changes nothing (the origin is the control plane's)
    mesh = (await apis.central.get("/meshes/default")).json()
    again = await apis.central.put("/meshes/default", json=mesh)
    assert again.status_code == 200 and again.json()["unchanged"]


async def test_a_write_racing_the_fold_is_refused_from_the_log(apis: Apis) -> None:
    """What global and west write once the projectors have stopped is in the log, not in
    either read model: a write to it is refused all the same, from the other control plane's
    subject of that name (the zone's, for a synced name of a registered zone), with its
    display name."""
    writers = apis.writers
    await ZoneCommands(apis.log).register("west")
    await writers[GLOBAL_ZONE].apply(decode_resource(_mtp("late-policy")))
    await writers[GLOBAL_ZONE].apply(decode_resource({**_generator(), "name": "late-hg"}))
    await writers["west"].apply(decode_resource(_service("late-svc", 7000)))
    # no MeshService event: west generates `late-gen` from the inbound, and so do the others
    await writers["west"].apply(decode_resource(_dp("late-1", "late-gen", "10.2.0.7")))
    await writers["west"].apply(decode_resource(_ingress("zi-late")))
    late_svc = hashed_name("default", "late-svc", "west")
    late_gen = hashed_name("default", "late-gen", "west")
    late_dp = hashed_name("default", "late-1", "west")
    late_zi = hashed_name("", "zi-late", "west")
    unfolded = [(apis.east, "/meshes/default/meshtrafficpermissions/late-policy"),
                (apis.east, "/hostnamegenerators/late-hg"),
                (apis.east, f"/meshes/default/meshservices/{late_svc}"),
                (apis.central, f"/meshes/default/meshservices/{late_gen}"),
                (apis.central, f"/meshes/default/dataplanes/{late_dp}"),
                (apis.east, f"/zoneingresses/{late_zi}")]
    for api, path in unfolded:
        assert (await api.get(path)).status_code == 404, path  # not folded

    assert await _refusals(apis.east, "/meshes/default/meshtrafficpermissions/late-policy",
                           _mtp("late-policy", "Deny")) == [
        f"MeshTrafficPermission 'late-policy' of mesh 'default' {FROM_GLOBAL}"] * 2
    assert await _refusals(apis.east, "/hostnamegenerators/late-hg", {
        **_generator("{{ .DisplayName }}.mine"), "name": "late-hg"}) == [
        f"HostnameGenerator 'late-hg' {FROM_GLOBAL}"] * 2
    for api in (apis.east, apis.central):
        for name, display in ((late_svc, "late-svc"), (late_gen, "late-gen")):
            assert await _refusals(api, f"/meshes/default/meshservices/{name}",
                                   _service(name, 7001)) == [
                f"MeshService {name!r} of mesh 'default' is zone 'west''s MeshService "
                f"{display!r}, synced here under its synced name, read-only: change it on "
                f"zone 'west''s control plane (as {display!r})"] * 2
        assert await _refusals(api, f"/zoneingresses/{late_zi}", _ingress(late_zi)) == [
            f"ZoneIngress {late_zi!r} is zone 'west''s ZoneIngress 'zi-late', synced here "
            "under its synced name, read-only: change it on zone 'west''s control plane (as "
            "'zi-late')"] * 2
    assert await _refusals(apis.central, f"/meshes/default/dataplanes/{late_dp}",
                           _dp(late_dp, "late-gen", "10.2.0.9")) == [
        f"Dataplane {late_dp!r} of mesh 'default' is zone 'west''s Dataplane 'late-1', "
        "synced here under its synced name, read-only: change it on zone 'west''s control "
        "plane (as 'late-1')"] * 2
    for api, path in unfolded:
        assert (await api.get(path)).status_code == 404, path  # nothing was written

    # once its origin deletes it, the name is free here (east's own policy, then)
    await writers[GLOBAL_ZONE].delete("MeshTrafficPermission", "default", "late-policy")
    await writers["west"].delete("MeshService", "default", "late-svc")
    for path, doc in (("/meshes/default/meshtrafficpermissions/late-policy",
                       _mtp("late-policy", "Deny")),
                      (f"/meshes/default/meshservices/{late_svc}", _service(late_svc, 7001))):
        created = await apis.east.put(path, json=doc)
        assert created.status_code == 201, created.text


async def test_globals_later_policy_of_a_zones_name_takes_it_over_as_kumas_sync_does(
        apis: Apis) -> None:
    """East's own policy, then global's of the same name: east shows global's (Kuma's sync
    overwrites the zone's of that name) and refuses to change or delete it; once global
    deletes its one, none is shown, and east's applied again, the same as its log still
    holds, is written again (not `unchanged`, which would leave it unshown)."""
    writers = apis.writers
    own = await writers["east"].apply(decode_resource(_mtp("shared", "Deny")))
    await writers[GLOBAL_ZONE].apply(decode_resource(_mtp("shared")))
    path = "/meshes/default/meshtrafficpermissions/shared"
    assert await _refusals(apis.east, path, _mtp("shared", "Deny")) == [
        f"MeshTrafficPermission 'shared' of mesh 'default' {FROM_GLOBAL}"] * 2
    await writers[GLOBAL_ZONE].delete("MeshTrafficPermission", "default", "shared")
    again = await apis.east.put(path, json=_mtp("shared", "Deny"))
    assert again.status_code == 200, again.text
    assert not again.json()["unchanged"] and again.json()["version"] > own.seq
    # and now it is east's own, the same once more: unchanged
    assert (await apis.east.put(path, json=_mtp("shared", "Deny"))).json()["unchanged"]


async def test_a_refusal_whose_read_fails_fails_the_write(tmp_path: Path) -> None:
    """The read of global's subject is refused by the server (a user that may not read global's
    policies; the request then times out): the zone's write of that name fails as JetStream
    unavailable and appends nothing, though its own subjects are readable."""
    config = tmp_path / "auth.conf"
    config.write_text(json.dumps({"authorization": {"users": [{
        "user": "east", "password": "secret", "permissions": {
            "publish": {"allow": [">"], "deny": [
                f"$JS.API.DIRECT.GET.{EVENTS_STREAM}.meshlog.ev._global.meshtrafficpermission.>",
                f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}"]},
            "subscribe": {"allow": [">"]}}}]}}))
    async with run_nats_server(tmp_path / "nats", config=config) as url:
        nc = await connect_nats(url.replace("nats://", "nats://east:secret@"), name="east")
        try:
            await JetStreamEventLog.open(nc)
            # the refused request's timeout: short, the answered ones stay well within it
            log = JetStreamEventLog(nc, nc.jetstream(timeout=2), EVENTS_STREAM, replicas=1)
            await Commands(log, zone=GLOBAL_ZONE, deployment="global").apply(
                Mesh(name="default"))
            east = Commands(log, zone="east", deployment="zone")
            with pytest.raises(JetStreamUnavailable, match=r"_global\.meshtrafficpermission"):
                await east.apply(decode_resource(_mtp("allow-all")))
            assert await log.last(resource_subject(
                "MeshTrafficPermission", "default", "allow-all", "east")) is None
            # its other writes go on: the read of its own subject is allowed
            await east.apply(decode_resource(_service("cache", 6380)))
        finally:
            await nc.close()
