"""MeshService `status.dataplaneProxies.connected` of the zones' MeshServices, in process on a
real nats-server. Kuma's global shows the status a zone computed (KDS syncs it zone ->
global), whose `connected` counts the zone's proxies online by their DataplaneInsights; here
global counts the zone's Dataplanes its MeshService selects whose proxies are connected by
the zone's insights synced to global (its `meshlog_zone_insights` bucket, written directly
here as the zones' sources would), by the zone's rule: a proxy whose gateway's last heartbeat
is older than the stale time (a cut link) is not counted. In a zone, another zone's
MeshService counts no proxy of this zone, even of the same `kuma.io/service`.

One log holds what global, west and east wrote; global's and east's projectors fold it, and
each API app serves its own read models with its own deployment.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import httpx
import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import GLOBAL_ZONE, JetStreamEventLog, Mesh, decode_resource
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight
from events.bus.zone_insights import ZONE_INSIGHTS_BUCKET, ensure_zone_insight_sources
from events.kds_hash import hashed_name
from services.api.proxy_inspector import ProxyInspector
from tests.harness import eventually
from tests.services._api_harness import folded_apis, multizone_commands

pytestmark = [
    pytest.mark.integration,
    # services/api.py's list routes use litestar's inferred query style; not this test's topic
    pytest.mark.filterwarnings("ignore::litestar.exceptions.LitestarDeprecationWarning"),
]

STALE_S = 600
"""The APIs' stale time here: no test depends on how fast the machine is."""
WEST_REDIS = hashed_name("default", "redis", "west")
WEST_CACHE = hashed_name("default", "cache", "west")
EAST_REDIS = hashed_name("default", "redis", "east")


def _dp(name: str, service: str, address: str) -> dict[str, Any]:
    return {"type": "Dataplane", "mesh": "default", "name": name,
            "networking": {"address": address, "inbound": [
                {"port": 6379, "tags": {"kuma.io/service": service}}]}}


def _insight(name: str, gateway: str, at: int, **extra: Any) -> bytes:
    return msgspec.json.encode(ProxyInsight(mesh="default", name=name, gateway=gateway,
                                            session=f"s-{name}", connected_at=at, **extra))


def _beat(instance: str, at: int) -> bytes:
    return msgspec.json.encode(GatewayHeartbeat(instance=instance, address="127.0.0.1:1",
                                                started_at=at, beat_at=at))


class Apis(msgspec.Struct):
    central: httpx.AsyncClient
    east: httpx.AsyncClient


@pytest.fixture
async def apis(nc: NATS, tmp_path: Path) -> AsyncIterator[Apis]:
    """West: redis-1 (connected), redis-2 (on a gateway last heard of 700 s ago, no
    disconnect time: a cut link), redis-3 (disconnected), and an explicit MeshService `cache`
    selecting cache-1 (connected); east: redis-9 (connected, in east's own insights and in
    global's copy)."""
    log = await JetStreamEventLog.open(nc)
    central, east, west = multizone_commands(log)
    await central.apply(Mesh(name="default"))
    for n, name in enumerate(("redis-1", "redis-2", "redis-3")):
        await west.apply(decode_resource(_dp(name, "redis", f"10.2.0.{n + 1}")))
    await west.apply(decode_resource(_dp("cache-1", "cache", "10.2.0.9")))
    await west.apply(decode_resource({
        "type": "MeshService", "mesh": "default", "name": "cache",
        "spec": {"selector": {"dataplaneTags": {"kuma.io/service": "cache"}},
                 "ports": [{"port": 6379}]}}))
    last = (await east.apply(decode_resource(_dp("redis-9", "redis", "10.1.0.9")))).seq
    now = time.time_ns() // 1_000_000
    old = now - 700_000
    await ensure_zone_insight_sources(nc, [])  # global's copy, no source: written below
    zoned = await nc.jetstream().key_value(ZONE_INSIGHTS_BUCKET)
    for key, value in (("west.gateway.gw-w", _beat("gw-w", now)),
                       ("west.gateway.gw-gone", _beat("gw-gone", old)),
                       ("west.proxy.default.redis-1", _insight("redis-1", "gw-w", now)),
                       ("west.proxy.default.redis-2", _insight("redis-2", "gw-gone", old)),
                       ("west.proxy.default.redis-3", _insight("redis-3", "gw-w", now,
                                                                disconnected_at=now)),
                       ("west.proxy.default.cache-1", _insight("cache-1", "gw-w", now)),
                       ("east.gateway.gw-e", _beat("gw-e", now)),
                       ("east.proxy.default.redis-9", _insight("redis-9", "gw-e", now))):
        await zoned.put(key, value)
    own = await JetStreamInsights.open(nc)  # east's own bucket (this one server is east's)
    await own.beat(GatewayHeartbeat(instance="gw-e", address="127.0.0.1:1", started_at=now,
                                    beat_at=now))
    await own.put(ProxyInsight(mesh="default", name="redis-9", gateway="gw-e", session="s",
                               connected_at=now))
    async with folded_apis(log, ((GLOBAL_ZONE, central), ("east", east)), tmp_path,
                           until_seq=last, inspector=lambda: ProxyInspector(
                               nc, config_timeout_s=5, snapshot_ttl_s=0.2,
                               stale_after_s=STALE_S)) as (on_global, on_east):
        yield Apis(central=on_global, east=on_east)


async def _proxies(client: httpx.AsyncClient) -> dict[str, dict[str, int]]:
    """`dataplaneProxies` of each MeshService listed, and the same from a GET of each."""
    items = (await client.get("/meshes/default/meshservices")).json()["items"]
    listed = {i["name"]: i["status"]["dataplaneProxies"] for i in items}
    for name, proxies in listed.items():
        one = (await client.get(f"/meshes/default/meshservices/{name}")).json()
        assert one["status"]["dataplaneProxies"] == proxies, name
    return cast("dict[str, dict[str, int]]", listed)


async def test_global_counts_a_zones_connected_proxies_from_its_synced_insights(
        apis: Apis) -> None:
    proxies = await eventually(lambda: _counted(apis.central), "the zones' counts on global")
    # redis-2's gateway was last heard of past the stale time: not counted; redis-3 is gone
    assert proxies[WEST_REDIS] == {"total": 3, "connected": 1, "healthy": 3}
    assert proxies[WEST_CACHE] == {"total": 1, "connected": 1, "healthy": 1}  # explicit
    assert proxies[EAST_REDIS] == {"total": 1, "connected": 1, "healthy": 1}  # not west's


async def _counted(client: httpx.AsyncClient) -> dict[str, dict[str, int]] | None:
    proxies = await _proxies(client)
    return proxies if proxies.get(WEST_REDIS, {}).get("connected") else None


async def test_a_zone_counts_none_of_its_proxies_for_another_zones_meshservice(
        apis: Apis) -> None:
    async def east_counted() -> dict[str, dict[str, int]] | None:
        proxies = await _proxies(apis.east)
        return proxies if proxies["redis"]["connected"] == 1 else None

    proxies = await eventually(east_counted, "east's own redis counted")
    # west's redis selects kuma.io/service=redis as east's redis-9 has it: it is west's
    assert proxies[WEST_REDIS] == {"total": 3, "connected": 0, "healthy": 3}
    assert proxies[WEST_CACHE]["connected"] == 0
