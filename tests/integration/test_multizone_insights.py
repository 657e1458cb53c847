"""A zone's proxy insights on global (Kuma syncs DataplaneInsights zone -> global): a real
global and a real zone (west, its leafnode link through a proxy the test cuts), each a
`meshlog up` with its own nats-server. A raw ADS client connected to west's gateway as
west's `redis-1` shows on global, under its synced name, in `dataplanes+insights`,
`_overview` and `meshlog inspect dataplane`, as west has it (connected, gateway, session, ACK
counts); it turns disconnected on global when its stream ends in west; over a cut link global
shows its last known insight, says how old it is and stops calling the proxy connected once
west's gateway heartbeats are stale, and catches up with what west saw meanwhile once the link
is back; when west deletes the Dataplane, global lists it no more. West's MeshService `redis`
on global counts its proxy connected (`dataplaneProxies.connected`) as west does, and stops
counting it when west's insights say it is gone or go stale over the cut link. Neither
nats-server logs a permission violation (the sync's and the API's users do what the bucket
needs)."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import grpc
import httpx
import pytest

from events.kds_hash import hashed_name
from tests._tcp_proxy import TcpProxy, tcp_proxy
from tests.harness import VENV_BIN, ControlPlane, eventually, meshlog_up
from tests.xds_gateway._ads import AdsClient
from xds_gateway.type_urls import CLUSTER

pytestmark = pytest.mark.integration

REDIS = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
         "networking": {"address": "10.2.0.1", "inbound": [
             {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}
SYNCED = hashed_name("default", "redis-1", "west")
SYNCED_MS = hashed_name("default", "redis", "west")
"""West's generated MeshService `redis`, synced to global."""
STALE_S = 15
"""The API's stale time of a gateway's heartbeat (services.api.proxy_inspector)."""


@pytest.fixture(scope="module")
def planes(tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[ControlPlane, ControlPlane, TcpProxy]]:
    with ExitStack() as stack:
        central = stack.enter_context(meshlog_up(tmp_path_factory.mktemp("global"), "--mode",
                                                 "global", "--leaf-port", "0"))
        url = central.where["global_url"]
        link = stack.enter_context(tcp_proxy(("127.0.0.1", int(url.rpartition(":")[2]))))
        west = stack.enter_context(meshlog_up(
            tmp_path_factory.mktemp("west"), "--zone", "west",
            "--global", f"{url.rpartition(':')[0]}:{link.port}"))
        yield central, west, link


