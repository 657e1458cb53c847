"""`JetStreamProjectionBus`: where projectors publish read-model rows for gateways.

A JetStream KV bucket (history 1, file storage, direct get): the key is `<collection>/<key>`,
the value the row's canonical JSON. Putting the same value again changes no one's view, so
republishing is idempotent (DESIGN.md invariant 5). Each batch ends with the key
`meta/checkpoint` (the stream sequence the rows reflect); watchers apply what they received
only at a checkpoint, so they never see half a batch.

Keys under `meta/lease/` are the projectors' leases (events.bus.lease): they live in this
bucket so that a publish can be fenced by the lease key's revision (one stream). They are
not read-model rows: `current()` leaves them out, and the gateways' view ignores `meta`.

When the projector traces a batch, its checkpoint message carries the W3C trace context in
its headers (`traceparent`), so each gateway's push continues the trace (README, Tracing);
a header is not a value: the rows and the checkpoint are the same with tracing on or off.

A row too big for one NATS message (the servers' `max_payload`, 1 MiB by default: an
endpoints row passes it at ~16,000 endpoints of a one-port service, fewer with more ports) is
stored zlib-compressed behind a prefix no JSON row starts with (`_ZLIB`), and every read
here gives it back as it was. Compressed, it carries roughly ten times as many endpoints.
Only such rows are compressed: every row of up to `max_payload` less 4 KiB (room for the
headers) is stored as before, so gateways of the release before keep reading them during a
rolling upgrade (upgrade the gateways first where a row needs compressing). A row bigger than
`MAX_ROW_BYTES` (64 MiB) is left out like one that does not fit, so that no reader refuses
what was stored. Compressing runs on the publisher's event loop (~5 ms per MiB). A row that does
not fit even so is not sent: the bus logs an error naming it, its size and the limit, and
publishes the rest (and counts it: `meshlog_projection_rows_left_out_total`), so gateways
keep the last version of that one row they had (a service's
endpoints a batch or more old) and every other change still reaches them. Raising
`max_payload` on the servers (up to 64 MiB; NATS advises 8 MiB at most) lifts the limit.

A fenced publish (a lease holder's) is sent as JetStream atomic batches (server >= 2.12,
the bucket's stream with `allow_atomic`; jetstream-rules.md): each batch of up to 1,000
messages is stored whole or not at all, and its first message carries the fence. Not one
fenced message each, pipelined: on a clustered stream (R3) the stream leader refuses a
message with an expected-subject-sequence check while another one checking the same subject
is still in flight (err_code 10164, "wrong last sequence"), so every fenced message after the
first of a pipeline was refused. A bucket made before (without `allow_atomic`, which only an
admin may turn on, on the stream `KV_meshlog_projections`) gets its fenced messages one at a
time, each acknowledged before the next: correct, slower.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any, NamedTuple

import nats.aio.msg
import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from events.bus._kv import atomic_batches_allowed, open_bucket
from events.bus._kv_watch import watch_all
from events.bus._pipeline import AckPipeline
from events.bus._retry import retried
from events.bus.trace_context import current_trace_headers, trace_headers
from events.errors import EventLogUnavailable, LeaseLost

__all__ = ["CHECKPOINT_KEY", "LEASE_PREFIX", "LEFT_OUT", "MAX_ROW_BYTES",
           "JetStreamProjectionBus", "ProjectionBatch", "ProjectionUpdate"]

log = logging.getLogger("meshlog.projection_bus")

BUCKET = "meshlog_projections"
CHECKPOINT_KEY = "meta/checkpoint"
LEASE_PREFIX = "meta/lease/"
_WRONG_LAST_SEQUENCE = 10071
_IN_FLIGHT_CHECK = 10164
"""A clustered stream's refusal of an expected-subject-sequence check while another message
checking the same subject is in flight ("wrong last sequence", no number)."""
_BATCH_MAX = 1000
"""The most messages nats-server takes in one atomic batch."""
_TIMEOUT_S = 5.0
_ATTEMPT_S = 1.0
_CURRENT_S = 10.0

MAX_ROW_BYTES = 64 << 20
"""The biggest row published, and the most a compressed row may give back when read: a bound
on the memory of one read, which the writer keeps too (a bigger row is left out like one
that does not fit a message), so no reader refuses what a projector stored."""
_ZLIB = b"\x00zlib:"
"""Prefix of a compressed row. Rows are JSON objects and the checkpoint a number: neither
starts with a NUL byte."""
LEFT_OUT: collections.Counter[str] = collections.Counter()
"""Rows left out of a publish in this process (too big), by collection: served as
`meshlog_projection_rows_left_out_total` (`services.metrics`)."""
_HEADER_ROOM = 4096
"""Bytes of `max_payload` left to a message's headers (the fence, batch ids, trace)."""

