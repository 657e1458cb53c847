"""`JetStreamEventLog`: the event log on NATS JetStream (connections: `events.bus.connection`).

Rules followed (reference/jetstream-rules.md): one subject per resource; `Nats-Msg-Id` on every
append (idempotent retry); `Nats-Expected-Last-Subject-Sequence` for optimistic concurrency
(a failed check is err_code 10071 and consumes no sequence); reading with an ordered pull
consumer that outlives its node; the stream's invariants checked at start-up.

Inside a sampled trace (an API request's) an append is a span, and its W3C trace context
(`traceparent`) travels in the message's headers (`events.bus.trace_context`, README,
Tracing); a pipelined append carries the context its `PendingAppend` holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    StorageType,
    StreamConfig,
)
from opentelemetry.trace import Span, SpanKind, get_current_span

from events.bus._kv import await_stream_leader
from events.bus._latest import fenced_last_per_subject, last_per_subject
from events.bus._leader_reads import LEADER_ATTEMPT_S, LeaderReads, leader_last
from events.bus._pipeline import AckPipeline
from events.bus._pull import OrderedPull
from events.bus._pull import schema_of as _schema_of
from events.bus._retry import raise_if_cancelled, retried
from events.bus._stream_config import check_stream
from events.bus.connection import MSG_ID_IN_PROCESS, unavailable
from events.bus.connection import TRANSIENT as _TRANSIENT
from events.bus.nats_access import (
    refusals_of,
)
from events.bus.trace_context import tracer, with_trace
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION, encode_event
from events.errors import (
    AppendNotStored,
    Conflict,
    EventLogUnavailable,
    JetStreamUnavailable,
    TooLarge,
)
from events.event_types import AnyEvent
from events.log import Appended, PendingAppend, Record
from events.subjects import EVENTS_STREAM, events_wildcard

__all__ = ["JetStreamEventLog"]

log = logging.getLogger("meshlog.nats")


WRONG_LAST_SEQUENCE = 10071
IN_FLIGHT_CHECK = 10164
"""A clustered stream's "wrong last sequence" without a number: another append checking the
same subject is in flight at the stream leader. Like 10071, a concurrent write (or our own
retry), decided the same way."""
_STALE = (WRONG_LAST_SEQUENCE, IN_FLIGHT_CHECK)
_HEARTBEAT_S = 0.5
"""The reader's pull requests ask the server for an idle heartbeat this often: a consumer
that is there says so even when there is nothing to read."""
_SILENT_S = 2.0
"""Nothing from the reader's consumer for this long, not even a heartbeat: it is gone (its
server is down or restarted, or the connection to it moved) and a new one is made (`read`).
Well before a new stream leader is elected after a leader's loss (4-9 s, nats-server's raft),
so the new consumer is there when the stream takes writes again."""
_ATTEMPT_S = 1.0
"""One attempt at making the reader's consumer: the request is answered in milliseconds on a
cluster that has a meta leader; while one is being elected no answer comes, and a new attempt
is made (`_RENEW_S`, `events.bus._retry`) rather than one long wait that outlasts the
election."""
_RENEW_S = 30.0
"""How long the reader keeps trying to make its consumer before it gives up
(`JetStreamUnavailable`, the projector then restarts from its checkpoint)."""
_INACTIVE_S = 120.0
"""The server removes a reader's consumer this long after the reader is gone (a guard's read
deletes its own when done, `events.bus._latest`: this is its backstop)."""
_FOLLOW_BATCH = 100
"""Records a watch of a few subjects (`follow`) takes at once: they come one or two at a time."""
DUPLICATE_WINDOW_S = 120.0
ROW_HEADROOM = 64 * 1024
"""Bytes of max_payload an event leaves to the read-model row folded from it."""
_TIMEOUT_S = 5.0
_NO_SUITABLE_PEERS = 10005
"""JetStream's error code for a stream it cannot place on as many servers as its replicas."""


