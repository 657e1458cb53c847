"""A zone's proxies on global judged in the zone's time (services.api._clock_offsets), on real
nats-servers: global's (JetStream domain `global`) and two zones' (`west`, `east`) joined to it
as leafnodes, as `meshlog up` joins them, global's `meshlog_zone_insights` bucket sourcing
each zone's `meshlog_insights` (events.bus.zone_insights). In each zone a gateway's insight
publisher (xds_gateway.proxies.insight_publisher) writes its heartbeats and a proxy's insight
with its host's clock: west's 60 s behind global's, east's 60 s ahead. Global's reader of the
zones' insights (what its API shows, `SyncedInsights`) calls both proxies connected, says how
far each zone's clock is (`clockOffsetSeconds`, never less than the true offset: the link's
delay is in it), and calls each not connected once its zone's gateway stops, while the link is
up: the zone's "now" keeps running without its heartbeats.

Without the offsets, west's proxy was never connected on global (its heartbeats look 60 s
old) and east's stayed connected 60 s after its gateway stopped (longer than the wait)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import pytest
from nats.aio.client import Client as NATS

from events import connect_nats, now_ms
from events.bus._kv import stop_watcher
from events.bus.insights import BeatStamps, GatewayHeartbeat, JetStreamInsights
from events.bus.sources import upstream_answers
from events.bus.zone_insights import ZONE_INSIGHTS_BUCKET, ensure_zone_insight_sources
from services.api._zone_insights import SyncedInsights
from services.runtime.embedded_nats import run_nats_server
from tests.harness import cancel_until_done, eventually, free_port
from xds_gateway.proxies.insight_publisher import InsightsPublisher, Session

pytestmark = pytest.mark.integration

SKEW_MS = {"west": -60_000, "east": 60_000}
"""Each zone's clock against global's: west behind, east ahead."""
STALE_MS = 5_000
"""Global's stale time of a zone's heartbeat here: far less than the skew."""
PROXIES = [("west", "redis-1"), ("east", "redis-1")]


@pytest.fixture
async def planes(tmp_path: Path) -> AsyncIterator[dict[str, NATS]]:
    """Connections to global's nats-server and each zone's, once global's zone-insights
    bucket sources each zone's insights bucket over its leafnode."""
    port = free_port()
    (tmp_path / "global.conf").write_text(
        f"jetstream {{ domain: global }}\nleafnodes {{ host: 127.0.0.1, port: {port} }}\n")
    for zone in SKEW_MS:
        (tmp_path / f"{zone}.conf").write_text(
            f"jetstream {{ domain: {zone} }}\n"
            f"leafnodes {{ remotes: [{{ url: \"nats-leaf://127.0.0.1:{port}\" }}] }}\n")
    async with AsyncExitStack() as stack:
        urls = {name: await stack.enter_async_context(run_nats_server(
            tmp_path / name, config=tmp_path / f"{name}.conf", server_name=name))
            for name in ("global", *SKEW_MS)}
        conns: dict[str, NATS] = {}
        for name, url in urls.items():
            nc = await connect_nats(url, name=f"test-{name}")
            stack.push_async_callback(nc.close)
            conns[name] = nc
        for zone in SKEW_MS:
            await JetStreamInsights.open(conns[zone])  # the zone's bucket, as its gateway's
            await eventually(lambda z=zone: upstream_answers(  # type: ignore[misc]
                conns["global"], f"$JS.{z}.API", "KV_meshlog_insights"), f"{zone}'s leafnode")
        await ensure_zone_insight_sources(conns["global"], list(SKEW_MS))
        yield conns


@asynccontextmanager
async def _gateway(nc: NATS, skew_ms: int) -> AsyncIterator[InsightsPublisher]:
    """A zone's gateway whose host's clock is `skew_ms` off global's, beating until the
    block ends (then it stops as a gateway that dies: no final write)."""
    publisher = InsightsPublisher(await JetStreamInsights.open(nc),
                                  address=lambda: "127.0.0.1:1", heartbeat_s=0.5,
                                  clock=lambda: now_ms() + skew_ms)
    task = asyncio.create_task(publisher.run())
    try:
        session = Session(mesh="default", name="redis-1", protocol="sotw", user_agent="test",
                          types={}, connected_at=publisher.clock())
        assert await publisher.write_now(session)
        yield publisher
    finally:
        await cancel_until_done(task)


