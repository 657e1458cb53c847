"""A deleted zone's insights leave global with it (Kuma deletes a zone's insights with the
zone), on real nats-servers: global's (JetStream domain `global`) and a zone's (`west`)
joined to it as a leafnode, as `meshlog up` joins them, and global's sync supervisor
(services.runtime.zone_sync) keeping global's `meshlog_zone_insights` bucket
(events.bus.zone_insights).

Once global's log deletes west, west's source is removed and every `west.` key purged; west
registered again (the same install, which wrote meanwhile) gets back all it holds, the keys
it did not write again too (the source copies its bucket from the start, not from where it
stopped); west deleted while no sync runs is purged at the sync's first step; and a fresh
install of west shows only its own insights, none of the old install's, whether west was
deleted first or not; a bucket an earlier release made gets per-message TTLs for the purges'
markers. Before, the keys stayed: an old install's insight showed as the new one's,
`current` on global."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import msgspec
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from events import GLOBAL_ZONE, JetStreamEventLog, connect_nats
from events.bus.insights import GatewayHeartbeat, JetStreamInsights, ProxyInsight
from events.bus.sources import upstream_answers, zone_filter
from events.bus.zone_insights import (
    PURGE_MARKER_TTL_S,
    ZONE_INSIGHTS_BUCKET,
    ZONE_INSIGHTS_STREAM,
    ensure_zone_insight_sources,
    forget_zone_insights,
    held_zones,
)
from events.commands.zones import ZoneCommands
from services.runtime.embedded_nats import run_nats_server
from services.runtime.zone_sync import ZoneSync
from tests.harness import cancel_until_done, eventually, free_port

pytestmark = pytest.mark.integration


@asynccontextmanager
async def _server(root: Path, name: str, conf: str) -> AsyncIterator[NATS]:
    (root / f"{name}.conf").write_text(conf)
    async with run_nats_server(root / name, config=root / f"{name}.conf",
                               server_name=name) as url:
        nc = await connect_nats(url, name=f"test-{name}")
        try:
            yield nc
        finally:
            await nc.close()


@asynccontextmanager
async def _west(root: Path, port: int, install: str, central: NATS) -> AsyncIterator[NATS]:
    """West's nats-server, its store `install` (a fresh one: a fresh install), its insights
    bucket made, once global reaches it over the leafnode link."""
    conf = (f"jetstream {{ domain: west }}\n"
            f"leafnodes {{ remotes: [{{ url: \"nats-leaf://127.0.0.1:{port}\" }}] }}\n")
    async with _server(root, install, conf) as nc:
        await JetStreamInsights.open(nc)  # as its gateway makes it
        await eventually(lambda: upstream_answers(central, "$JS.west.API", "KV_meshlog_insights"),
                         "west's leafnode")
        yield nc


@asynccontextmanager
async def _sync(nc: NATS) -> AsyncIterator[ZoneSync]:
    sync = ZoneSync(nc, mode="global", zone=GLOBAL_ZONE, interval_s=0.1)
    task = asyncio.create_task(sync.run())
    try:
        yield sync
    finally:
        await cancel_until_done(task)


async def _write(nc: NATS, *names: str, session: str) -> None:
    """West's gateway `gw-<session>` beating and serving `names`."""
    bucket = await JetStreamInsights.open(nc)
    await bucket.beat(GatewayHeartbeat(instance=f"gw-{session}", address="127.0.0.1:1",
                                       started_at=1, beat_at=2))
    for name in names:
        await bucket.put(ProxyInsight(mesh="default", name=name, gateway=f"gw-{session}",
                                      session=session, connected_at=1))


