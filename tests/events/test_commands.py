"""The one command path (events.commands) against a real nats-server: read, decide, append;
domain rules decided from the log itself, with no projector and no read model behind them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
import pytest
from nats.aio.client import Client as NATS

from events import (
    Conflict,
    Dataplane,
    DataplaneRegistered,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    NotFound,
    decode_event,
    decode_resource,
    resource_subject,
)
from events.commands import (
    Append,
    ClockCommands,
    CommandHandler,
    Commands,
    Current,
    Decision,
    Keep,
    ProxyCommands,
)
from events.commands.meshes import MeshLife, MeshLives
from events.subjects import EVENTS_STREAM, resources_filter
from tests.projections._histories import dataplane, inbound

SUBJECT = resource_subject("Mesh", None, "racy")


async def test_keep_appends_nothing(event_log: JetStreamEventLog) -> None:
    handler = CommandHandler(event_log)
    outcome = await handler.execute(SUBJECT, lambda current: Keep())
    assert not outcome.appended and outcome.seq == 0
    assert await event_log.last(SUBJECT) is None


async def test_a_decision_is_taken_on_the_subjects_last_record(
        event_log: JetStreamEventLog) -> None:
    handler = CommandHandler(event_log)
    seen: list[Current] = []

    def decide(current: Current) -> Decision:
        seen.append(current)
        return Append(MeshApplied(at=len(seen), mesh=Mesh(name="racy")))

    first = await handler.execute(SUBJECT, decide)
    second = await handler.execute(SUBJECT, decide)
    assert (first.seq, second.seq) == (1, 2)
    assert seen[0] == Current() and seen[1].seq == 1
    assert isinstance(seen[1].event, MeshApplied)


async def test_racing_writers_retry_by_deciding_again(event_log: JetStreamEventLog) -> None:
    handler = CommandHandler(event_log)
    decisions: list[int] = []

    def writer(i: int) -> Callable[[Current], Decision]:
        def decide(current: Current) -> Decision:
            decisions.append(current.seq)
            return Append(MeshApplied(at=1, mesh=Mesh(name="racy", labels={"w": str(i)})))
        return decide

    outcomes = await asyncio.gather(*(handler.execute(SUBJECT, writer(i), retries=5)
                                      for i in range(4)))
    assert sorted(o.seq for o in outcomes) == [1, 2, 3, 4]  # every writer landed, in turn
    assert len(decisions) > 4  # someone lost a race and decided again on the new record
    assert not any(o.duplicate for o in outcomes)


async def test_the_same_decision_taken_twice_appends_once(event_log: JetStreamEventLog) -> None:
    handler = CommandHandler(event_log)

    def decide(current: Current) -> Decision:
        return Append(MeshApplied(at=current.seq, mesh=Mesh(name="racy")))

    outcomes = await asyncio.gather(*(handler.execute(SUBJECT, decide) for _ in range(3)))
    assert {o.seq for o in outcomes} == {1}  # one Msg-Id: JetStream stored it once
    assert sorted(o.duplicate for o in outcomes) == [False, True, True]
    assert await event_log.last_seq() == 1


async def test_without_retries_a_lost_race_is_a_conflict(event_log: JetStreamEventLog) -> None:
    handler = CommandHandler(event_log)
    await handler.execute(SUBJECT, lambda c: Append(MeshApplied(at=1, mesh=Mesh(name="racy"))))

    stale = CommandHandler(event_log)
    # a reader that missed the first event decides on an empty subject
    stale.current = lambda subject: _empty()  # type: ignore[method-assign]  # a stale read
    with pytest.raises(Conflict):
        await stale.execute(SUBJECT, lambda c: Append(MeshApplied(at=2, mesh=Mesh(
            name="racy", labels={"b": "2"}))))


async def _empty() -> Current:
    return Current()


async def test_latest_gives_the_last_record_of_each_subject(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    for name in ("a", "b"):
        await commands.apply(dataplane("default", name, "10.0.0.1", inbound(80, "web")))
    await commands.apply(dataplane("default", "a", "10.0.0.2", inbound(80, "web")))
    # a log that does not know its replica count reads as on a replicated stream: fenced by
    # the stream leader's last record of the filter (tests/events/test_cluster.py), the same
    fenced = JetStreamEventLog(nc, nc.jetstream(), EVENTS_STREAM)
    for log in (event_log, fenced):
        records = await log.latest(resources_filter("Dataplane", "default"))
        assert [r.subject.rsplit(".", 1)[1] for r in records] == ["b", "a"]  # stream order
        assert records[-1].seq == await log.last_seq()
        assert await log.latest(resources_filter("Dataplane", "empty")) == []


async def test_history_gives_every_record_of_one_subject_in_order(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    """What `MeshLives` finds the current life of a Mesh with; fenced on a replicated stream
    as `latest` is."""
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    await commands.apply(Mesh(name="other"))
    await commands.apply(Mesh(name="default", labels={"a": "1"}))
    await commands.delete("Mesh", None, "default")
    await commands.apply(Mesh(name="default"))
    subject = resource_subject("Mesh", None, "default")
    fenced = JetStreamEventLog(nc, nc.jetstream(), EVENTS_STREAM)
    for log in (event_log, fenced):
        records = await log.history(subject)
        assert [r.seq for r in records] == [1, 3, 4, 5]
        assert {r.subject for r in records} == {subject}
        assert [type(decode_event(r.data, seq=r.seq, subject=r.subject)).__name__
                for r in records] == ["MeshApplied", "MeshApplied", "MeshDeleted",
                                      "MeshApplied"]
        assert await log.history(resource_subject("Mesh", None, "nope")) == []
        assert [r.seq for r in await log.history(subject, after=3)] == [4, 5]
        assert await log.history(subject, after=5) == []
    lives = MeshLives(CommandHandler(event_log), zone="default")
    life = await lives.current("default")
    assert life == MeshLife(subject=subject, began=5, seq=5)
    # read on from the life it knows: an update keeps it, a delete and create begins another
    await commands.apply(Mesh(name="default", labels={"b": "2"}))
    assert await lives.current("default") == MeshLife(subject=subject, began=5, seq=6)
    await commands.delete("Mesh", None, "default")
    assert await lives.current("default") is None
    await commands.apply(Mesh(name="default"))
    assert await lives.current("default") == MeshLife(subject=subject, began=8, seq=8)


async def test_a_mesh_with_dataplanes_in_the_log_cannot_be_deleted(
        event_log: JetStreamEventLog) -> None:
    # no projector runs: the rule is decided from the log, not from (stale) read models
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="busy"))
    await commands.apply(dataplane("busy", "b-1", "10.0.0.1", inbound(80, "web")))
    with pytest.raises(Conflict, match="still has 1 dataplanes"):
        await commands.delete("Mesh", None, "busy")
    await commands.delete("Dataplane", "busy", "b-1")
    assert (await commands.delete("Mesh", None, "busy")).seq > 0


async def test_a_generated_meshservice_cannot_be_deleted(event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    await commands.apply(dataplane("default", "g-1", "10.0.0.1", inbound(80, "gen")))
    with pytest.raises(Conflict, match="generated from Dataplane inbounds"):
        await commands.delete("MeshService", "default", "gen")
    with pytest.raises(NotFound):
        await commands.delete("MeshService", "default", "nobody-generates-me")


async def test_a_proxy_never_takes_over_an_api_registration(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    proxies = ProxyCommands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    api_dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    await commands.apply(api_dp)
    proxy_dp = dataplane("default", "web-1", "10.0.0.9", inbound(80, "web"))
    assert not await proxies.register(proxy_dp, at=5)
    assert await proxies.deregister("default", "web-1", at=6) == "api"
    last = await event_log.last(resource_subject("Dataplane", "default", "web-1"))
    assert last is not None and last.seq == 2  # the API's registration, untouched


async def test_two_gateways_deciding_the_same_readiness_append_once(
        event_log: JetStreamEventLog) -> None:
    await Commands(event_log, zone="default").apply(Mesh(name="default"))
    probed = decode_resource({
        "type": "Dataplane", "mesh": "default", "name": "p-1",
        "networking": {"address": "10.0.0.1", "inbound": [{
            "port": 80, "tags": {"kuma.io/service": "web"}, "serviceProbe": {"tcp": {}}}]}})
    assert isinstance(probed, Dataplane)
    proxies = [ProxyCommands(event_log, zone="default") for _ in range(2)]
    assert await proxies[0].register(probed, at=1)
    down = {("127.0.0.1", 80): False}
    results = await asyncio.gather(*(p.report_readiness("default", "p-1", down, at=2)
                                     for p in proxies))
    assert sorted(results) == [False, True]  # the second decided again and found it recorded
    last = await event_log.last(resource_subject("Dataplane", "default", "p-1"))
    assert last is not None and last.seq == 3  # Mesh, registration, one readiness change
    event = decode_event(last.data, seq=last.seq, subject=last.subject,
                         schema_version=last.schema_version)
    assert isinstance(event, DataplaneRegistered) and event.origin == "proxy"
    inbound_health = event.dataplane.networking.inbound[0].health
    assert inbound_health is not None and inbound_health.ready is False


async def test_a_tick_is_appended_once_per_due_time(event_log: JetStreamEventLog) -> None:
    clocks = [ClockCommands(event_log, zone="default") for _ in range(3)]
    appended = await asyncio.gather(*(c.tick(1_000) for c in clocks))
    assert appended.count(True) == 1
    assert await clocks[0].tick(1_000) is False
    assert await event_log.last_seq() == 1


_ECHOED = {"kuma.io/mesh": "default", "kuma.io/origin": "zone", "kuma.io/zone": "default",
           "kuma.io/env": "universal", "kuma.io/proxy-type": "sidecar",
           "meshlog.io/registered-by": "api", "kuma.io/display-name": "web-1"}
"""The labels the fold gives Dataplane `web-1` of zone `default`, as a GET shows them."""


async def test_an_apply_stores_the_users_labels_without_the_computed_ones(
        event_log: JetStreamEventLog) -> None:
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    await commands.apply(msgspec.structs.replace(dp, labels={**_ECHOED, "team": "blue"}))
    last = await event_log.last(resource_subject("Dataplane", "default", "web-1"))
    assert last is not None
    event = decode_event(last.data, seq=last.seq, subject=last.subject)
    assert isinstance(event, DataplaneRegistered)
    assert event.dataplane.labels == {"team": "blue"}


async def test_an_event_written_with_computed_labels_is_unchanged_by_applying_it_clean(
        event_log: JetStreamEventLog) -> None:
    # a log from before computed labels were dropped: a re-apply then stored them as given
    commands = Commands(event_log, zone="default")
    await commands.apply(Mesh(name="default"))
    subject = resource_subject("Dataplane", "default", "web-1")
    dp = dataplane("default", "web-1", "10.0.0.1", inbound(80, "web"))
    old = await CommandHandler(event_log).execute(subject, lambda c: Append(DataplaneRegistered(
        at=1, dataplane=msgspec.structs.replace(dp, labels={**_ECHOED, "team": "blue"}))))
    for labels in ({"team": "blue"}, {**_ECHOED, "team": "blue"}):
        result = await commands.apply(msgspec.structs.replace(dp, labels=labels))
        assert result.unchanged and result.seq == old.seq
    changed = await commands.apply(msgspec.structs.replace(dp, labels={"team": "red"}))
    assert not changed.unchanged and changed.seq > old.seq
