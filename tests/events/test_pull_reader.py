"""The log's ordered pull reader (`events.bus._pull`) against a real nats-server: it takes its
inbox's messages from nats-py's parser, so the connection's other subscriptions must work as
before, and a caught-up reader must renew its pull requests as they expire."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, StreamConfig

from events import (
    JetStreamEventLog,
    Mesh,
    MeshApplied,
    PendingAppend,
    Record,
    connect_nats,
    resource_subject,
)
from events.bus import _pull
from events.bus._pull import OrderedPull, pull_ordered
from events.bus.jetstream import _SILENT_S
from events.errors import EventLogUnavailable
from events.subjects import EVENTS_STREAM, events_wildcard
from services.runtime.embedded_nats import run_nats_server


def _applied(i: int) -> PendingAppend:
    return PendingAppend(resource_subject("Mesh", None, f"m{i}"),
                         MeshApplied(at=i, mesh=Mesh(name=f"m{i}")), 0, f"m{i}")


async def _collect(log: JetStreamEventLog, until: int, max_batch: int) -> list[int]:
    seen: list[int] = []
    async with contextlib.aclosing(log.read(1, max_batch=max_batch)) as batches:
        async for batch in batches:
            assert len(batch) <= max_batch
            seen += [r.seq for r in batch]
            if seen[-1] >= until:
                return seen
    raise AssertionError("the reader ended")


async def test_two_readers_and_requests_share_one_connection(
        event_log: JetStreamEventLog) -> None:
    await event_log.append_many([_applied(i) for i in range(1, 501)])
    first, second = await asyncio.gather(_collect(event_log, 500, 64),
                                         _collect(event_log, 500, 100))
    assert first == second == list(range(1, 501))
    # the connection's other subscriptions (request replies, a last-per-subject consumer)
    # still go through nats-py, also while a reader is open on it
    reader = event_log.read(1, max_batch=10)
    await anext(reader)
    latest = await event_log.latest(events_wildcard())
    last = await event_log.last(resource_subject("Mesh", None, "m7"))
    await reader.aclose()
    assert len(latest) == 500
    assert last is not None and last.seq == 7
    assert last.headers["Nats-Msg-Id"] == "m7"


async def test_records_carry_subject_headers_and_schema(event_log: JetStreamEventLog) -> None:
    await event_log.append_many([_applied(1)])
    [record] = await _records(event_log, 1)
    assert record.subject == resource_subject("Mesh", None, "m1")
    assert record.headers["Nats-Msg-Id"] == "m1"
    assert record.schema_version == 1
    assert b'"m1"' in record.data


async def _records(log: JetStreamEventLog, n: int) -> list[Record]:
    out: list[Record] = []
    async with contextlib.aclosing(log.read(1)) as batches:
        async for batch in batches:
            out += batch
            if len(out) >= n:
                return out
    raise AssertionError("the reader ended")


async def test_a_caught_up_reader_renews_its_expired_requests(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    await event_log.append_many([_applied(1)])
    config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=1,
                            ack_policy=AckPolicy.NONE, inactive_threshold=60,
                            mem_storage=True, num_replicas=1)
    batches = pull_ordered(nc, nc.jetstream(), EVENTS_STREAM, events_wildcard(),
                           max_batch=5, config=config, request_timeout=5, expires_s=0.3)
    async with contextlib.aclosing(batches):
        assert [r.seq for r in await anext(batches)] == [1]
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(1.5)  # several generations of requests expired meanwhile
        assert not waiting.done()
        await event_log.append_many([_applied(2), _applied(3)])
        got = [r.seq for r in await asyncio.wait_for(waiting, 10)]
        while got[-1] < 3:
            got += [r.seq for r in await asyncio.wait_for(anext(batches), 10)]
        assert got == [2, 3]


async def test_a_renewed_pull_starts_at_its_sequence_and_drops_what_the_old_one_sent(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    """What the log's reader does when its consumer was recreated behind its back: a new
    consumer at the next sequence it owes. Records the old consumer had on their way (two
    batches are requested ahead) must not come out of the new one."""
    await event_log.append_many([_applied(i) for i in range(1, 301)])

    def config(start_seq: int) -> ConsumerConfig:
        return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                              opt_start_seq=start_seq, ack_policy=AckPolicy.NONE,
                              inactive_threshold=60, mem_storage=True, num_replicas=1)

    pull = OrderedPull(nc, nc.jetstream(), EVENTS_STREAM, events_wildcard(), max_batch=40,
                       config=config, request_timeout=5)
    await pull.open(1)
    try:
        first = await pull.next(10)
        assert first is not None and [r.seq for r in first] == list(range(1, 41))
        await pull.renew(25)
        got: list[int] = []
        while not got or got[-1] < 300:
            batch = await pull.next(10)
            assert batch is not None, "nothing came for 10 s"
            got += [r.seq for r in batch]
        assert got == list(range(25, 301))
        # caught up: an idle period gives None, and a later append still comes
        assert await pull.next(0.5) is None
        await event_log.append_many([_applied(301)])
        late = await pull.next(10)
        assert late is not None and [r.seq for r in late] == [301]
    finally:
        await pull.close()
    assert len(await event_log.latest(events_wildcard())) == 301


async def test_the_log_reader_makes_a_new_consumer_when_its_own_is_gone(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    """Its consumer deleted under it (as when the node holding it is lost): the pull requests
    it had waiting end, new ones find no one (status 503), no heartbeat comes, and the reader
    makes a new consumer at the next sequence it owes: the rest comes once each, in order."""
    js = nc.jetstream()
    await event_log.append_many([_applied(i) for i in range(1, 11)])
    seen: list[int] = []
    async with contextlib.aclosing(event_log.read(1, max_batch=4)) as batches:
        while not seen or seen[-1] < 10:
            seen += [r.seq for r in await asyncio.wait_for(anext(batches), 10)]
        [consumer] = await js.consumers_info(EVENTS_STREAM)
        waiting = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.2)
        await js.delete_consumer(EVENTS_STREAM, consumer.name)
        await asyncio.sleep(0.5)
        await event_log.append_many([_applied(i) for i in range(11, 21)])
        seen += [r.seq for r in await asyncio.wait_for(waiting, 30)]
        while seen[-1] < 20:
            seen += [r.seq for r in await asyncio.wait_for(anext(batches), 30)]
        assert [c.name for c in await js.consumers_info(EVENTS_STREAM)] != [consumer.name]
    assert seen == list(range(1, 21))


async def test_a_reader_that_folds_without_reading_its_socket_is_not_a_slow_consumer(
        tmp_path: Path) -> None:
    """Two big pull requests ahead of a caller that holds the event loop while it folds (as
    the projector does) must not overflow what nats-server holds for the client (`max_pending`,
    16 MiB here): the requests are bounded in bytes, so the connection is never closed as a
    slow consumer and nothing is fetched twice. 1,000-message requests of 16 KiB messages
    would be 2 x 16 MiB ahead without that bound."""
    config = tmp_path / "server.conf"
    config.write_text(f"max_pending: {16 << 20}\n")
    async with run_nats_server(tmp_path / "nats", config=config) as url:
        nc = await connect_nats(url, name="slow-reader-test")
        try:
            js = nc.jetstream()
            await js.add_stream(StreamConfig(name="BIG", subjects=["big.>"]))
            payload = b"x" * (16 << 10)
            acks = [await js.publish_async(f"big.{i % 7}", payload) for i in range(2000)]
            await asyncio.gather(*acks)

            def consumer(start_seq: int) -> ConsumerConfig:
                return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                      opt_start_seq=start_seq, ack_policy=AckPolicy.NONE,
                                      inactive_threshold=60, mem_storage=True)

            pull = OrderedPull(nc, js, "BIG", "big.>", max_batch=1000, config=consumer,
                               request_timeout=5)
            await pull.open(1)
            got: list[int] = []
            try:
                while len(got) < 2000:
                    batch = await pull.next(10)
                    assert batch is not None, "nothing came for 10 s"
                    got += [r.seq for r in batch]
                    time.sleep(0.5)  # noqa: ASYNC251 (a fold: the loop is held on purpose)
            finally:
                await pull.close()
            assert got == list(range(1, 2001))
            assert nc.stats["reconnects"] == 0
        finally:
            await nc.close()


async def _raw_stream(nc: NATS, sizes: list[int]) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="RAW", subjects=["raw.>"]))
    acks = [await js.publish_async(f"raw.{i % 5}", b"y" * size) for i, size in enumerate(sizes)]
    await asyncio.gather(*acks)


def _raw_consumer(start_seq: int) -> ConsumerConfig:
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                          opt_start_seq=start_seq, ack_policy=AckPolicy.NONE,
                          inactive_threshold=60, mem_storage=True)


async def test_requests_that_end_by_their_bytes_exactly_keep_the_reader_asking(
        nc: NATS) -> None:
    """A pull request whose bytes run out exactly on a message ends without a status. The
    reader counts in bytes as the server does (subject, reply, headers, data), so it knows the
    request is over and asks again: with small requests and messages of many sizes, such ends
    are frequent, and never is there a silence (counted in messages, the reader stopped asking
    until a silence of `idle_s`, then renewed)."""
    rng = random.Random(7)
    sizes = [rng.randint(50, 250) for _ in range(4000)]
    await _raw_stream(nc, sizes)
    pull = OrderedPull(nc, nc.jetstream(), "RAW", "raw.>", max_batch=500,
                       config=_raw_consumer, request_timeout=5, request_bytes=4096)
    await pull.open(1)
    got: list[int] = []
    try:
        while len(got) < len(sizes):
            batch = await pull.next(3)
            assert batch is not None, f"a silence of 3 s after sequence {got[-1:]}"
            got += [r.seq for r in batch]
    finally:
        await pull.close()
    assert got == list(range(1, len(sizes) + 1))


async def test_a_message_bigger_than_a_request_grows_the_requests_then_fails_by_name(
        nc: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    await _raw_stream(nc, [100, 3000, 100, 9000])
    pull = OrderedPull(nc, nc.jetstream(), "RAW", "raw.>", max_batch=10,
                       config=_raw_consumer, request_timeout=5, request_bytes=1024)
    monkeypatch.setattr(_pull, "_MAX_REQUEST_BYTES", 4096)
    await pull.open(1)
    got: list[int] = []
    try:
        while len(got) < 3:
            batch = await pull.next(3)
            assert batch is not None
            got += [r.seq for r in batch]
        assert got == [1, 2, 3]  # 3000 bytes fitted once requests had grown to 4096
        with pytest.raises(EventLogUnavailable, match="bigger than 4096 bytes"):
            await pull.next(3)
    finally:
        await pull.close()


@contextlib.asynccontextmanager
async def _waiting_past_the_first(
    nc: NATS, event_log: JetStreamEventLog,
) -> AsyncIterator[tuple[ConsumerInfo, asyncio.Future[list[Record]]]]:
    """A log of one event, read by the log's reader: its consumer, and the reader's wait for
    the next batch (nothing else is stored yet)."""
    await event_log.append_many([_applied(1)])
    async with contextlib.aclosing(event_log.read(1)) as batches:
        assert [r.seq for r in await asyncio.wait_for(anext(batches), 10)] == [1]
        [consumer] = await nc.jetstream().consumers_info(EVENTS_STREAM)
        yield consumer, asyncio.ensure_future(anext(batches))


async def test_an_idle_reader_keeps_its_consumer(nc: NATS, event_log: JetStreamEventLog
                                                 ) -> None:
    """Nothing to read for several silence periods: the consumer's idle heartbeats say it is
    there, so the reader keeps it (no new consumer), and what is appended later comes."""
    js = nc.jetstream()
    async with _waiting_past_the_first(nc, event_log) as (consumer, waiting):
        await asyncio.sleep(3 * _SILENT_S)
        assert not waiting.done()
        assert [c.name for c in await js.consumers_info(EVENTS_STREAM)] == [consumer.name]
        await event_log.append_many([_applied(2)])
        assert [r.seq for r in await asyncio.wait_for(waiting, 10)] == [2]


async def test_a_reader_whose_consumer_is_gone_makes_a_new_one_with_nothing_new_stored(
        nc: NATS, event_log: JetStreamEventLog) -> None:
    """The consumer deleted while nothing new is stored: the reader does not wait for a write
    to notice (no heartbeat is enough), so its new consumer is there before the next one."""
    js = nc.jetstream()
    async with _waiting_past_the_first(nc, event_log) as (consumer, waiting):
        await js.delete_consumer(EVENTS_STREAM, consumer.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not (names := [c.name for c in await js.consumers_info(EVENTS_STREAM)]):
            assert loop.time() < deadline, "no new consumer"
            await asyncio.sleep(0.1)
        assert names != [consumer.name] and not waiting.done()
        [renewed] = await js.consumers_info(EVENTS_STREAM)
        assert renewed.config.opt_start_seq == 2
        await event_log.append_many([_applied(2)])
        assert [r.seq for r in await asyncio.wait_for(waiting, 10)] == [2]
