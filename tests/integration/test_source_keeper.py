"""The source keeper (events.bus.source_keeper), on real nats-servers with `meshlog
nats-users`' users: the sync role may no longer update the event stream or global's
zone-insights stream (nats-server applies a stream update whole: limits, retention, subjects
with the sources); it asks the keeper, running as admin, which changes the sources and
nothing else, and only to sources the sync itself would make."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import ExternalStream, StreamSource, SubjectTransform

from events import EventLogUnavailable, JetStreamEventLog
from events.bus._source_updates import sources_subject, update_sources
from events.bus.connection import connect_nats
from events.bus.insights import BUCKET as INSIGHTS_BUCKET
from events.bus.nats_access import NatsPermissionDenied, refusals_of
from events.bus.permissions import ROLES, permissions
from events.bus.source_keeper import (
    MAX_SOURCES,
    SourceRefused,
    canonical_sources,
    serve_source_updates,
)
from events.bus.sources import (
    ensure_sources,
    global_sources,
    source_states,
    zone_filter,
    zone_sources,
)
from events.bus.zone_insights import (
    ZONE_INSIGHTS_BUCKET,
    ZONE_INSIGHTS_STREAM,
    ensure_zone_insight_sources,
)
from events.subjects import EVENTS_STREAM, GLOBAL_ZONE
from services.runtime.embedded_nats import run_nats_server
from tests.harness import eventually, free_port
from tests.integration.test_nats_permissions import Plane
from tests.integration.test_nats_users import _global_and_east, _nats_users, _seeds, _server_conf

pytestmark = pytest.mark.integration

_TIMEOUT_S = 5.0


@asynccontextmanager
async def source_keeper(admin: NATS, zone: str) -> AsyncIterator[None]:
    """The keeper serving on `admin`'s connection, from when the server has its
    subscriptions."""
    ready = asyncio.Event()
    task = asyncio.create_task(serve_source_updates(admin, zone, ready))
    try:
        await asyncio.wait_for(ready.wait(), timeout=_TIMEOUT_S)
        yield
    finally:
        task.cancel()
        await asyncio.wait([task])


async def _limit_update_refused(sync: NATS, admin: NATS, stream: str) -> None:
    """The sync's own update of `stream`'s limits is refused by nats-server (a permissions
    violation), and the stream keeps its limits."""
    config = (await admin.jetstream().stream_info(stream)).config
    before = config.max_msgs
    config.max_msgs = 1
    with pytest.raises(NatsPermissionDenied) as refused:
        async with refusals_of(sync).guard(f"$JS.API.STREAM.UPDATE.{stream}"):
            await sync.jetstream(timeout=_TIMEOUT_S).update_stream(config)
    assert refused.value.subject == f"$JS.API.STREAM.UPDATE.{stream}"
    assert (await admin.jetstream().stream_info(stream)).config.max_msgs == before


async def _ask(sync: NATS, zone: str, stream: str, body: dict[str, object] | bytes
               ) -> tuple[str, dict[str, object]]:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await sync.request(sources_subject(zone, stream), payload,
                               timeout=_TIMEOUT_S)
    return (reply.headers or {}).get("Meshlog-Status", ""), json.loads(reply.data)


async def test_the_sync_changes_the_event_streams_sources_only_through_the_keeper(
        tmp_path: Path) -> None:
    _nats_users("--mode", "zone", "--zone", "east", "--out", str(tmp_path / "creds"))
    config = _server_conf(tmp_path, {"jetstream": {"domain": "east"}})
    async with run_nats_server(tmp_path / "data", config=config, server_name="east") as url:
        plane = Plane(url, _seeds(tmp_path))
        try:
            await JetStreamEventLog.open(await plane.nc("api"), subjects=[zone_filter("east")])
            sync, admin = await plane.nc("sync"), await plane.nc("admin")
            js = admin.jetstream(timeout=_TIMEOUT_S)
            # without a keeper the sync's change of sources is its own update: refused
            with pytest.raises(EventLogUnavailable, match="no source keeper answers"):
                await ensure_sources(sync, zone_sources("east", ["east", "west"]), zone="east")
            await _limit_update_refused(sync, admin, EVENTS_STREAM)
            async with source_keeper(admin, "east"):
                wanted = zone_sources("east", ["east", "west"])
                assert await ensure_sources(sync, wanted, zone="east")
                assert not await ensure_sources(sync, wanted, zone="east")
                assert sorted((s.filter_subject, s.api) for s in await source_states(
                    admin)) == sorted((s.filter_subject, s.api) for s in wanted)
                await _limit_update_refused(sync, admin, EVENTS_STREAM)
                # whatever else the request says is not read: limits, subjects, retention
                have = [source.as_dict() for source in
                        (await js.stream_info(EVENTS_STREAM)).config.sources or []]
                extras = {"max_msgs": 1, "max_age": 10**9, "subjects": [">"],
                          "retention": "workqueue", "sealed": True, "deny_delete": False,
                          "config": {"max_msgs": 1}, "allow_msg_ttl": False}
                for sources in (have[:1], have):  # each a change: the stream is updated
                    status, answer = await _ask(sync, "east", EVENTS_STREAM,
                                                {"sources": sources, **extras})
                    assert (status, answer) == ("200", {"changed": True})
                    unchanged = (await js.stream_info(EVENTS_STREAM)).config
                    assert unchanged.max_msgs == -1 and unchanged.max_age == 0
                    assert unchanged.subjects == [zone_filter("east")] and not unchanged.sealed
                status, answer = await _ask(sync, "east", EVENTS_STREAM,
                                            {"sources": have, **extras})
                assert (status, answer) == ("200", {"changed": False})
                # sources the sync would not make: refused, the field and value named
                for bad, field in (
                        ({"name": "KV_meshlog_projections"}, "name"),
                        ({"filter_subject": ">"}, "filter_subject"),
                        ({"filter_subject": zone_filter("east"),
                          "external": {"api": "$JS.east.API"}}, "filter_subject"),
                        ({"external": {"api": "$JS.west.API", "deliver": "x.>"}}, "external"),
                        ({"external": {"api": "$JS.west.API"}}, "external.api"),  # not global's
                        ({"external": {"api": "$JS.east.API"}}, "external.api"),  # its own
                        ({"opt_start_seq": 5}, "only name, filter_subject and external")):
                    source = {"name": EVENTS_STREAM, "filter_subject": zone_filter("west"),
                              "external": {"api": "$JS.global.API"}, **bad}
                    status, answer = await _ask(sync, "east", EVENTS_STREAM,
                                                {"sources": [source]})
                    assert status == "400", (bad, answer)
                    assert field in str(answer["error"]), (bad, answer)
                with pytest.raises(EventLogUnavailable, match="allow_msg_ttl"):
                    await update_sources(sync, EVENTS_STREAM, [], zone="east", allow_msg_ttl=True)
                after = (await js.stream_info(EVENTS_STREAM)).config
                assert after.subjects == [zone_filter("east")] and not after.sealed
                assert after.max_msgs == -1 and after.max_age == 0
                assert [s.as_dict() for s in after.sources or []] == have
                # removed through the keeper too
                assert await ensure_sources(sync, [], zone="east")
                assert await source_states(admin) == []
        finally:
            for nc in plane.connections.values():
                await nc.close()


async def test_on_global_the_sync_changes_the_zone_insights_sources_through_the_keeper(
        tmp_path: Path) -> None:
    async with _global_and_east(tmp_path) as (central, _east):
        sync, admin = await central.nc("sync"), await central.nc("admin")
        async with source_keeper(admin, GLOBAL_ZONE):
            assert await ensure_zone_insight_sources(sync, ["east"])  # made, then changed
            assert await ensure_zone_insight_sources(sync, ["east", "west"])
            assert not await ensure_zone_insight_sources(sync, ["west", "east"])
            await _limit_update_refused(sync, admin, ZONE_INSIGHTS_STREAM)
            # a zone's source writing into another zone's keys: refused
            forged = StreamSource(
                name=f"KV_{INSIGHTS_BUCKET}", external=ExternalStream(api="$JS.east.API"),
                opt_start_seq=1, subject_transforms=[SubjectTransform(
                    src=f"$KV.{INSIGHTS_BUCKET}.>", dest=f"$KV.{ZONE_INSIGHTS_BUCKET}.west.>")])
            with pytest.raises(EventLogUnavailable, match=r"sources\[0\]"):
                await update_sources(sync, ZONE_INSIGHTS_STREAM, [forged], zone=GLOBAL_ZONE)
            info = await admin.jetstream().stream_info(ZONE_INSIGHTS_STREAM)
            assert info.config.max_msgs_per_subject == 1 and info.config.allow_msg_ttl
            assert sorted(s.external.api for s in info.config.sources or []
                          if s.external is not None) == ["$JS.east.API", "$JS.west.API"]
            assert await ensure_zone_insight_sources(sync, [])
            # global's event stream: each zone from its own domain, never from global's
            await JetStreamEventLog.open(await central.nc("api"),
                                         subjects=[zone_filter(GLOBAL_ZONE)])
            assert await ensure_sources(sync, global_sources(["east"]), zone=GLOBAL_ZONE)
            await _limit_update_refused(sync, admin, EVENTS_STREAM)
            for api in ("$JS.global.API", "$JS.west.API"):
                status, answer = await _ask(sync, GLOBAL_ZONE, EVENTS_STREAM, {"sources": [
                    {"name": EVENTS_STREAM, "filter_subject": zone_filter("east"),
                     "external": {"api": api}}]})
                assert status == "400" and "external.api" in str(answer["error"]), answer
            assert [(s.filter_subject, s.api) for s in await source_states(admin)] == [
                (zone_filter("east"), "$JS.east.API")]


@pytest.mark.parametrize("zone", ["east", GLOBAL_ZONE])
def test_no_role_but_admin_may_update_a_stream(zone: str) -> None:
    """The sync's grant is the keeper's request subjects, and `STREAM.UPDATE` is denied to it
    as to every role but admin (deny wins)."""
    for role in ROLES:
        granted = permissions(role, zone)
        if role == "admin":
            continue
        assert "$JS.API.STREAM.UPDATE.>" in granted.publish_deny, role
        assert not [s for s in granted.publish if "STREAM.UPDATE" in s], role
    sync = permissions("sync", zone).publish
    assert sources_subject(zone, EVENTS_STREAM) in sync
    assert (sources_subject(zone, ZONE_INSIGHTS_STREAM) in sync) == (zone == GLOBAL_ZONE)


async def test_a_zones_sync_cannot_change_globals_sources_across_the_leafnode(
        tmp_path: Path) -> None:
    """Core NATS subjects cross the leafnode (one account on both sides): a zone's request
    must reach its own zone's keeper only. With no keeper in east, east's sync (a leaked seed
    included) must not have global's keeper change global's event stream."""
    async with _global_and_east(tmp_path) as (central, east):
        admin = await central.nc("admin")
        await JetStreamEventLog.open(await central.nc("api"),
                                     subjects=[zone_filter(GLOBAL_ZONE)])
        await JetStreamEventLog.open(await east.nc("api"), subjects=[zone_filter("east")])
        east_sync = await east.nc("sync")
        async with source_keeper(admin, GLOBAL_ZONE):
            assert await ensure_sources(await central.nc("sync"), global_sources(["east"]),
                                        zone=GLOBAL_ZONE)

            async def asked_across() -> bool:
                try:
                    await update_sources(east_sync, EVENTS_STREAM, [], zone="east")
                except EventLogUnavailable as exc:
                    return "no source keeper answers" in str(exc)
                return True  # answered: by global's keeper, the only one

            await eventually(asked_across, "east's request to end", within=30)
            assert [(s.filter_subject, s.api) for s in await source_states(admin)] == [
                (zone_filter("east"), "$JS.east.API")]


async def test_a_malformed_request_is_refused_400_and_the_keeper_goes_on(nc: NATS) -> None:
    """Wrong types and a deeply nested payload (msgspec's RecursionError) end one request
    with 400 naming what is wrong, not a 500 and a traceback in the keeper's log."""
    await JetStreamEventLog.open(nc, subjects=[zone_filter("east")])
    west: dict[str, object] = {"name": EVENTS_STREAM, "filter_subject": zone_filter("west"),
                               "external": {"api": "$JS.global.API"}}
    bodies: tuple[tuple[dict[str, object] | bytes, str], ...] = (
        ({"sources": [{**west, "filter_subject": 5}]}, "sources[0]"),
        ({"sources": [{**west, "external": {"api": 5}}]}, "sources[0]"),
        (b'{"sources": [{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}]}", "request"))
    async with source_keeper(nc, "east"):
        for body, field in bodies:
            status, answer = await _ask(nc, "east", EVENTS_STREAM, body)
            assert status == "400", (body, answer)
            assert field in str(answer["error"]), answer
        # one source per zone, a thousand at most: each is a consumer on a zone's stream
        status, answer = await _ask(nc, "east", EVENTS_STREAM,
                                    {"sources": [west] * (MAX_SOURCES + 1)})
        assert status == "400" and f"at most {MAX_SOURCES}" in str(answer["error"]), answer
        # a refusal names the item, cut short: its reply and log line stay small
        status, answer = await _ask(nc, "east", EVENTS_STREAM, {"sources": [
            {**west, "filter_subject": 5, "name": "x" * 100_000}]})
        assert status == "400" and len(str(answer["error"])) < 1_000, len(str(answer))
        status, answer = await _ask(nc, "east", EVENTS_STREAM, {"sources": [west]})
        assert (status, answer) == ("200", {"changed": True})
    # the zone-insights stream's check alike (global only: no such stream here)
    with pytest.raises(SourceRefused, match=r"sources\[0\]"):
        canonical_sources(ZONE_INSIGHTS_STREAM, [{**west, "external": {"api": 5}}], [])


async def test_a_keeper_started_while_nats_is_down_serves_once_it_is_back(
        tmp_path: Path) -> None:
    """The keeper is ready with its subscriptions made while NATS is away (nats-py sends them
    again at the reconnection) and serves once NATS is back: the sync waiting for it is not
    left waiting, nor asking nobody. (Coverage of the reconnection: passes without a change.)"""
    data, port = tmp_path / "nats", free_port()
    async with contextlib.AsyncExitStack() as first_life:
        url = await first_life.enter_async_context(run_nats_server(data, port=port))
        nc = await connect_nats(url, name="meshlog-sources")
        await JetStreamEventLog.open(nc, subjects=[zone_filter("east")])
    ready = asyncio.Event()
    keeper = asyncio.create_task(serve_source_updates(nc, "east", ready))
    waiting = asyncio.create_task(ready.wait())
    try:
        await asyncio.wait([keeper, waiting], timeout=30,
                           return_when=asyncio.FIRST_COMPLETED)
        assert ready.is_set(), keeper.exception() if keeper.done() else "still not ready"
        async with run_nats_server(data, port=port):
            west = {"name": EVENTS_STREAM, "filter_subject": zone_filter("west"),
                    "external": {"api": "$JS.global.API"}}

            async def served() -> bool:
                try:
                    return await _ask(nc, "east", EVENTS_STREAM, {"sources": [west]}) == (
                        "200", {"changed": True})
                except (nats.errors.Error, TimeoutError):
                    return False  # not reconnected yet

            await eventually(served, "the keeper to serve after NATS is back", within=60)
    finally:
        for task in (keeper, waiting):
            task.cancel()
        await asyncio.wait([keeper, waiting])
        await nc.close()