async def _shown(central: NATS, proxies: dict[str, str], gateways: set[str]) -> bool:
    """Global's bucket shows exactly west's `proxies` ({name: session}) and `gateways`: its
    keys listed and read one by one (a watcher per poll would leave a consumer each, for
    nats-server to reap only seconds later)."""
    js = central.jetstream()
    prefix = f"$KV.{ZONE_INSIGHTS_BUCKET}.west."
    try:
        kv = await js.key_value(ZONE_INSIGHTS_BUCKET)
    except nats.js.errors.BucketNotFoundError:
        return False  # not made yet (the sync makes it)
    info = await js.stream_info(ZONE_INSIGHTS_STREAM, subjects_filter=f"{prefix}>")
    seen: dict[str, str] = {}
    beats: set[str] = set()
    for subject in info.state.subjects or {}:
        key = subject.removeprefix(prefix)
        try:
            value = (await kv.get(f"west.{key}")).value
        except (nats.js.errors.KeyNotFoundError, nats.js.errors.KeyDeletedError):
            continue  # a purge's marker
        kind, _, rest = key.partition(".")
        if kind == "proxy" and value:
            insight = msgspec.json.decode(value, type=ProxyInsight)
            seen[insight.name] = insight.session
        elif kind == "gateway":
            beats.add(rest)
    return seen == proxies and beats == gateways


async def _west_sourced(central: NATS) -> bool:
    config = (await central.jetstream().stream_info(ZONE_INSIGHTS_STREAM)).config
    return any(s.external is not None and s.external.api == "$JS.west.API"
               for s in config.sources or [])


async def test_a_deleted_zones_insights_are_purged_and_never_come_back_stale(
        tmp_path: Path) -> None:
    port = free_port()
    async with _server(tmp_path, "global", f"jetstream {{ domain: global }}\n"
                       f"leafnodes {{ host: 127.0.0.1, port: {port} }}\n") as central:
        zones = ZoneCommands(await JetStreamEventLog.open(
            central, subjects=[zone_filter(GLOBAL_ZONE)]))
        async with _west(tmp_path, port, "west-1", central) as west:
            await _write(west, "redis-1", "web-1", session="s-1")
            assert await zones.register("west")
            async with _sync(central):
                await eventually(lambda: _shown(central, {"redis-1": "s-1", "web-1": "s-1"},
                                                {"gw-s-1"}), "west's insights on global")
                await zones.delete("west", online=False)
                await eventually(lambda: _shown(central, {}, set()), "west's insights purged")
                assert not await _west_sourced(central)  # purged after its source went

                # the same install, back: all it holds comes again, web-1 it did not
                # write again too
                await _write(west, "redis-1", session="s-2")
                assert await zones.register("west")
                await eventually(lambda: _shown(
                    central, {"redis-1": "s-2", "web-1": "s-1"}, {"gw-s-1", "gw-s-2"}),
                    "west's insights back on global, all of them")

            # deleted while no sync runs (its source stays until one does): purged at the
            # first step of the next
            await zones.delete("west", online=False)
            assert await _west_sourced(central)
            async with _sync(central):
                await eventually(lambda: _shown(central, {}, set()),
                                 "west's insights purged at the sync's start")

        # a fresh install of west (a new store): only its own insights show, none of the
        # old install's, though it writes web-1 and gw-s-1 no more
        async with _west(tmp_path, port, "west-2", central) as fresh:
            await _write(fresh, "redis-1", session="s-3")
            assert await zones.register("west")
            async with _sync(central):
                await eventually(lambda: _shown(central, {"redis-1": "s-3"}, {"gw-s-3"}),
                                 "only the fresh install's insights on global")


async def test_a_zone_installed_afresh_without_being_deleted_shows_only_its_new_insights(
        tmp_path: Path) -> None:
    """West's data wiped and started again under its name, never deleted on global: the sync
    sees another install of west's bucket, purges the old install's keys and copies the new
    one's. Before, the old keys the new install does not write again stayed, shown as
    west's current insights."""
    port = free_port()
    async with _server(tmp_path, "global", f"jetstream {{ domain: global }}\n"
                       f"leafnodes {{ host: 127.0.0.1, port: {port} }}\n") as central:
        zones = ZoneCommands(await JetStreamEventLog.open(
            central, subjects=[zone_filter(GLOBAL_ZONE)]))
        assert await zones.register("west")
        async with _sync(central):
            async with _west(tmp_path, port, "west-1", central) as west:
                await _write(west, "redis-1", "web-1", session="s-1")
                await eventually(lambda: _shown(central, {"redis-1": "s-1", "web-1": "s-1"},
                                                {"gw-s-1"}), "west's insights on global")
            async with _west(tmp_path, port, "west-2", central) as fresh:
                await _write(fresh, "redis-1", session="s-2")
                await eventually(lambda: _shown(central, {"redis-1": "s-2"}, {"gw-s-2"}),
                                 "only the new install's insights on global")


