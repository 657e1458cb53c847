"""A zone ingress's insight (Kuma's ZoneIngressOverview, `/zoneingresses+insights`) against a
real `meshlog up`: a real gRPC ADS stream from node `_zoneingress.<name>` on its gateway shows
the ingress connected, with its gateway and xDS counters, in the API and in
`meshlog inspect zoneingress`; once the stream ends it shows the disconnect."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from events.kds_hash import hashed_name
from tests.harness import VENV_BIN, ControlPlane, eventually, global_and_zone, meshlog_up
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

NAME = "ingress-1"


@pytest.fixture(scope="module")
def cp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    # without dataplane tokens: what is shown here does not depend on how the ingress
    # authenticates (tests/xds_gateway/test_zone_token_auth.py)
    with meshlog_up(tmp_path_factory.mktemp("ingress-insights"), "--no-auth") as plane:
        registered = plane.api.put(f"/zoneingresses/{NAME}", json={
            "type": "ZoneIngress", "name": NAME, "networking": {
                "address": "10.0.0.5", "port": 10001, "advertisedAddress": "203.0.113.5",
                "advertisedPort": 443}})
        assert registered.status_code in (200, 201), registered.text
        yield plane


def _overview(cp: ControlPlane) -> dict[str, Any]:
    response = cp.api.get(f"/zoneingresses+insights/{NAME}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def _inspect(cp: ControlPlane) -> dict[str, str]:
    out = subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], "inspect",
                          "zoneingress", NAME], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    facts = {}
    for line in out.splitlines():
        if line.strip() and line.split()[0] in ("TYPE", "cds", "total"):
            break  # the per-type table
        key, _, value = line.partition("  ")
        facts[key.strip()] = value.strip()
    return facts


async def test_an_ingress_stream_shows_in_its_overview_until_it_ends(cp: ControlPlane) -> None:
    before = _overview(cp)
    assert before["type"] == "ZoneIngressOverview"
    assert before["zoneIngress"]["zone"] == "default"
    assert before["zoneIngress"]["networking"]["advertisedPort"] == 443
    assert before["zoneIngressInsight"] == {"connected": False, "subscriptions": []}
    assert _inspect(cp)["CONNECTED"] == "no (never connected)"

    async with grpc.aio.insecure_channel(f"127.0.0.1:{cp.xds_port}") as channel:
        ads = AdsClient(channel)
        ads.send(CLUSTER, node_id=f"_zoneingress.{NAME}")
        first = await ads.recv()
        ads.ack(first)

        async def connected() -> dict[str, Any] | None:
            insight: dict[str, Any] = _overview(cp)["zoneIngressInsight"]
            subscriptions = insight.get("subscriptions") or []
            acked = subscriptions and subscriptions[-1]["status"].get("cds", {}).get(
                "responsesAcknowledged", 0) >= 1
            return insight if insight.get("connected") and acked else None

        insight = await eventually(connected, "the ingress connected, its CDS acknowledged")
        [subscription] = insight["subscriptions"]
        assert subscription["controlPlaneInstanceId"]
        assert "disconnectTime" not in subscription
        facts = _inspect(cp)
        assert facts["ZONE INGRESS"] == NAME
        assert facts["ZONE"] == "default"
        assert facts["ADDRESS"] == "10.0.0.5:10001"
        assert facts["ADVERTISED"] == "203.0.113.5:443"
        assert facts["CONNECTED"] == "yes"
        assert facts["GATEWAY"] == subscription["controlPlaneInstanceId"]
        listed = cp.api.get("/zoneingresses+insights").json()
        assert [(i["name"], i["zoneIngressInsight"]["connected"]) for i in listed["items"]] == [
            (NAME, True)]
        ads.close()

    async def disconnected() -> dict[str, Any] | None:
        insight: dict[str, Any] = _overview(cp)["zoneIngressInsight"]
        return None if insight.get("connected") else insight

    gone = await eventually(disconnected, "the ingress shown disconnected")
    assert "disconnectTime" in gone["subscriptions"][-1]
    assert _inspect(cp)["CONNECTED"] == "no"


def test_an_unknown_ingress_is_a_404_naming_it(cp: ControlPlane) -> None:
    response = cp.api.get("/zoneingresses+insights/nope")
    assert response.status_code == 404
    assert "ZoneIngress 'nope' not found" in response.text
    refused = subprocess.run([str(VENV_BIN / "meshlog"), "--api", cp.where["api"], "inspect",
                              "zoneingress", NAME, "--config"], capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0
    assert "--config is for a dataplane" in refused.stderr


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ControlPlane, ControlPlane, ControlPlane]]:
    root = tmp_path_factory.mktemp("planes")
    with global_and_zone(root, "west", "--no-auth") as (central, west), meshlog_up(
            root / "east", "--zone", "east", "--global", central.where["global_url"]) as east:
        yield central, west, east


async def test_global_shows_a_zones_ingress_with_the_zones_insight(
        planes: tuple[ControlPlane, ControlPlane, ControlPlane]) -> None:
    central, west, east = planes
    registered = west.api.put("/zoneingresses/west-ingress", json={
        "type": "ZoneIngress", "name": "west-ingress", "networking": {
            "address": "10.0.0.6", "port": 10001}})
    assert registered.status_code in (200, 201), registered.text

    def synced() -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = central.api.get("/zoneingresses+insights").json()["items"]
        return [i for i in items
                if i["labels"].get("kuma.io/display-name") == "west-ingress"]

    async def listed() -> list[dict[str, Any]] | None:
        return synced() or None

    [before] = await eventually(listed, "west's ingress synced to global")
    assert before["zoneIngress"]["zone"] == "west"
    assert before["zoneIngressInsight"].get("connected") is not True

    async with grpc.aio.insecure_channel(f"127.0.0.1:{west.xds_port}") as channel:
        ads = AdsClient(channel)
        ads.send(CLUSTER, node_id="_zoneingress.west-ingress")
        ads.ack(await ads.recv())

        async def connected() -> dict[str, Any] | None:
            [item] = synced()
            insight: dict[str, Any] = item["zoneIngressInsight"]
            return insight if insight.get("connected") else None

        insight = await eventually(connected, "west's ingress connected, seen on global")
        assert insight["syncedFrom"]["zone"] == "west"
        assert insight["syncedFrom"]["name"] == "west-ingress"
        one = central.api.get(f"/zoneingresses+insights/{before['name']}").json()
        assert one["zoneIngressInsight"]["connected"] is True
        ads.close()

        # another zone holds west's ingress (its services are reached through it) but not
        # its insight: it says where that is, instead of "never connected"
        async def on_east() -> list[dict[str, Any]] | None:
            items: list[dict[str, Any]] = east.api.get("/zoneingresses+insights").json()["items"]
            return [i for i in items if i["zoneIngress"]["zone"] == "west"] or None

        [elsewhere] = await eventually(on_east, "west's ingress synced to east")
        assert elsewhere["zoneIngressInsight"] == {
            "unavailable": "synced here from another control plane: its proxy's insight is on "
                           "zone 'west''s control plane (as 'west-ingress') or global's"}


async def test_global_finds_the_insight_of_a_zones_proxy_with_another_display_name(
        planes: tuple[ControlPlane, ControlPlane, ControlPlane]) -> None:
    """A user's `kuma.io/display-name` on a zone's ingress or Dataplane: global shows it (as
    Kuma does) and still finds the proxy's insight, which the zone's gateways key by the
    zone's name. Before, global looked it up by the label: "never connected"."""
    central, west, _ = planes
    registered = west.api.put("/zoneingresses/west-edge", json={
        "type": "ZoneIngress", "name": "west-edge", "labels": {"kuma.io/display-name": "edge"},
        "networking": {"address": "10.0.0.7", "port": 10001}})
    assert registered.status_code in (200, 201), registered.text
    assert central.api.put("/meshes/default", json={"type": "Mesh", "name": "default"}
                           ).status_code in (200, 201)
    await eventually(lambda: _found(west, "/meshes/default"), "the Mesh in west", within=60)
    west.apply({"type": "Dataplane", "mesh": "default", "name": "cache-1",
                "labels": {"kuma.io/display-name": "cache"},
                "networking": {"address": "10.0.0.8", "inbound": [
                    {"port": 6379, "tags": {"kuma.io/service": "cache-svc"}}]}})
    service = hashed_name("default", "cache-svc", "west")

    def ingress() -> dict[str, Any] | None:
        items = central.api.get("/zoneingresses+insights").json()["items"]
        return next((i for i in items if i["labels"].get("kuma.io/display-name") == "edge"),
                    None)

    def dataplane() -> dict[str, Any] | None:
        page = central.api.get("/meshes/default/dataplanes+insights?size=1000").json()
        return next((i for i in page["items"]
                     if i["labels"].get("kuma.io/display-name") == "cache"), None)

    async def both_listed() -> tuple[dict[str, Any], dict[str, Any]] | None:
        i, d = ingress(), dataplane()
        return (i, d) if i and d else None

    synced_ingress, synced_dp = await eventually(both_listed, "west's two synced to global",
                                                 within=60)
    assert synced_ingress["name"] == hashed_name("", "west-edge", "west")
    assert synced_dp["name"] == hashed_name("default", "cache-1", "west")

    async with grpc.aio.insecure_channel(f"127.0.0.1:{west.xds_port}") as channel:
        streams = [AdsClient(channel), AdsClient(channel)]
        for ads, node in zip(streams, ("_zoneingress.west-edge", "default.cache-1"),
                             strict=True):
            ads.send(CLUSTER, node_id=node)
            ads.ack(await ads.recv())

        async def connected() -> bool:
            listed_i, listed_d = ingress(), dataplane()
            overview = central.api.get(
                f"/meshes/default/dataplanes/{synced_dp['name']}/_overview").json()
            ms = central.api.get(f"/meshes/default/meshservices/{service}")
            count = (ms.json().get("status", {}).get("dataplaneProxies", {}).get("connected")
                     if ms.status_code == 200 else None)
            return bool(listed_i and listed_i["zoneIngressInsight"].get("connected")
                        and listed_d and listed_d["dataplaneInsight"].get("connected")
                        and overview["dataplaneInsight"].get("connected") and count == 1)

        await eventually(connected, "both connected on global, and counted by the "
                         "MeshService", within=60)
        shown = ingress()
        assert shown is not None
        assert shown["zoneIngressInsight"]["syncedFrom"]["name"] == "west-edge"
        shown_dp = dataplane()
        assert shown_dp is not None
        assert shown_dp["dataplaneInsight"]["syncedFrom"]["name"] == "cache-1"
        for ads in streams:
            ads.close()


async def _found(cp: ControlPlane, path: str) -> bool:
    return cp.api.get(path).status_code == 200