class JetStreamEventLog:
    def __init__(self, nc: NATS, js: JetStreamContext, stream: str = EVENTS_STREAM, *,
                 replicas: int | None = None) -> None:
        """`replicas`: the stream's replica count, as `open` found or made it; None (a stream
        opened elsewhere): not known, so consistent reads ask the leader (`LeaderReads`)."""
        self._nc = nc
        self._js = js
        self._stream = stream
        self._pipeline: AckPipeline | None = None
        self._refusals = refusals_of(nc)
        self._leader_reads = LeaderReads(js, stream, replicas)

    @classmethod
    async def open(
        cls, nc: NATS, *, stream: str = EVENTS_STREAM, replicas: int = 1,
        subjects: Sequence[str] | None = None,
    ) -> JetStreamEventLog:
        """Create the stream if missing; check an existing one keeps DESIGN.md invariant 3.

        `subjects`: what the stream takes; a control plane of a multi-zone deployment takes
        only its own (`meshlog.ev.<zone>.>`, events.bus.sources) and gets the others' through
        stream sources, which the check accepts. Without it, the stream is made for every
        subject of the log (standalone), and an existing one may be a standalone or a
        multi-zone control plane's."""
        js = nc.jetstream(timeout=_TIMEOUT_S)
        wanted = StreamConfig(
            name=stream,
            subjects=list(subjects) if subjects else [events_wildcard()],
            storage=StorageType.FILE,
            num_replicas=replicas,
            duplicate_window=DUPLICATE_WINDOW_S,
            deny_delete=True,
            deny_purge=True,
            allow_direct=True,
        )
        try:
            async with refusals_of(nc).guard(f"$JS.API.STREAM.INFO.{stream}",
                                             f"$JS.API.STREAM.CREATE.{stream}"):
                try:
                    info = await js.stream_info(stream)
                except nats.js.errors.NotFoundError:
                    await js.add_stream(wanted)
                    # on a cluster an R1 stream has its group and election too
                    await await_stream_leader(js, stream)
                    have = replicas
                else:
                    check_stream(info.config, wanted, exact=subjects is not None)
                    have = info.config.num_replicas or 1
        except _TRANSIENT as exc:
            raise EventLogUnavailable(
                f"JetStream did not answer for stream {stream}: {exc}") from exc
        except nats.js.errors.APIError as exc:
            if exc.err_code != _NO_SUITABLE_PEERS:
                raise
            # fewer servers up than replicas asked for, or a cluster so new that its meta
            # leader has not heard from every node: unavailable for now, not a bad request
            raise EventLogUnavailable(
                f"JetStream cannot place stream {stream} on {replicas} servers now (err "
                f"{exc.err_code}, {exc.description}): are {replicas} of the cluster's servers "
                "up and routed to each other?") from exc
        return cls(nc, js, stream, replicas=have)

    async def append(
        self,
        subject: str,
        event: AnyEvent,
        *,
        expected_last_subject_seq: int,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> Appended:
        traced = tracer()
        if traced is None or not get_current_span().is_recording():
            return await self._append(subject, event, expected_last_subject_seq, msg_id,
                                      headers)
        # in a sampled trace (an API request's): a span, its context in the message's
        # headers (README, Tracing)
        with traced.start_as_current_span("meshlog.append", kind=SpanKind.PRODUCER,
                                          attributes={"messaging.system": "nats",
                                                      "messaging.destination.name": subject}
                                          ) as span:
            appended = await self._append(subject, event, expected_last_subject_seq, msg_id,
                                          with_trace(headers, span))
            _record_append(span, appended)
            return appended

    async def _append(self, subject: str, event: AnyEvent, expected_last_subject_seq: int,
                      msg_id: str, headers: Mapping[str, str] | None) -> Appended:
        hdrs = _append_headers(msg_id, expected_last_subject_seq, headers)
        data = encode_event(event)
        self._check_size(subject, data, hdrs)
        try:
            async with self._refusals.guard(subject):
                ack = await self._js.publish(
                    subject, data, timeout=_TIMEOUT_S, stream=self._stream, headers=hdrs
                )
        except nats.js.errors.APIError as exc:
            # ServiceUnavailableError is an APIError too
            if exc.err_code == MSG_ID_IN_PROCESS or isinstance(exc, _TRANSIENT):
                raise AppendNotStored(self._not_stored(subject, exc)) from exc
            if not isinstance(exc, nats.js.errors.BadRequestError) or exc.err_code not in _STALE:
                raise
            outcome = await self._stale_or_retried(subject, expected_last_subject_seq, msg_id)
            if isinstance(outcome, Conflict):
                raise outcome from exc
            return outcome
        except _TRANSIENT as exc:
            raise AppendNotStored(self._not_stored(subject, exc)) from exc
        return Appended(seq=ack.seq, duplicate=bool(ack.duplicate))

    def _not_stored(self, subject: str, exc: BaseException) -> str:
        return (f"{_unavailable(self._stream, f'the append to {subject} was not stored', exc)}"
                f". Retry later (with the same Idempotency-Key it is stored at most once)")

    async def append_many(self, appends: Sequence[PendingAppend], *, window: int = 1000
                          ) -> list[Appended | Conflict]:
        """Pipelined appends: up to `window` in flight, each with its Msg-Id and expected
        subject sequence, results in order. A conflict is returned, not raised, so one stale
        item does not hide the others' outcome. Appends to one subject in one call must not
        depend on each other's sequence (they are not ordered by acknowledgement).

        Not `js.publish_async`: in nats-py 2.16 its reply handler raises on a JetStream
        error instead of failing the future, so a rejected append would never resolve."""
        if self._pipeline is None:
            self._pipeline = await AckPipeline.open(self._nc)
        results: list[Appended | Conflict] = []
        for start in range(0, len(appends), window):
            chunk = appends[start:start + window]
            try:
                async with self._refusals.guard(*{item.subject for item in chunk}):
                    futures = [await self._pipeline.publish(item.subject, data, hdrs)
                               for item, data, hdrs in self._sized(chunk)]
                    async with asyncio.timeout(_TIMEOUT_S * 4):
                        acks = await asyncio.gather(*futures)
            except TimeoutError as exc:
                raise AppendNotStored(f"JetStream is unavailable: {len(chunk)} appends not "
                                      f"acknowledged within {_TIMEOUT_S * 4:.0f} s") from exc
            for item, ack in zip(chunk, acks, strict=True):
                results.append(await self._outcome(item, ack))
        return results

    def _sized(self, chunk: Sequence[PendingAppend]
               ) -> list[tuple[PendingAppend, bytes, dict[str, str]]]:
        out = []
        for item in chunk:
            data = encode_event(item.event)
            extra = {"Nats-Expected-Stream": self._stream}
            if item.trace:
                extra.update(item.trace)
            hdrs = _append_headers(item.msg_id, item.expected_last_subject_seq, extra)
            self._check_size(item.subject, data, hdrs)
            out.append((item, data, hdrs))
        return out

    def _check_size(self, subject: str, data: bytes, headers: Mapping[str, str]) -> None:
        """nats-server closes the connection of a client that sends more than max_payload
        (headers included), which would take every other request on it down: refuse here.
        `ROW_HEADROOM` is kept for the read-model row the projector publishes from the event
        (labels, times, conditions added), so an accepted event never makes a row that cannot
        be published."""
        size = len(data) + _headers_size(headers)
        limit = self._nc.max_payload
        if limit and size > limit - ROW_HEADROOM:
            raise TooLarge(f"the event for {subject} is {size} bytes with its headers, more "
                           f"than the {limit - ROW_HEADROOM} an event may take (NATS "
                           f"max_payload {limit}, less {ROW_HEADROOM} for its read-model row)",
                           size=size, limit=limit - ROW_HEADROOM)

    async def at(self, seq: int) -> Record | None:
        try:
            try:
                msg = await self._js.get_msg(self._stream, seq=seq, direct=True)
            except nats.js.errors.NotFoundError:
                # any replica answers a direct get, and a follower may not hold a sequence
                # the leader just acknowledged: only the leader's "not found" is final
                msg = await self._js.get_msg(self._stream, seq=seq)
        except nats.js.errors.NotFoundError:
            return None
        except _TRANSIENT as exc:
            raise JetStreamUnavailable(_unavailable(self._stream, f"cannot read event #{seq}",
                                                   exc)) from exc
        headers = dict(msg.headers or {})
        return Record(seq=msg.seq or seq, subject=msg.subject or "", data=msg.data or b"",
                      headers=headers, schema_version=_schema_of(headers))

    async def _outcome(self, item: PendingAppend, ack: dict[str, Any]
                       ) -> Appended | Conflict:
        error = ack.get("error")
        if error is None:
            return Appended(seq=int(ack["seq"]), duplicate=bool(ack.get("duplicate")))
        if error.get("err_code") in _STALE:
            return await self._stale_or_retried(item.subject, item.expected_last_subject_seq,
                                                item.msg_id)
        if error.get("err_code") == MSG_ID_IN_PROCESS:
            raise AppendNotStored(f"JetStream is unavailable: the append to {item.subject} is "
                                  f"still in process at the stream leader; retry later")
        raise EventLogUnavailable(f"append to {item.subject} refused: {error}")

    async def _stale_or_retried(self, subject: str, expected: int, msg_id: str
                                ) -> Appended | Conflict:
        """After "wrong last sequence": nats-server checks the expected subject sequence
        before de-duplicating, so a retry of an append that was stored (its ack lost) lands
        here too. It is ours if the subject's last message carries our Msg-Id, as the stream
        leader has it (a follower may not hold our message yet)."""
        last = await self.last(subject, consistent=True)
        if last is not None and last.headers.get("Nats-Msg-Id") == msg_id:
            return Appended(seq=last.seq, duplicate=True)
        return Conflict(subject, expected)

    async def last(self, subject: str, *, consistent: bool = False) -> Record | None:
        """The subject's last record. A direct get: any replica answers, also without a
        quorum, and a follower's answer may lack writes the leader has acknowledged. With
        `consistent`, the stream leader's answer, which holds every acknowledged write: on a
        replicated stream `$JS.API.STREAM.MSG.GET`, which only the leader answers (a 503
        without one); on R1 the direct get, whose one replica is the leader (a stream scaled
        up since is noticed within a second, `events.bus._leader_reads`)."""
        try:
            if consistent and await self._leader_reads.needed():
                msg = await retried(lambda: leader_last(self._js, self._stream, subject),
                                    on=_TRANSIENT, for_s=_TIMEOUT_S - LEADER_ATTEMPT_S)
            else:
                msg = await self._js.get_last_msg(self._stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except _TRANSIENT as exc:
            raise JetStreamUnavailable(_unavailable(self._stream, f"cannot read {subject}",
                                                   exc)) from exc
        headers = dict(msg.headers or {})
        return Record(
            seq=msg.seq or 0,
            subject=msg.subject or subject,
            data=msg.data or b"",
            headers=headers,
            schema_version=_schema_of(headers),
        )

    async def latest(self, subject_filter: str) -> list[Record]:
        """The last record of each subject that matches `subject_filter`, holding every write
        acknowledged before the call (what a guard that reads other subjects decides on).

        Read through a consumer (`events.bus._latest`), which nats-server puts on any replica
        of the stream that is up: on a replicated stream a follower's copy may lack writes the
        leader has acknowledged, by a link's latency, or by seconds while a follower that was
        down catches up (a Mesh deleted while the Dataplane registered a moment before was
        missed). So the read is fenced: first the stream leader's last record among those
        subjects (`$JS.API.STREAM.MSG.GET`, with the filter as `last_by_subj`; none: there is
        nothing to read), which every acknowledged write to them precedes. A replica's copy is
        a prefix of the leader's log and the consumer delivers in stream order, so a read that
        reached the fence's sequence holds every write before it; one that did not (its
        replica was behind) is made again with a new consumer (put anew, on a replica further
        on by then), for up to `_TIMEOUT_S`; so is one whose replica did not answer within an
        attempt's bound (`events.bus._latest.fenced_last_per_subject`: a follower catching up
        may hold its consumer's deliveries until it has). On R1 the one replica is the leader:
        no fence, one attempt."""
        return await self._fenced_read(subject_filter, every=False)

    async def history(self, subject: str, *, after: int = 0) -> list[Record]:
        """Every record of `subject` after sequence `after`, oldest first: read and fenced as
        `latest` is, through a consumer that delivers them all (`deliver_policy: all`, or
        from `after` + 1)."""
        return await self._fenced_read(subject, every=True, after=after)

    async def _fenced_read(self, subject_filter: str, *, every: bool, after: int = 0
                           ) -> list[Record]:
        try:
            fence = (await self._leader_last_seq(subject_filter)
                     if await self._leader_reads.needed() else 0)
            if fence is None:
                return []
            if not fence:
                return await last_per_subject(self._nc, self._js, self._stream,
                                              subject_filter, inactive_s=_INACTIVE_S,
                                              timeout_s=_TIMEOUT_S, every=every, after=after)
            if fence <= after:
                return []  # nothing after `after` on the leader: no read to fence
            return await fenced_last_per_subject(
                self._nc, self._js, self._stream, subject_filter, fence,
                inactive_s=_INACTIVE_S, timeout_s=_TIMEOUT_S, every=every, after=after)
        except _TRANSIENT as exc:
            raise JetStreamUnavailable(_unavailable(
                self._stream, f"cannot read {subject_filter}", exc)) from exc

    async def _leader_last_seq(self, subject_filter: str) -> int | None:
        """The sequence of the stream leader's last record among the subjects of the filter;
        None: it has none."""
        try:
            msg = await self._js.get_last_msg(self._stream, subject_filter, direct=False)
        except nats.js.errors.NotFoundError:
            return None
        return msg.seq or 0

    async def last_seq(self) -> int:
        try:
            info = await self._js.stream_info(self._stream)
        except _TRANSIENT as exc:
            raise JetStreamUnavailable(_unavailable(self._stream, "cannot read its last sequence",
                                                   exc)) from exc
        return info.state.last_seq

    def read(self, from_seq: int, *, max_batch: int = 1000) -> AsyncGenerator[list[Record], None]:
        """In-order batches from `from_seq`, then the live tail, forever.

        An ephemeral pull consumer (no acks, one reader: delivery is in stream order) rather
        than a push ordered consumer: a reader slower than the server (a rebuild) makes
        nats-py drop pushed messages, and a dropped flow-control message stalls the push
        consumer for good. With pull the server sends only what was asked for. Batches are
        whole while the last message says more are pending; once caught up, whatever arrives
        is yielded at once (`events.bus._pull`, which also says why not nats-py's `fetch`).

        On a replicated stream the consumer (R1, in memory) lives on one node. While that
        node is down the reader gets nothing; once it is back the server recreates the consumer
        from its first start sequence and delivers the log again from there. So the reader
        keeps the next sequence it owes, and its pull requests ask for idle heartbeats: nothing
        at all for `_SILENT_S` (not even a heartbeat), or a batch that goes back before that
        sequence, means the consumer is not the one it made, and a new one is made at that
        sequence (`OrderedPull.renew`, retried until it is made). Nothing is yielded twice or
        skipped. A consumer can be made while the stream elects a leader (any of its live
        replicas takes it), so a reader whose consumer died with the stream leader has its
        new one before the stream takes writes again.
        """
        return self._read(events_wildcard(), from_seq, max_batch=max_batch)

    def follow(self, subject_filter: str, from_seq: int) -> AsyncGenerator[list[Record], None]:
        """`read` of the subjects matching `subject_filter` only: the same consumer, filtered
        by the server, so a watch on a few subjects is sent nothing else (but heartbeats)."""
        return self._read(subject_filter, from_seq, max_batch=_FOLLOW_BATCH)

    async def _read(self, subject_filter: str, from_seq: int, *, max_batch: int
                    ) -> AsyncGenerator[list[Record], None]:
        next_seq = max(1, from_seq)
        pull = OrderedPull(self._nc, self._js, self._stream, subject_filter,
                           max_batch=max_batch, config=_reader_config,
                           request_timeout=_ATTEMPT_S, heartbeat_s=_HEARTBEAT_S)
        try:
            await self._renew_consumer(pull, next_seq)
            while True:
                batch = await pull.next(_SILENT_S)
                # the reader waits with asyncio.timeout, not wait_for (CPython gh-86296 loses
                # a cancel there on 3.11); checked anyway at every batch, and while it waits
                raise_if_cancelled()
                if batch is None:
                    log.warning("reader of %s heard nothing from its consumer for %.0f s, not "
                                "even a heartbeat: it is gone (its server down or restarted?); "
                                "making a new one at sequence %d", self._stream, _SILENT_S,
                                next_seq)
                    await self._renew_consumer(pull, next_seq)
                    continue
                if batch[0].seq < next_seq:
                    log.warning("reader of %s was sent sequence %d again after %d: its "
                                "consumer was recreated (its server restarted); making a new "
                                "one at %d", self._stream, batch[0].seq, next_seq - 1, next_seq)
                    await self._renew_consumer(pull, next_seq)
                    continue
                next_seq = batch[-1].seq + 1
                yield batch
        finally:
            await pull.close()

    async def _renew_consumer(self, pull: OrderedPull, start_seq: int) -> None:
        """A new consumer at `start_seq`: attempts of `_ATTEMPT_S` each, for `_RENEW_S`."""
        try:
            await retried(lambda: pull.renew(start_seq), on=_TRANSIENT, for_s=_RENEW_S)
        except _TRANSIENT as exc:
            raise JetStreamUnavailable(_unavailable(
                self._stream, f"cannot read from sequence {start_seq}", exc)) from exc


def _reader_config(start_seq: int) -> ConsumerConfig:
    """The reader's consumer: ephemeral, unacknowledged, in memory, on one node."""
    return ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                          opt_start_seq=start_seq, ack_policy=AckPolicy.NONE,
                          inactive_threshold=_INACTIVE_S, mem_storage=True, num_replicas=1)


def _unavailable(stream: str, what: str, exc: BaseException) -> str:
    return unavailable(stream, what, exc, timeout_s=_TIMEOUT_S)


def _record_append(span: Span, appended: Appended) -> None:
    if span.is_recording():
        span.set_attribute("meshlog.seq", appended.seq)
        span.set_attribute("meshlog.duplicate", appended.duplicate)


def _headers_size(headers: Mapping[str, str]) -> int:
    """The size of headers on the wire: `NATS/1.0\r\n`, `key: value\r\n` each, `\r\n`."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def _append_headers(msg_id: str, expected: int, extra: Mapping[str, str] | None
                    ) -> dict[str, str]:
    """Idempotent retry, per-subject optimistic concurrency, schema version: every append."""
    return {**(extra or {}), "Nats-Msg-Id": msg_id,
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            SCHEMA_HEADER: str(SCHEMA_VERSION)}

