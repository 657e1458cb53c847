"""The JetStream event log against a real nats-server: OCC, idempotent retry, invariants."""

from __future__ import annotations

import asyncio

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StorageType, StreamConfig

from events import (
    Appended,
    Conflict,
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    PendingAppend,
    StreamConfigMismatch,
    decode_event,
    resource_subject,
)

SUBJECT = resource_subject("Mesh", None, "default")


def _applied(at: int = 1) -> MeshApplied:
    return MeshApplied(at=at, mesh=Mesh(name="default"))


async def test_stream_is_created_with_the_invariants(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    info = await nc.jetstream().stream_info("MESHLOG_EVENTS")
    assert info.config.storage == StorageType.FILE
    assert info.config.deny_delete and info.config.deny_purge and info.config.allow_direct


async def test_existing_stream_breaking_the_invariants_is_refused(nc: NATS) -> None:
    await nc.jetstream().add_stream(StreamConfig(
        name="MESHLOG_EVENTS", subjects=["meshlog.ev.>"], storage=StorageType.MEMORY))
    with pytest.raises(StreamConfigMismatch) as info:
        await JetStreamEventLog.open(nc)
    message = str(info.value)
    assert "storage is" in message and "must be file" in message
    assert "deny_delete is off" in message and "allow_direct is off" in message


async def test_append_then_read_back(event_log: JetStreamEventLog) -> None:
    appended = await event_log.append(SUBJECT, _applied(), expected_last_subject_seq=0, msg_id="m1")
    assert (appended.seq, appended.duplicate) == (1, False)
    last = await event_log.last(SUBJECT)
    assert last is not None and last.seq == 1
    assert decode_event(last.data, seq=1, subject=SUBJECT) == _applied()
    assert await event_log.last_seq() == 1


async def test_stale_expected_sequence_is_a_conflict(event_log: JetStreamEventLog) -> None:
    await event_log.append(SUBJECT, _applied(1), expected_last_subject_seq=0, msg_id="a")
    with pytest.raises(Conflict):
        await event_log.append(SUBJECT, _applied(2), expected_last_subject_seq=0, msg_id="b")
    assert await event_log.last_seq() == 1  # a failed check consumes no sequence


async def test_two_writers_one_wins(event_log: JetStreamEventLog) -> None:
    await event_log.append(SUBJECT, _applied(1), expected_last_subject_seq=0, msg_id="create")
    results: list[Appended | Conflict] = []
    for writer in ("w1", "w2"):  # both read version 1, both write
        try:
            results.append(await event_log.append(
                SUBJECT, _applied(2), expected_last_subject_seq=1, msg_id=writer))
        except Conflict as exc:
            results.append(exc)
    assert [type(r).__name__ for r in results] == ["Appended", "Conflict"]


async def test_retry_with_same_msg_id_appends_once(event_log: JetStreamEventLog) -> None:
    first = await event_log.append(SUBJECT, _applied(), expected_last_subject_seq=0, msg_id="same")
    retry = await event_log.append(SUBJECT, _applied(), expected_last_subject_seq=0, msg_id="same")
    assert retry.seq == first.seq and retry.duplicate
    assert await event_log.last_seq() == 1


async def test_read_yields_every_record_in_order(event_log: JetStreamEventLog) -> None:
    for i in range(1, 6):
        subject = resource_subject("Mesh", None, f"m{i}")
        await event_log.append(subject, _applied(i), expected_last_subject_seq=0, msg_id=str(i))
    seen: list[int] = []
    async for batch in event_log.read(2, max_batch=2):
        assert len(batch) <= 2
        seen += [r.seq for r in batch]
        if seen[-1] == 5:
            break
    assert seen == [2, 3, 4, 5]


async def test_pipelined_appends_keep_occ_and_msg_ids(event_log: JetStreamEventLog) -> None:
    from events import PendingAppend

    subjects = [resource_subject("Mesh", None, f"p{i}") for i in range(50)]
    batch = [PendingAppend(s, _applied(i), 0, f"id-{i}") for i, s in enumerate(subjects)]
    results = await event_log.append_many(batch, window=16)
    assert [r.seq for r in results if isinstance(r, Appended)] == list(range(1, 51))
    stale = PendingAppend(subjects[3], _applied(), 0, "other")
    again = await event_log.append_many([*batch[:3], stale])
    assert [type(r).__name__ for r in again] == ["Appended"] * 3 + ["Conflict"]
    assert all(isinstance(r, Appended) and r.duplicate for r in again[:3])
    assert await event_log.last_seq() == 50


async def test_a_slow_reader_gets_every_record_once_in_order(
        event_log: JetStreamEventLog) -> None:
    """A reader far slower than the server (a rebuild) must neither lose nor stall."""
    batch = [PendingAppend(resource_subject("Mesh", None, f"d{i}"), _applied(i), 0, f"d{i}")
             for i in range(3000)]
    await event_log.append_many(batch)
    seen: list[int] = []
    async for records in event_log.read(1, max_batch=7):
        seen += [r.seq for r in records]
        await asyncio.sleep(0.001)
        if seen[-1] >= 3000:
            break
    assert seen == list(range(1, 3001))


async def test_a_caught_up_reader_sees_new_events_at_once(
        event_log: JetStreamEventLog) -> None:
    await event_log.append(SUBJECT, _applied(), expected_last_subject_seq=0, msg_id="x")
    reader = event_log.read(1)
    assert [r.seq for r in await anext(reader)] == [1]
    waiting = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0.3)  # the reader is now waiting on the live tail
    started = asyncio.get_running_loop().time()
    await event_log.append(resource_subject("Mesh", None, "y"), _applied(),
                           expected_last_subject_seq=0, msg_id="y")
    assert [r.seq for r in await asyncio.wait_for(waiting, 5)] == [2]
    assert asyncio.get_running_loop().time() - started < 1.0
    await reader.aclose()


async def test_a_stream_whose_events_can_expire_is_refused(nc: NATS) -> None:
    await nc.jetstream().add_stream(StreamConfig(
        name="MESHLOG_EVENTS", subjects=["meshlog.ev.>"], storage=StorageType.FILE,
        deny_delete=True, deny_purge=True, allow_direct=True, max_age=86400))
    with pytest.raises(StreamConfigMismatch, match=r"max_age is .*events would expire"):
        await JetStreamEventLog.open(nc)


async def test_follow_yields_only_the_subjects_of_its_filter_then_the_live_tail(
        event_log: JetStreamEventLog) -> None:
    watched = resource_subject("Mesh", None, "watched")
    for seq, (subject, expected) in enumerate(
            [(watched, 0), (SUBJECT, 0), (watched, 1)], start=1):
        await event_log.append(subject, _applied(seq), expected_last_subject_seq=expected,
                               msg_id=f"m{seq}")
    follower = event_log.follow(watched, 2)
    try:
        assert [(r.seq, r.subject) for r in await anext(follower)] == [(3, watched)]
        waiting = asyncio.ensure_future(anext(follower))
        await event_log.append(SUBJECT, _applied(4), expected_last_subject_seq=2, msg_id="m4")
        await event_log.append(watched, _applied(5), expected_last_subject_seq=3, msg_id="m5")
        assert [(r.seq, r.subject) for r in await asyncio.wait_for(waiting, 5)] == [
            (5, watched)]
    finally:
        await follower.aclose()