async def _get(client: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
    response = await client.get(path)
    return cast("dict[str, Any]", response.json()) if response.status_code == 200 else None


async def _listed(central: httpx.AsyncClient) -> dict[str, Any] | None:
    """Global's `dataplanes+insights` item of west's redis-1, if listed."""
    page = await _get(central, "/meshes/default/dataplanes+insights?size=1000")
    return next((i for i in (page or {}).get("items", []) if i["name"] == SYNCED), None)


async def _redis_in_west(central: httpx.AsyncClient, west: httpx.AsyncClient
                         ) -> dict[str, Any]:
    """Global's Mesh, west's redis-1 (both unchanged if there), and global's list item of it."""
    assert (await central.put("/meshes/default", json={"type": "Mesh", "name": "default"})
            ).status_code in (200, 201)
    await eventually(lambda: _get(west, "/meshes/default"), "the Mesh in west", within=60)
    assert (await west.put("/meshes/default/dataplanes/redis-1", json=REDIS)
            ).status_code in (200, 201)

    async def with_insight() -> dict[str, Any] | None:
        item = await _listed(central)  # and its insight read (the bucket made by the sync)
        return item if item and "syncedFrom" in item["dataplaneInsight"] else None

    return await eventually(with_insight, "west's redis-1 on global", within=60)


async def _insight(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    doc = await _get(client, f"/meshes/default/dataplanes/{name}/_overview")
    assert doc is not None, name
    return cast("dict[str, Any]", doc["dataplaneInsight"])


@asynccontextmanager
async def _proxy(west: ControlPlane) -> AsyncIterator[AdsClient]:
    """West's redis-1 on an ADS stream to west's gateway, its first clusters ACKed."""
    token = west.dataplane_token("redis-1")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{west.xds_port}") as channel:

        async def served() -> AdsClient | None:
            """The stream, its first clusters ACKed; None while west's gateway does not know
            the token's signing key yet (the first token of the mesh made it a moment ago:
            a proxy retries, as Envoy does)."""
            client = AdsClient(channel, (("authorization", token),))
            client.send(CLUSTER, node_id="default.redis-1")
            try:
                response = await client.recv(within=30)
            except grpc.aio.AioRpcError as exc:
                client.close()
                if "not here yet" in (exc.details() or ""):
                    return None
                raise
            client.ack(response)
            return client

        client = await eventually(served, "redis-1's stream served on west's gateway")
        try:
            yield client
        finally:
            client.call.cancel()


def _same_stream(central: dict[str, Any], west: dict[str, Any]) -> bool:
    """Global's insight is west's: one subscription, the same session, gateway, times and
    counters."""
    ours, theirs = central["subscriptions"], west["subscriptions"]
    return (len(ours) == len(theirs) == 1 and central["connected"] == west["connected"]
            and ours[0] == theirs[0])


async def test_a_zones_proxy_insight_shows_on_global_under_its_synced_name(
        planes: tuple[ControlPlane, ControlPlane, TcpProxy]) -> None:
    central_cp, west_cp, _ = planes
    async with httpx.AsyncClient(base_url=central_cp.where["api"], timeout=30) as central, \
            httpx.AsyncClient(base_url=west_cp.where["api"], timeout=30) as west:
        listed = await _redis_in_west(central, west)
        # listed before its proxy ever connected: not connected, as in west
        assert listed["dataplaneInsight"]["connected"] is False
        assert listed["dataplaneInsight"]["subscriptions"] == []
        async with _proxy(west_cp):
            in_west = await eventually(
                lambda: _connected(_insight(west, "redis-1")), "redis-1 connected in west")

            async def alike() -> dict[str, Any] | None:
                """Global's item once it shows what west shows after the ACK (west writes
                the insight at connect, its counters at most once a second after)."""
                item = await _listed(central)
                theirs = await _insight(west, "redis-1")
                acked = theirs["subscriptions"][0]["status"]["total"]["responsesAcknowledged"]
                return (item if item and acked >= 1
                        and _same_stream(item["dataplaneInsight"], theirs) else None)

            item = await eventually(alike, "west's insight of redis-1 on global", within=60)
            insight = item["dataplaneInsight"]
            assert insight["connected"] is True
            sub = insight["subscriptions"][0]
            assert sub["controlPlaneInstanceId"] == in_west["subscriptions"][0][
                "controlPlaneInstanceId"]
            assert sub["status"]["total"]["responsesAcknowledged"] >= 1
            synced = insight["syncedFrom"]
            assert synced["zone"] == "west" and synced["name"] == "redis-1"
            assert synced["current"] is True and "reason" not in synced
            # one host, one clock: the zone's offset is the heartbeats' smallest delay; it
            # comes with west's first heartbeat global stores, which can come after the
            # insight (services.api._clock_offsets), and stays
            synced = (await eventually(lambda: _with_offset(central),
                                       "west's clock offset on global", within=30)
                      )["dataplaneInsight"]["syncedFrom"]
            assert synced["clockOffsetSeconds"] >= 0, synced
            # west's MeshService on global counts it, as west's own does
            assert await eventually(lambda: _ms_connected(central, SYNCED_MS, 1),
                                    "redis counting redis-1 on global", within=30)
            assert await eventually(lambda: _ms_connected(west, "redis", 1),
                                    "redis counting redis-1 in west", within=30)
            # `_overview` and `meshlog inspect` on global: the same insight
            overview = await _insight(central, SYNCED)
            assert overview["connected"] is True
            assert overview["subscriptions"][0]["id"] == sub["id"]
            text = await asyncio.to_thread(_meshlog, "--api", central_cp.where["api"],
                                           "inspect", "dataplane", SYNCED)
            facts = dict(re.split(r"\s{2,}", line, maxsplit=1)
                         for line in text.split("\n\n")[0].splitlines())
            assert facts["CONNECTED"] == "yes" and facts["ZONE"] == "west (as redis-1)", text
            assert facts["ZONE CLOCK"].endswith(" behind global's (link delay included)"), text
            # `_config` is still the zone's gateways' to compute
            config = await central.get(f"/meshes/default/dataplanes/{SYNCED}/_config")
            assert config.status_code == 404 and "zone 'west'" in config.json()["detail"]
        # the stream ended in west: disconnected on global too, at west's time
        gone = await eventually(lambda: _disconnected(_insight(central, SYNCED)),
                                "redis-1 disconnected on global", within=60)
        in_west = await _insight(west, "redis-1")
        assert in_west["connected"] is False
        assert gone["subscriptions"] == in_west["subscriptions"]
        assert await eventually(lambda: _ms_connected(central, SYNCED_MS, 0),
                                "redis counting no proxy on global", within=30)


async def test_over_a_cut_link_global_shows_the_last_known_insight_then_catches_up(
        planes: tuple[ControlPlane, ControlPlane, TcpProxy]) -> None:
    central_cp, west_cp, link = planes
    async with httpx.AsyncClient(base_url=central_cp.where["api"], timeout=30) as central, \
            httpx.AsyncClient(base_url=west_cp.where["api"], timeout=30) as west:
        await _redis_in_west(central, west)  # also when run alone
        # an earlier stream's session (the test before's, or none), in west: ours is another
        earlier = [s["id"] for s in (await _insight(west, "redis-1"))["subscriptions"]]
        async with _proxy(west_cp):
            ours = await eventually(lambda: _new_stream(west, earlier),
                                    "redis-1's new stream connected in west")
            session = ours["subscriptions"][0]["id"]
            await eventually(lambda: _connected_as(_insight(central, SYNCED), session),
                             "redis-1's new stream connected on global", within=60)
            cut_at = datetime.now(UTC)
            link.cut()
            try:
                # the copy is the last known one, and says so
                stale = await eventually(lambda: _not_current(_insight(central, SYNCED)),
                                         "global's copy of west's insights marked old",
                                         within=60)
                assert stale["subscriptions"][0]["id"] == session
                assert "last known insight" in stale["syncedFrom"]["reason"]
                # west's heartbeats stop coming: not called connected any more, and no
                # disconnect time made up (west still serves the stream)
                unknown = await eventually(
                    lambda: _disconnected(_insight(central, SYNCED)),
                    "redis-1 no longer called connected over the cut link", within=STALE_S + 60)
                assert "disconnectTime" not in unknown["subscriptions"][0]
                assert unknown["syncedFrom"]["current"] is False
                # last heard from before the cut (nats-server resets a source's `active`
                # only on a message or a consumer made, neither over a cut link; the margin
                # is for what was in flight)
                as_of = datetime.fromisoformat(unknown["syncedFrom"]["asOf"])
                assert as_of <= cut_at + timedelta(seconds=STALE_S), (as_of, cut_at)
                assert (await _insight(west, "redis-1"))["connected"] is True
                assert await eventually(lambda: _ms_connected(central, SYNCED_MS, 0),
                                        "redis counting no proxy over the cut link", within=30)
                assert await eventually(lambda: _ms_connected(west, "redis", 1),
                                        "redis counting redis-1 in west", within=30)
            finally:
                link.restore()
            back = await eventually(lambda: _current_and_connected(_insight(central, SYNCED)),
                                    "redis-1 connected on global after the link is back",
                                    within=120)
            assert back["subscriptions"][0]["id"] == session
            assert await eventually(lambda: _ms_connected(central, SYNCED_MS, 1),
                                    "redis counting redis-1 again", within=30)
            link.cut()  # and the stream ends while the link is cut
        try:
            in_west = await eventually(lambda: _disconnected(_insight(west, "redis-1")),
                                       "redis-1 disconnected in west")
            unaware = await _insight(central, SYNCED)  # global cannot know it yet
            assert "disconnectTime" not in unaware["subscriptions"][0]
        finally:
            link.restore()
        caught_up = await eventually(
            lambda: _current_and_disconnected(_insight(central, SYNCED)),
            "redis-1's disconnect on global after the link is back", within=120)
        assert caught_up["subscriptions"] == in_west["subscriptions"]
        # west deletes the Dataplane: global lists it no more
        assert (await west.delete("/meshes/default/dataplanes/redis-1")).status_code == 200
        await eventually(lambda: _absent(central), "redis-1 gone from global", within=60)
    for cp in (central_cp, west_cp):
        server_log = (cp.data_dir / "nats" / "nats-server.log").read_text()
        assert [line for line in server_log.splitlines() if "Violation" in line] == []


async def _with_offset(central: httpx.AsyncClient) -> dict[str, Any] | None:
    """Global's list item of west's redis-1 once it says west's clock offset."""
    item = await _listed(central)
    synced = (item or {}).get("dataplaneInsight", {}).get("syncedFrom", {})
    return item if "clockOffsetSeconds" in synced else None


async def _new_stream(west: httpx.AsyncClient, earlier: list[str]) -> dict[str, Any] | None:
    """West's insight of redis-1 once it is of a connected stream none of `earlier`."""
    insight = await _insight(west, "redis-1")
    subs = insight["subscriptions"]
    return insight if insight["connected"] and subs and subs[0]["id"] not in earlier else None


async def _connected_as(read: Any, session: str) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    subs = insight.get("subscriptions") or []
    return (insight if insight.get("connected") and subs and subs[0]["id"] == session
            else None)


async def _connected(read: Any) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    return insight if insight.get("connected") else None


async def _disconnected(read: Any) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    return insight if insight.get("subscriptions") and not insight["connected"] else None


async def _not_current(read: Any) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    return insight if insight["syncedFrom"]["current"] is False else None


async def _current_and_connected(read: Any) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    return insight if insight["syncedFrom"]["current"] and insight["connected"] else None


async def _current_and_disconnected(read: Any) -> dict[str, Any] | None:
    insight = cast("dict[str, Any]", await read)
    return (insight if insight["syncedFrom"]["current"] and not insight["connected"]
            and "disconnectTime" in insight["subscriptions"][0] else None)


async def _ms_connected(client: httpx.AsyncClient, name: str, count: int) -> bool:
    """Does MeshService `name` count `count` connected proxies?"""
    doc = await _get(client, f"/meshes/default/meshservices/{name}")
    return doc is not None and doc["status"]["dataplaneProxies"]["connected"] == count


async def _absent(central: httpx.AsyncClient) -> bool:
    page = await _get(central, "/meshes/default/dataplanes+insights?size=1000")
    return page is not None and SYNCED not in [i["name"] for i in page["items"]]


def _meshlog(*args: str) -> str:
    return subprocess.run([str(VENV_BIN / "meshlog"), *args], capture_output=True, text=True,
                          timeout=120, check=True).stdout