ProjectionUpdate = tuple[str, bytes | None]
"""(key, value); value None = deleted."""


def _loaded(key: str, value: bytes) -> bytes:
    """A value as `_carried` stored it, as it was. A compressed one that is not valid, or would
    give back more than `MAX_ROW_BYTES`, is EventLogUnavailable naming the key (only a
    projector writes the bucket: that is a bug or a foreign writer, never a row to serve)."""
    if not value.startswith(_ZLIB):
        return value
    inflate = zlib.decompressobj()
    try:
        row = inflate.decompress(memoryview(value)[len(_ZLIB):], MAX_ROW_BYTES)
    except zlib.error as exc:
        raise EventLogUnavailable(
            f"projection value {key}: not a valid compressed row ({exc})") from exc
    if inflate.unconsumed_tail or not inflate.eof or inflate.unused_data:
        raise EventLogUnavailable(
            f"projection value {key}: a compressed row that is cut short, followed by other "
            f"bytes, or gives back more than {MAX_ROW_BYTES} bytes")
    return row


async def _opened(key: str, value: bytes) -> bytes:
    """`_loaded`, a compressed row opened in a worker thread (~2 ms per MiB held off the
    watcher's event loop, which serves proxies)."""
    if not value.startswith(_ZLIB):
        return value
    return await asyncio.to_thread(_loaded, key, value)


class ProjectionBatch(NamedTuple):
    """One published batch as a watcher gets it."""

    updates: list[ProjectionUpdate]
    trace: Mapping[str, str] = {}
    """The W3C trace context of the publish (`traceparent`, `tracestate`), when the
    projector traced it; never part of the rows (README, Tracing)."""


