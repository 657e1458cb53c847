"""`JetStreamEventLog`: the event log on NATS JetStream. The only module that imports nats.

Rules followed (reference/jetstream-rules.md): one subject per resource; `Nats-Msg-Id` on every
append (idempotent retry); `Nats-Expected-Last-Subject-Sequence` for optimistic concurrency
(a failed check is err_code 10071 and consumes no sequence); reading with an ordered pull
consumer (`events.bus._pull`); the stream's invariants checked at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
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
    RetentionPolicy,
    StorageType,
    StreamConfig,
)

from events.bus._pipeline import AckPipeline
from events.bus._pull import pull_ordered
from events.bus._pull import schema_of as _schema_of
from events.bus.nats_access import (
    Refusals,
    credential_options,
    refusals_of,
    register,
)
from events.codec import SCHEMA_HEADER, SCHEMA_VERSION, encode_event
from events.errors import Conflict, EventLogUnavailable, StreamConfigMismatch, TooLarge
from events.event_types import AnyEvent
from events.log import Appended, PendingAppend, Record
from events.subjects import EVENTS_STREAM, events_wildcard

__all__ = ["JetStreamEventLog", "connect_nats"]

log = logging.getLogger("meshlog.nats")


WRONG_LAST_SEQUENCE = 10071
_IDLE_FETCH_S = 30.0
"""How long a caught-up reader's fetch waits before asking again (nothing is lost)."""
_INACTIVE_S = 120.0
"""The server removes a reader's consumer this long after the reader is gone."""
DUPLICATE_WINDOW_S = 120.0
ROW_HEADROOM = 64 * 1024
"""Bytes of max_payload an event leaves to the read-model row folded from it."""
_TIMEOUT_S = 5.0
_TRANSIENT = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.ConnectionDrainingError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
)


async def connect_nats(url: str, *, name: str, credentials: Path | None = None,
                       reconnect: bool = True,
                       reconnected_cb: nats.aio.client.Callback | None = None) -> NATS:
    """Connect with bounded time; raise EventLogUnavailable naming the URL.

    `credentials`: a NATS `.creds` file or an nkey seed file (`events.bus.nats_access`), for
    a server with permissions per role (README, NATS permissions); None for one without
    authentication. `name` says the role in NATS's monitoring and in the errors of refused
    operations (`NatsPermissionDenied`, also raised here when NATS refuses the credentials).

    `reconnect` (processes that run for long): the first connection is tried until it
    succeeds, and a lost one re-established for ever; `reconnected_cb` is awaited each time.
    Without it (commands): one attempt, and a lost connection stays closed, so the command
    ends with a clear error instead of waiting for a NATS that may never come back."""
    auth = credential_options(credentials)
    refusals = Refusals(name, url, credentials=credentials, quiet=not reconnect)
    nc = NATS()
    try:
        if reconnect:
            await nc.connect(
                url, name=name, connect_timeout=5, allow_reconnect=True,
                max_reconnect_attempts=-1, reconnected_cb=reconnected_cb,
                error_cb=_logging(refusals), **auth)
        else:
            # nats-py tries the first connection for ever unless max_reconnect_attempts > 0
            # (0 does not stop it): one attempt per server, then NoServersError
            await nc.connect(
                url, name=name, connect_timeout=5, allow_reconnect=False,
                max_reconnect_attempts=1,
                # nats-py annotates it int; it is seconds, slept with asyncio.sleep
                reconnect_time_wait=0.1,  # type: ignore[arg-type]
                error_cb=_noting(refusals), **auth)
    except BaseException as exc:
        # a refused connection leaves nats-py's socket open (also when cancelled meanwhile)
        with contextlib.suppress(Exception):
            await nc.close()
        if not isinstance(exc, (OSError, nats.errors.Error, *_TRANSIENT)):
            raise
        if refusals.authorization_refused or refusals.refuses_connection(exc):
            raise refusals.connection_refused() from exc
        raise EventLogUnavailable(f"cannot reach NATS at {url}: {exc}") from exc
    register(nc, refusals)
    return nc


def _noting(refusals: Refusals) -> Callable[[Exception], Awaitable[None]]:
    """A command's error callback: its failure is raised, not logged; refusals are noted
    (for the error raised)."""

    async def on_error(exc: Exception) -> None:
        await refusals.on_error(exc)

    return on_error


def _logging(refusals: Refusals) -> Callable[[Exception], Awaitable[None]]:
    """A long-running connection's error callback: refusals (of a permission, of the
    credentials) are logged by `refusals`; anything else (a failed (re)connection attempt) as
    one line, instead of nats-py's default traceback."""

    async def on_error(exc: Exception) -> None:
        if not await refusals.on_error(exc):
            log.warning("NATS: %s: %s", type(exc).__name__, exc)

    return on_error