async def test_a_skewed_zones_proxies_are_connected_and_go_when_its_gateways_stop(
        planes: dict[str, NATS]) -> None:
    synced = SyncedInsights(planes["global"], stale_ms=STALE_MS, ttl_s=0.2, timeout_s=5)

    async def read() -> dict[tuple[str, str], dict[str, Any]]:
        return await synced.insights_of("default", PROXIES)

    async with AsyncExitStack() as west, AsyncExitStack() as east:
        for zone, stack in (("west", west), ("east", east)):
            await stack.enter_async_context(_gateway(planes[zone], SKEW_MS[zone]))

        async def both_connected() -> dict[tuple[str, str], dict[str, Any]] | None:
            docs = await read()
            return docs if all(d.get("connected") for d in docs.values()) else None

        docs = await eventually(both_connected, "both zones' proxies connected on global")
        offsets = {zone: docs[(zone, name)]["syncedFrom"]["clockOffsetSeconds"]
                   for zone, name in PROXIES}
        # global's clock minus the zone's, the link's delay in it: never less than the skew
        assert offsets["west"] >= 60, offsets
        assert 0 > offsets["east"] >= -60, offsets
        assert all(d["syncedFrom"]["current"] for d in docs.values()), docs
        # MeshService counts on global take the same verdict
        assert await eventually(lambda: _counted(synced, set(PROXIES)),
                                "both proxies counted connected on global")

        await west.aclose()  # west's gateway stops, its link up
        gone = await eventually(lambda: _gone(read(), ("west", "redis-1")),
                                "west's proxy not connected on global")
        assert "disconnectTime" in gone["subscriptions"][0], gone
        assert (await read())[("east", "redis-1")]["connected"] is True  # east still beats
        assert await eventually(lambda: _counted(synced, {("east", "redis-1")}),
                                "only east's proxy counted")

        await east.aclose()  # and east's: its clock ahead does not keep it connected
        gone = await eventually(lambda: _gone(read(), ("east", "redis-1")),
                                "east's proxy not connected on global")
        assert "disconnectTime" in gone["subscriptions"][0], gone
        assert await eventually(lambda: _counted(synced, set()), "no proxy counted")


async def _gone(docs: Any, proxy: tuple[str, str]) -> dict[str, Any] | None:
    """The proxy's insight once not connected while its zone's insights are current (the
    link up: its gateway stopped, not its link)."""
    doc: dict[str, Any] = (await docs)[proxy]
    return doc if not doc["connected"] and doc["syncedFrom"]["current"] else None


async def _counted(synced: SyncedInsights, proxies: set[tuple[str, str]]) -> bool:
    return await synced.connected("default") == proxies


async def test_global_stamps_a_synced_heartbeat_with_its_own_clock(
        planes: dict[str, NATS]) -> None:
    """What the offsets rest on: a sourced message is stamped when global's stream stores it
    (nats-server's `processInboundSourceMsg` stores it as a new message), not with the time
    the zone's stream stored it. On one host the two clocks are one: global's stamp (to the
    microsecond, as nats-py gives it) is the later, never the zone's copied."""
    west = await JetStreamInsights.open(planes["west"])
    await west.beat(GatewayHeartbeat(instance="gw-w", address="127.0.0.1:1", started_at=0,
                                     beat_at=now_ms()))
    central = await JetStreamInsights.open_existing(planes["global"], ZONE_INSIGHTS_BUCKET)

    async def synced() -> BeatStamps | None:
        stamps = (await central.stamped_zoned_snapshot())[1]
        return stamps if ("west", "gw-w") in stamps else None

    await eventually(synced, "west's heartbeat on global")  # as the reader sees it
    in_west = await _stored(planes["west"], "meshlog_insights", "gateway.gw-w")
    on_global = await _stored(planes["global"], ZONE_INSIGHTS_BUCKET, "west.gateway.gw-w")
    assert on_global > in_west, (on_global, in_west)


async def _stored(nc: NATS, bucket: str, key: str) -> datetime:
    """When the bucket's stream stored the value of `key` (its message's timestamp)."""
    watcher = await (await nc.jetstream().key_value(bucket)).watch(key)
    try:
        async for entry in watcher:
            assert entry is not None and entry.created is not None, key
            return cast("datetime", entry.created)  # typed int by nats-py, a datetime
    finally:
        await stop_watcher(watcher)
    raise AssertionError(f"no value of {key} in {bucket}")
