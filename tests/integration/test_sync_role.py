"""The sync role (README, NATS permissions): what keeps a multi-zone control plane's stream
sources (services.runtime.zone_sync) runs as a user of its own, on real nats-servers
configured with `meshlog nats-users`' auth.conf. A global and a zone made of separate
`meshlog api` and `meshlog projector --sync-creds` processes, every one with its role's
seed, sync both ways over the printed leafnode link, and no server refuses them anything;
the sync's user changes its stream's sources, through the source keeper (admin: `meshlog
projector --admin-creds`), but may not update a stream itself (its limits), append an event,
register another zone, remove the stream or its messages, change another stream, or write the
projections."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from nats.js import JetStreamContext

from events import (
    EventLogUnavailable,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    ZoneApplied,
    resource_subject,
)
from events.bus.insights import BUCKET as INSIGHTS_BUCKET
from events.bus.insights import JetStreamInsights, ProxyInsight
from events.bus.nats_access import NatsPermissionDenied, refusals_of
from events.bus.permissions import Role, permissions
from events.bus.projection_bus import BUCKET, JetStreamProjectionBus
from events.bus.sources import ensure_sources, source_states, zone_filter, zone_sources
from events.bus.zone_insights import (
    ZONE_INSIGHTS_BUCKET,
    ZONE_INSIGHTS_STREAM,
    ensure_zone_insight_sources,
    forget_zone_insights,
)
from events.commands.zones import zone_subject
from events.kds_hash import hashed_name
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE
from services.runtime.embedded_nats import run_nats_server
from services.runtime.zone_sync import registered_zones
from tests.harness import eventually, stop_process
from tests.integration.test_nats_permissions import Plane, _process
from tests.integration.test_nats_users import (
    _global_and_east,
    _nats_users,
    _printed,
    _seeds,
    _server_conf,
    _tail,
)
from tests.integration.test_source_keeper import source_keeper

pytestmark = pytest.mark.integration

_TIMEOUT_S = 5.0


async def test_zones_of_separate_processes_sync_as_the_sync_role(tmp_path: Path) -> None:
    async with _global_and_east(tmp_path) as (central, east):
        started: list[tuple[subprocess.Popen[bytes], Path]] = []
        try:
            urls = {}
            for name, plane, mode in (("global", central, ("--mode", "global")),
                                      ("east", east, ("--mode", "zone", "--zone", "east"))):
                work = tmp_path / name
                common = (*mode, "--data-dir", str(work / "run"),
                          "--database", f"sqlite:///{work / 'readmodels.db'}")
                api = _process("api", plane, work / "api.log", *common, "--api-port", "0")
                started.append((api, work / "api.log"))
                started.append((_process("projector", plane, work / "projector.log", *common,
                                         "--sync-creds", str(plane.seeds["sync"]),
                                         "--admin-creds", str(plane.seeds["admin"])),
                                work / "projector.log"))
                urls[name] = await _printed(api, work / "api.log", "API listening on ")
            async with httpx.AsyncClient(timeout=10) as client:
                await _sync_both_ways(client, urls["global"], urls["east"], started)
        finally:
            for process, _ in started:
                stop_process(process, signal.SIGTERM)
    assert [process.returncode for process, _ in started] == [0, 0, 0, 0]
    assert "NATS permissions" not in "".join(log.read_text() for _, log in started)
    for side in ("global", "east"):  # every role, the sync's too, had what it needed
        server_log = (tmp_path / side / "data" / "nats-server.log").read_text()
        assert [line for line in server_log.splitlines() if "Violation" in line] == [], side


async def _sync_both_ways(client: httpx.AsyncClient, central: str, east: str,
                          started: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """A Mesh applied on global reaches east; a Dataplane applied in east reaches global
    under its synced name; global lists east, which registered itself."""

    async def found(url: str) -> bool:
        for process, log in started:
            assert process.poll() is None, f"{log}: exited\n{_tail(log)}"
        return (await client.get(url)).status_code == 200

    response = await client.put(f"{central}/meshes/default",
                                json={"type": "Mesh", "name": "default"})
    assert response.status_code == 201, response.text
    await eventually(lambda: found(f"{east}/meshes/default"), "global's Mesh in east",
                     within=60)
    dataplane = {"type": "Dataplane", "mesh": "default", "name": "redis-1",
                 "networking": {"address": "10.1.0.1", "inbound": [
                     {"port": 6379, "tags": {"kuma.io/service": "redis"}}]}}
    response = await client.put(f"{east}/meshes/default/dataplanes/redis-1", json=dataplane)
    assert response.status_code in (200, 201), response.text
    synced = f"{central}/meshes/default/meshservices/{hashed_name('default', 'redis', 'east')}"
    await eventually(lambda: found(synced), "east's redis on global", within=60)
    assert (await client.get(synced)).json()["labels"]["kuma.io/zone"] == "east"
    zones = (await client.get(f"{central}/zones")).json()
    assert [zone["name"] for zone in zones["items"]] == ["east"]


async def test_the_sync_role_keeps_the_sources_and_nothing_else(tmp_path: Path) -> None:
    _nats_users("--mode", "zone", "--zone", "east", "--out", str(tmp_path / "creds"))
    config = _server_conf(tmp_path, {"jetstream": {"domain": "east"}})
    async with run_nats_server(tmp_path / "data", config=config, server_name="east") as url:
        plane = Plane(url, _seeds(tmp_path))
        try:
            async with source_keeper(await plane.nc("admin"), "east"):
                await _keeps_the_sources_and_nothing_else(plane)
        finally:
            for nc in plane.connections.values():
                await nc.close()


async def _keeps_the_sources_and_nothing_else(plane: Plane) -> None:
    await JetStreamEventLog.open(await plane.nc("api"), subjects=[zone_filter("east")])
    await JetStreamProjectionBus.open(await plane.nc("projector"))
    nc = await plane.nc("sync")
    js = nc.jetstream(timeout=_TIMEOUT_S)
    log = JetStreamEventLog(nc, js, EVENTS_STREAM)
    # what it is for: the zones its log names, and the stream's sources
    assert await registered_zones(log) == []
    wanted = zone_sources("east", ["east", "west"])
    assert await ensure_sources(nc, wanted, zone="east")
    assert not await ensure_sources(nc, wanted, zone="east")
    admin = (await plane.nc("admin")).jetstream(timeout=_TIMEOUT_S)
    info = await admin.stream_info(EVENTS_STREAM)
    assert sorted(source.filter_subject or "" for source in info.config.sources or []) == \
        sorted(spec.filter_subject for spec in wanted)
    # what it is not for: an event of its zone, another zone's registration on global
    for subject, event in ((resource_subject("Mesh", None, "evil", zone="east"),
                            MeshApplied(at=1, mesh=Mesh(name="evil"))),
                           (zone_subject("west"), ZoneApplied(at=1, name="west"))):
        with pytest.raises(NatsPermissionDenied) as refused:
            await log.append(subject, event, expected_last_subject_seq=0, msg_id=subject)
        assert refused.value.subject == subject
    # the stream or its messages removed; another stream's rules changed; the projections
    for action, remove in (("PURGE", js.purge_stream), ("DELETE", js.delete_stream)):
        with pytest.raises(NatsPermissionDenied):
            async with refusals_of(nc).guard(f"$JS.API.STREAM.{action}.{EVENTS_STREAM}"):
                await remove(EVENTS_STREAM)
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard(f"$JS.API.STREAM.MSG.DELETE.{EVENTS_STREAM}"):
            await js.delete_msg(EVENTS_STREAM, 1)
    # the stream's own settings: the keeper changes its sources, never its limits
    limited = (await admin.stream_info(EVENTS_STREAM)).config
    limited.max_msgs = 1
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard(f"$JS.API.STREAM.UPDATE.{EVENTS_STREAM}"):
            await js.update_stream(limited)
    bucket_stream = f"KV_{BUCKET}"
    bucket = (await admin.stream_info(bucket_stream)).config
    bucket.max_msgs_per_subject = 100
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard(f"$JS.API.STREAM.UPDATE.{bucket_stream}"):
            await js.update_stream(bucket)
    checkpoint = f"$KV.{BUCKET}.meta/checkpoint"
    with pytest.raises(NatsPermissionDenied):
        async with refusals_of(nc).guard(checkpoint):
            await js.publish(checkpoint, b"999")
    after = await admin.stream_info(EVENTS_STREAM)
    assert after.state.messages == 0 and after.config.deny_delete and after.config.deny_purge
    assert (await admin.stream_info(bucket_stream)).config.max_msgs_per_subject != 100


async def test_on_global_the_sync_role_keeps_the_zone_insights_bucket(tmp_path: Path) -> None:
    """Global's sync makes `meshlog_zone_insights` and sources a zone's insights bucket into
    it over the leafnode link (events.bus.zone_insights); global's API reads it and may not
    write into it or change it; the sync may change no other bucket, and purges a deleted
    zone's keys (a publish to each key, its only write there)."""
    async with _global_and_east(tmp_path) as (central, east):
        theirs = await JetStreamInsights.open(await east.nc("gateway"))
        await theirs.put(ProxyInsight(mesh="default", name="redis-1", gateway="gw-1",
                                      session="s-1", connected_at=1))
        sync = await central.nc("sync")
        async with source_keeper(await central.nc("admin"), GLOBAL_ZONE):
            assert await ensure_zone_insight_sources(sync, ["east"])
            assert not await ensure_zone_insight_sources(sync, ["east"])
            api = await central.nc("api")

            async def synced() -> ProxyInsight | None:
                try:
                    bucket = await JetStreamInsights.open_existing(api, ZONE_INSIGHTS_BUCKET)
                    zones = await bucket.zoned_snapshot()
                except EventLogUnavailable:
                    return None
                return zones.get("east", ({}, {}))[0].get(("default", "redis-1"))

            insight = await eventually(synced, "east's insight in global's bucket", within=60)
            assert insight.session == "s-1"
            [state] = await source_states(api, stream=ZONE_INSIGHTS_STREAM)
            assert state.api == "$JS.east.API" and state.error is None
            key = f"$KV.{ZONE_INSIGHTS_BUCKET}.east.proxy.default.redis-1"
            own = f"KV_{INSIGHTS_BUCKET}"
            admin = (await central.nc("admin")).jetstream(timeout=_TIMEOUT_S)
            await JetStreamInsights.open(await central.nc("gateway"))  # global's own bucket
            attempts: list[tuple[Role, str, Callable[[JetStreamContext], Awaitable[object]]]] = [
                    ("api", key, lambda js: js.publish(key, b"{}")),
                    ("api", f"$JS.API.STREAM.UPDATE.{ZONE_INSIGHTS_STREAM}",
                     lambda js: _widen(js, admin, ZONE_INSIGHTS_STREAM)),
                    ("gateway", f"$JS.API.STREAM.UPDATE.{ZONE_INSIGHTS_STREAM}",
                     lambda js: _widen(js, admin, ZONE_INSIGHTS_STREAM)),
                    ("sync", f"$JS.API.STREAM.UPDATE.{own}", lambda js: _widen(js, admin, own)),
                    # its own sources are changed by the keeper: it may not update the stream
                    ("sync", f"$JS.API.STREAM.UPDATE.{ZONE_INSIGHTS_STREAM}",
                     lambda js: _widen(js, admin, ZONE_INSIGHTS_STREAM)),
                    ("sync", f"$JS.API.STREAM.PURGE.{ZONE_INSIGHTS_STREAM}",
                     lambda js: js.purge_stream(ZONE_INSIGHTS_STREAM))]
            for role, subject, attempt in attempts:
                nc = await central.nc(role)
                with pytest.raises(NatsPermissionDenied):
                    async with refusals_of(nc).guard(subject):
                        await attempt(nc.jetstream(timeout=_TIMEOUT_S))
            info = await admin.stream_info(ZONE_INSIGHTS_STREAM)
            assert info.config.max_msgs_per_subject == 1 and info.state.messages == 1
            assert (await admin.stream_info(own)).config.max_msgs_per_subject == 1
            # east deleted: its source goes, then the sync purges its keys (its marker left)
            assert await ensure_zone_insight_sources(sync, [])
            assert await forget_zone_insights(sync, ["east"]) == {"east": 1}
            assert await synced() is None
    # a zone's API gets no grant to it (only global has the bucket)
    assert not [s for s in permissions("api", "east").publish if ZONE_INSIGHTS_STREAM in s]
    assert not [s for s in permissions("sync", "east").publish if ZONE_INSIGHTS_STREAM in s]


async def _widen(js: JetStreamContext, admin: JetStreamContext, stream: str) -> None:
    """An update of `stream` that keeps more than one value per key."""
    config = (await admin.stream_info(stream)).config
    config.max_msgs_per_subject = 100
    await js.update_stream(config)