class JetStreamEventLog:
    def __init__(self, nc: NATS, js: JetStreamContext, stream: str = EVENTS_STREAM) -> None:
        self._nc = nc
        self._js = js
        self._stream = stream
        self._pipeline: AckPipeline | None = None
        self._refusals = refusals_of(nc)

    @classmethod
    async def open(
        cls, nc: NATS, *, stream: str = EVENTS_STREAM, replicas: int = 1
    ) -> JetStreamEventLog:
        """Create the stream if missing; check an existing one keeps DESIGN.md invariant 3."""
        js = nc.jetstream(timeout=_TIMEOUT_S)
        wanted = StreamConfig(
            name=stream,
            subjects=[events_wildcard()],
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
                else:
                    _check_stream(info.config, wanted)
        except _TRANSIENT as exc:
            raise EventLogUnavailable(
                f"JetStream did not answer for stream {stream}: {exc}") from exc
        return cls(nc, js, stream)

    async def append(
        self,
        subject: str,
        event: AnyEvent,
        *,
        expected_last_subject_seq: int,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> Appended:
        hdrs = _append_headers(msg_id, expected_last_subject_seq, headers)
        data = encode_event(event)
        self._check_size(subject, data, hdrs)
        try:
            async with self._refusals.guard(subject):
                ack = await self._js.publish(
                    subject, data, timeout=_TIMEOUT_S, stream=self._stream, headers=hdrs
                )
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != WRONG_LAST_SEQUENCE:
                raise
            outcome = await self._stale_or_retried(subject, expected_last_subject_seq, msg_id)
            if isinstance(outcome, Conflict):
                raise outcome from exc
            return outcome
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"append to {subject} not acknowledged: {exc!r}") from exc
        return Appended(seq=ack.seq, duplicate=bool(ack.duplicate))

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
                    acks = await asyncio.wait_for(asyncio.gather(*futures),
                                                  timeout=_TIMEOUT_S * 4)
            except TimeoutError as exc:
                raise EventLogUnavailable(f"{len(chunk)} appends not acknowledged") from exc
            for item, ack in zip(chunk, acks, strict=True):
                results.append(await self._outcome(item, ack))
        return results

    def _sized(self, chunk: Sequence[PendingAppend]
               ) -> list[tuple[PendingAppend, bytes, dict[str, str]]]:
        out = []
        for item in chunk:
            data = encode_event(item.event)
            hdrs = _append_headers(item.msg_id, item.expected_last_subject_seq,
                                   {"Nats-Expected-Stream": self._stream})
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
            msg = await self._js.get_msg(self._stream, seq=seq, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"cannot read event #{seq}: {exc!r}") from exc
        headers = dict(msg.headers or {})
        return Record(seq=msg.seq or seq, subject=msg.subject or "", data=msg.data or b"",
                      headers=headers, schema_version=_schema_of(headers))

    async def _outcome(self, item: PendingAppend, ack: dict[str, Any]
                       ) -> Appended | Conflict:
        error = ack.get("error")
        if error is None:
            return Appended(seq=int(ack["seq"]), duplicate=bool(ack.get("duplicate")))
        if error.get("err_code") == WRONG_LAST_SEQUENCE:
            return await self._stale_or_retried(item.subject, item.expected_last_subject_seq,
                                                item.msg_id)
        raise EventLogUnavailable(f"append to {item.subject} refused: {error}")

    async def _stale_or_retried(self, subject: str, expected: int, msg_id: str
                                ) -> Appended | Conflict:
        """After "wrong last sequence": nats-server checks the expected subject sequence
        before de-duplicating, so a retry of an append that was stored (its ack lost) lands
        here too. It is ours if the subject's last message carries our Msg-Id."""
        last = await self.last(subject)
        if last is not None and last.headers.get("Nats-Msg-Id") == msg_id:
            return Appended(seq=last.seq, duplicate=True)
        return Conflict(subject, expected)

    async def last(self, subject: str) -> Record | None:
        try:
            msg = await self._js.get_last_msg(self._stream, subject, direct=True)
        except nats.js.errors.NotFoundError:
            return None
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"cannot read {subject}: {exc!r}") from exc
        headers = dict(msg.headers or {})
        return Record(
            seq=msg.seq or 0,
            subject=msg.subject or subject,
            data=msg.data or b"",
            headers=headers,
            schema_version=_schema_of(headers),
        )

    async def latest(self, subject_filter: str) -> list[Record]:
        """A consumer that delivers the last message per subject (JetStream's
        `deliver_policy: last_per_subject`); its pending count at creation is the number of
        messages to fetch, so an empty answer costs no fetch timeout."""
        try:
            sub = await self._js.pull_subscribe(
                subject_filter, durable=None, stream=self._stream,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
                                      ack_policy=AckPolicy.NONE, inactive_threshold=_INACTIVE_S,
                                      mem_storage=True, num_replicas=1))
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"cannot read {subject_filter}: {exc!r}") from exc
        records: list[Record] = []
        try:
            pending = (await sub.consumer_info()).num_pending
            if pending is None:  # nats-server always sends it; without it nothing is known
                raise EventLogUnavailable(
                    f"cannot read {subject_filter}: consumer info without num_pending")
            while pending > 0:
                msgs = await sub.fetch(batch=min(pending, 1000), timeout=_TIMEOUT_S)
                records.extend(_record(m) for m in msgs)
                pending = msgs[-1].metadata.num_pending if msgs else 0
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"cannot read {subject_filter}: {exc!r}") from exc
        finally:
            with contextlib.suppress(nats.errors.ConnectionClosedError, nats.errors.Error):
                await sub.unsubscribe()
        return records

    async def last_seq(self) -> int:
        try:
            info = await self._js.stream_info(self._stream)
        except _TRANSIENT as exc:
            raise EventLogUnavailable(f"cannot read stream {self._stream}: {exc!r}") from exc
        return info.state.last_seq

    async def read(self, from_seq: int, *, max_batch: int = 1000) -> AsyncIterator[list[Record]]:
        """In-order batches from `from_seq`, then the live tail, forever.

        An ephemeral pull consumer (no acks, one reader: delivery is in stream order) rather
        than a push ordered consumer: a reader slower than the server (a rebuild) makes
        nats-py drop pushed messages, and a dropped flow-control message stalls the push
        consumer for good. With pull the server sends only what was asked for. Batches are
        whole while the last message says more are pending; once caught up, whatever arrives
        is yielded at once (`events.bus._pull`, which also says why not nats-py's `fetch`)."""
        config = ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                                opt_start_seq=max(1, from_seq), ack_policy=AckPolicy.NONE,
                                inactive_threshold=_INACTIVE_S, mem_storage=True,
                                num_replicas=1)
        batches = pull_ordered(self._nc, self._js, self._stream, events_wildcard(),
                               max_batch=max_batch, config=config, request_timeout=_TIMEOUT_S)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                yield batch


