"""The multi-zone parts of the command path and of the bus, on a real nats-server: Msg-Ids
unique across zones, ownership (409), a zone finding the Mesh on global's subject, zone
commands, stream sources kept as asked, and the stream check with sources and own subjects."""

from __future__ import annotations

import pytest
from nats.aio.client import Client as NATS

from events import (
    GLOBAL_ZONE,
    Conflict,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    NotFound,
    StreamConfigMismatch,
    ZoneApplied,
    ZoneDeleted,
    decode_event,
    resource_subject,
)
from events.bus.sources import (
    SourceSpec,
    ensure_sources,
    global_sources,
    source_states,
    zone_filter,
    zone_sources,
)
from events.commands import Commands, ProxyCommands
from events.commands.zones import ZoneCommands, zone_subject
from tests.projections._histories import dataplane, inbound


async def test_two_zones_equal_idempotency_keys_make_different_msg_ids(
        event_log: JetStreamEventLog) -> None:
    await event_log.append(resource_subject("Mesh", None, "default", GLOBAL_ZONE),
                           MeshApplied(at=1, mesh=Mesh(name="default")),
                           expected_last_subject_seq=0, msg_id="mesh")
    ids = []
    for zone in ("east", "west"):
        dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
        await Commands(event_log, zone=zone, deployment="zone").apply(dp, idempotency_key="k1")
        record = await event_log.last(resource_subject("Dataplane", "default", "web-1", zone))
        assert record is not None
        ids.append(record.headers["Nats-Msg-Id"])
    assert ids == ["key:east:k1", "key:west:k1"]


async def test_a_zone_finds_the_mesh_on_globals_subject(event_log: JetStreamEventLog) -> None:
    dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    with pytest.raises(NotFound):
        await ProxyCommands(event_log, zone="east").register(dp, at=1)
    await event_log.append(resource_subject("Mesh", None, "default", GLOBAL_ZONE),
                           MeshApplied(at=1, mesh=Mesh(name="default")),
                           expected_last_subject_seq=0, msg_id="mesh")
    assert await ProxyCommands(event_log, zone="east").register(dp, at=2)


async def test_zones_refuse_globals_kinds_and_global_refuses_dataplanes(
        event_log: JetStreamEventLog) -> None:
    with pytest.raises(Conflict, match="belongs to the global control plane"):
        await Commands(event_log, zone="east", deployment="zone").apply(Mesh(name="default"))
    dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    with pytest.raises(Conflict, match="register in their zone"):
        await Commands(event_log, zone=GLOBAL_ZONE, deployment="global").apply(dp)
    # standalone: everything, as before
    await Commands(event_log, zone="default").apply(Mesh(name="default"))


async def test_zone_commands_register_once_disable_and_delete_only_offline(
        event_log: JetStreamEventLog) -> None:
    zones = ZoneCommands(event_log)
    assert await zones.register("east")
    assert not await zones.register("east")  # a restart of the zone appends nothing
    await zones.set_enabled("east", False)
    assert not await zones.register("east")  # a restart does not undo an operator's disable
    with pytest.raises(Conflict, match="online"):
        await zones.delete("east", online=True)
    await zones.delete("east", online=False)
    record = await event_log.last(zone_subject("east"))
    assert record is not None
    assert isinstance(decode_event(record.data, seq=record.seq, subject=record.subject),
                      ZoneDeleted)
    with pytest.raises(NotFound):
        await zones.set_enabled("west", True)
    last = await event_log.last(zone_subject("east"))
    assert last is not None and last.seq == record.seq
    assert await zones.register("east")  # back after a delete: registered again
    again = await event_log.last(zone_subject("east"))
    assert again is not None and isinstance(
        decode_event(again.data, seq=again.seq, subject=again.subject), ZoneApplied)


def test_global_sources_each_zone_and_zones_source_the_others_through_global() -> None:
    assert global_sources(["west", "east"]) == [
        SourceSpec("meshlog.ev.east.>", "$JS.east.API"),
        SourceSpec("meshlog.ev.west.>", "$JS.west.API")]
    assert zone_sources("east", ["east", "west"]) == [
        SourceSpec("meshlog.ev._global.>", "$JS.global.API"),
        SourceSpec("meshlog.ev.west.>", "$JS.global.API")]


async def test_ensure_sources_adds_and_removes_and_the_stream_check_accepts_them(
        nc: NATS) -> None:
    await JetStreamEventLog.open(nc, subjects=[zone_filter("east")])
    wanted = zone_sources("east", ["east", "west", "north"])
    assert await ensure_sources(nc, wanted, zone="east")
    assert not await ensure_sources(nc, wanted, zone="east")  # nothing to change
    assert sorted((s.filter_subject, s.api) for s in await source_states(nc)) == [
        (s.filter_subject, s.api) for s in wanted]
    # north deleted
    assert await ensure_sources(nc, zone_sources("east", ["east", "west"]), zone="east")
    assert {s.filter_subject for s in await source_states(nc)} == {
        "meshlog.ev._global.>", "meshlog.ev.west.>"}
    # the stream, with its sources and own subjects, passes the check of every opener
    await JetStreamEventLog.open(nc, subjects=[zone_filter("east")])
    await JetStreamEventLog.open(nc)


async def test_a_zone_refuses_a_stream_that_takes_other_zones_subjects(nc: NATS) -> None:
    await JetStreamEventLog.open(nc)  # a standalone control plane's: every subject
    with pytest.raises(StreamConfigMismatch, match="not exactly"):
        await JetStreamEventLog.open(nc, subjects=[zone_filter("east")])


def test_zones_live_on_globals_subjects_and_each_control_plane_has_its_own_filter() -> None:
    from events import provenance_of

    assert zone_subject("east") == "meshlog.ev._global.zone._.east"
    assert provenance_of(zone_subject("east")).origin == "global"
    assert zone_filter(GLOBAL_ZONE) == "meshlog.ev._global.>"
    assert provenance_of(resource_subject("Dataplane", "default", "a", "east")).zone == "east"