async def test_a_zone_deleted_back_and_then_installed_afresh_in_one_sync_is_purged(
        tmp_path: Path) -> None:
    """One sync process throughout: west deleted, registered again (the same install), then
    installed afresh without being deleted. The delete's purge took west's recorded install
    too; the sync records it again when west is back, so the fresh install is seen as one.
    Before, it kept the install it had seen in memory and never recorded it again, and the
    old install's keys stayed, shown as the fresh one's."""
    port = free_port()
    async with _server(tmp_path, "global", f"jetstream {{ domain: global }}\n"
                       f"leafnodes {{ host: 127.0.0.1, port: {port} }}\n") as central:
        zones = ZoneCommands(await JetStreamEventLog.open(
            central, subjects=[zone_filter(GLOBAL_ZONE)]))
        async with _sync(central):
            async with _west(tmp_path, port, "west-1", central) as west:
                await _write(west, "redis-1", "web-1", session="s-1")
                assert await zones.register("west")
                await eventually(lambda: _shown(central, {"redis-1": "s-1", "web-1": "s-1"},
                                                {"gw-s-1"}), "west's insights on global")
                await zones.delete("west", online=False)
                await eventually(lambda: _shown(central, {}, set()), "west's insights purged")
                assert await zones.register("west")
                await eventually(lambda: _shown(central, {"redis-1": "s-1", "web-1": "s-1"},
                                                {"gw-s-1"}), "west's insights back")
            async with _west(tmp_path, port, "west-2", central) as fresh:
                await _write(fresh, "redis-1", session="s-2")
                await eventually(lambda: _shown(central, {"redis-1": "s-2"}, {"gw-s-2"}),
                                 "only the fresh install's insights on global")


async def test_a_bucket_an_earlier_release_made_gets_ttls_for_the_purges_markers(
        nc: NATS) -> None:
    """Global's bucket as an earlier release made it (no per-message TTL): the sync's first
    step turns TTLs on, so a purge's marker can expire; a zone's keys purged with it."""
    js = nc.jetstream()
    await js.add_stream(StreamConfig(
        name=ZONE_INSIGHTS_STREAM, subjects=[f"$KV.{ZONE_INSIGHTS_BUCKET}.>"],
        allow_direct=True, allow_rollup_hdrs=True, deny_delete=True,
        discard=DiscardPolicy.NEW, duplicate_window=120, max_consumers=-1, max_msgs=-1,
        max_msgs_per_subject=1, num_replicas=1, storage=StorageType.FILE))
    kv = await js.key_value(ZONE_INSIGHTS_BUCKET)
    await kv.put("west.gateway.gw-1", b"{}")
    await kv.put("east.gateway.gw-2", b"{}")
    assert await ensure_zone_insight_sources(nc, [])
    assert (await js.stream_info(ZONE_INSIGHTS_STREAM)).config.allow_msg_ttl
    assert await held_zones(nc) == {"west", "east"}
    assert await forget_zone_insights(nc, ["west"]) == {"west": 1}
    with pytest.raises(nats.js.errors.KeyNotFoundError):  # KeyDeletedError: a purge's marker
        await kv.get("west.gateway.gw-1")
    assert (await kv.get("east.gateway.gw-2")).value == b"{}"
    marker = await js.get_last_msg(ZONE_INSIGHTS_STREAM,
                                   f"$KV.{ZONE_INSIGHTS_BUCKET}.west.gateway.gw-1")
    assert marker.headers is not None
    assert marker.headers.get("Nats-TTL") == str(PURGE_MARKER_TTL_S)