def _headers_size(headers: Mapping[str, str]) -> int:
    """The size of headers on the wire: `NATS/1.0\r\n`, `key: value\r\n` each, `\r\n`."""
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


def _append_headers(msg_id: str, expected: int, extra: Mapping[str, str] | None
                    ) -> dict[str, str]:
    """Idempotent retry, per-subject optimistic concurrency, schema version: every append."""
    return {**(extra or {}), "Nats-Msg-Id": msg_id,
            "Nats-Expected-Last-Subject-Sequence": str(expected),
            SCHEMA_HEADER: str(SCHEMA_VERSION)}


def _record(msg: nats.aio.msg.Msg) -> Record:
    headers = dict(msg.headers or {})
    return Record(
        seq=msg.metadata.sequence.stream,
        subject=msg.subject,
        data=msg.data,
        headers=headers,
        schema_version=_schema_of(headers),
    )


def _check_stream(have: StreamConfig, want: StreamConfig) -> None:
    problems = []
    if have.storage != StorageType.FILE:
        problems.append(f"storage is {have.storage}, must be file")
    for flag in ("deny_delete", "deny_purge", "allow_direct"):
        if not getattr(have, flag):
            problems.append(f"{flag} is off, must be on")
    if not set(want.subjects or []) <= set(have.subjects or []):
        problems.append(f"subjects {have.subjects} do not include {want.subjects}")
    if have.retention is not None and have.retention != RetentionPolicy.LIMITS:
        problems.append(f"retention is {have.retention}, must be limits")
    for limit in ("max_age", "max_msgs", "max_bytes", "max_msgs_per_subject"):
        value = getattr(have, limit)
        if value not in (None, 0, -1):
            problems.append(f"{limit} is {value}: events would expire (must be unlimited)")
    if problems:
        raise StreamConfigMismatch(
            f"stream {have.name} breaks the event-log invariants: " + "; ".join(problems)
            + ". Fix the stream (or point meshlog at a new one); meshlog will not change it."
        )