class JetStreamProjectionBus:
    def __init__(self, nc: NATS, kv: KeyValue, bucket: str) -> None:
        self._nc = nc
        self._kv = kv
        self._bucket = bucket
        self._pipeline: AckPipeline | None = None
        self._atomic = False
        """The bucket takes atomic batches (made by this meshlog): fenced publishes are
        batches; else (a bucket made before) one fenced message at a time."""

    @classmethod
    async def open(cls, nc: NATS, *, bucket: str = BUCKET, replicas: int = 1
                   ) -> JetStreamProjectionBus:
        kv = await open_bucket(nc, bucket, replicas=replicas, what="projection", atomic=True)
        bus = cls(nc, kv, bucket)
        bus._atomic = await atomic_batches_allowed(nc, bucket)
        return bus

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def kv(self) -> KeyValue:
        """The bucket itself, for the leases kept in it (events.bus.lease)."""
        return self._kv

    async def publish(self, updates: Sequence[ProjectionUpdate], *,
                      fence: dict[str, str] | None = None) -> None:
        """Put or delete every key, pipelined, and wait for all acknowledgements. `fence`:
        headers every message carries (events.bus.lease: the lease key's expected revision);
        a refusal by them is LeaseLost."""
        if fence:
            for batch in await self.fenced_batches(updates):
                await self.publish_batch(batch, fence)
            return
        if self._pipeline is None:
            self._pipeline = await AckPipeline.open(self._nc)
        futures = []
        # the batch's trace context rides on its checkpoint message, never in a row
        traced = current_trace_headers()
        for key, value in await self._carried(updates):
            subject = f"$KV.{self._bucket}.{key}"
            if value is None:
                futures.append(await self._pipeline.publish(
                    subject, b"", {"KV-Operation": "DEL", **(fence or {})}))
            elif traced and key == CHECKPOINT_KEY:
                futures.append(await self._pipeline.publish(subject, value,
                                                            {**(fence or {}), **traced}))
            else:
                futures.append(await self._pipeline.publish(subject, value, dict(fence or {})))
        try:
            async with asyncio.timeout(_TIMEOUT_S * 4):
                acks = await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise EventLogUnavailable(f"projection publish not acknowledged: {exc!r}") from exc
        refused = [ack["error"] for ack in acks if "error" in ack]
        if fence and any(e.get("err_code") == _WRONG_LAST_SEQUENCE for e in refused):
            raise LeaseLost(f"projection publish refused, the lease moved on: {refused[0]}")
        if refused:
            raise EventLogUnavailable(f"projection publish refused: {refused[0]}")

    async def fenced_batches(self, updates: Sequence[ProjectionUpdate]
                             ) -> list[Sequence[ProjectionUpdate]]:
        """How a fenced publish of `updates` is cut: atomic batches of up to 1,000 messages,
        or one message each on a bucket without atomic batches."""
        size = _BATCH_MAX if self._atomic else 1
        carried = await self._carried(updates)
        return [carried[start:start + size] for start in range(0, len(carried), size)]

    async def _carried(self, updates: Sequence[ProjectionUpdate]) -> list[ProjectionUpdate]:
        """`updates` as they are sent: a row too big for a message compressed behind
        `_ZLIB` (in a worker thread: zlib lets go of the GIL, and ~5 ms per MiB would
        otherwise hold the event loop, and the lease renewals on it); one that still is, or
        that is bigger than a reader takes (`MAX_ROW_BYTES`), left out with an error naming
        it (module docstring)."""
        limit = self._nc.max_payload - _HEADER_ROOM
        carried: list[ProjectionUpdate] = []
        for key, value in updates:
            if value is None or len(value) <= limit:
                carried.append((key, value))
                continue
            if len(value) > MAX_ROW_BYTES:
                LEFT_OUT[key.partition("/")[0]] += 1
                log.error("projection row %s not published: %d bytes, more than a reader takes "
                          "(%d); gateways keep its last version.", key, len(value),
                          MAX_ROW_BYTES)
                continue
            stored = _ZLIB + await asyncio.to_thread(zlib.compress, value, 6)
            if len(stored) > limit:
                LEFT_OUT[key.partition("/")[0]] += 1
                log.error("projection row %s not published: %d bytes (%d compressed) exceed "
                          "the NATS servers' max_payload of %d; gateways keep its last "
                          "version. Raise max_payload on the servers to publish it.",
                          key, len(value), len(stored), self._nc.max_payload)
                continue
            carried.append((key, stored))
        return carried

    async def publish_batch(self, updates: Sequence[ProjectionUpdate], fence: dict[str, str],
                            *, timeout_s: float = _TIMEOUT_S * 2) -> None:
        """One atomic batch as `fenced_batches` cut it (big rows already compressed): the
        fence on its first message (the batch is stored whole or not at all), the commit on
        its last, which alone is acknowledged (within `timeout_s`, else EventLogUnavailable).
        One update: a plain fenced publish (no batch headers: also for a bucket without
        atomic batches)."""
        batch_id = uuid.uuid4().hex
        last = len(updates)
        try:
            for number, (key, value) in enumerate(updates, start=1):
                headers = dict(fence) if number == 1 else {}
                if last > 1:
                    headers |= {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(number)}
                if value is None:
                    headers["KV-Operation"] = "DEL"
                subject = f"$KV.{self._bucket}.{key}"
                if number < last:
                    await self._nc.publish(subject, value or b"", headers=headers)
                    continue
                if last > 1:
                    headers["Nats-Batch-Commit"] = "1"
                reply = await self._nc.request(subject, value or b"", timeout=timeout_s,
                                               headers=headers)
        except (TimeoutError, nats.errors.Error) as exc:
            raise EventLogUnavailable(
                f"projection publish not acknowledged: {exc!r}") from exc
        ack = _ack_of(reply)
        error = ack.get("error")
        if error is None:
            return
        if error.get("err_code") in (_WRONG_LAST_SEQUENCE, _IN_FLIGHT_CHECK):
            raise LeaseLost(f"projection publish refused, the lease moved on: {error}")
        raise EventLogUnavailable(f"projection publish refused: {error}")

    async def current(self) -> dict[str, bytes]:
        """Every live read-model key and its value (leases left out)."""
        values = await self.current_with_leases()
        return {k: v for k, v in values.items() if not k.startswith(LEASE_PREFIX)}

    async def current_with_leases(self) -> dict[str, bytes]:
        """Every live key and its value, the projectors' leases included.

        The watch that reads them is made in attempts of `_ATTEMPT_S` (its consumer is made
        in milliseconds when the cluster has a meta leader; while one is being elected, a
        request gets no answer), made again for up to `_CURRENT_S` (`events.bus._retry`),
        instead of one wait of `_TIMEOUT_S` that can outlast the election."""
        js = self._nc.jetstream(timeout=_ATTEMPT_S)
        return await retried(lambda: self._read_current(js),
                             on=(TimeoutError, nats.errors.Error), for_s=_CURRENT_S)

    async def _read_current(self, js: JetStreamContext) -> dict[str, bytes]:
        values: dict[str, bytes] = {}
        watching = watch_all(js, self._bucket, timeout_s=_TIMEOUT_S)
        async with contextlib.aclosing(watching):
            async for entry in watching:
                if entry is None:  # end of the initial values
                    return values
                if entry.value is None:
                    values.pop(entry.key, None)
                else:
                    values[entry.key] = await _opened(entry.key, entry.value)
        return values

    async def watch(self) -> AsyncIterator[list[ProjectionUpdate]]:
        """First every current value as one batch (possibly empty), then live updates, each
        batch ending at a checkpoint key."""
        async for batch in self.watch_batches():
            yield batch.updates

    async def watch_batches(self) -> AsyncGenerator[ProjectionBatch, None]:
        """`watch`, each batch with the trace context its checkpoint message carried."""
        pending: list[ProjectionUpdate] = []
        live = False
        async for entry in watch_all(self._nc.jetstream(timeout=_TIMEOUT_S), self._bucket,
                                     timeout_s=_TIMEOUT_S):
            if entry is None:  # end of the initial values
                live = True
                yield ProjectionBatch(pending)
                pending = []
                continue
            pending.append((entry.key, None if entry.value is None
                            else await _opened(entry.key, entry.value)))
            if entry.key == CHECKPOINT_KEY and live:
                yield ProjectionBatch(pending, trace_headers(entry.headers))
                pending = []


def _ack_of(reply: nats.aio.msg.Msg) -> dict[str, Any]:
    if reply.headers and reply.headers.get("Status") == "503":
        raise EventLogUnavailable("projection publish: no JetStream stream answered")
    try:
        ack = json.loads(reply.data)
    except ValueError as exc:
        raise EventLogUnavailable(f"unreadable JetStream ack: {exc}") from exc
    if not isinstance(ack, dict):
        raise EventLogUnavailable(f"unreadable JetStream ack: {reply.data[:200]!r}")
    return ack
