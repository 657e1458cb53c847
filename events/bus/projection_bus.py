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
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import NamedTuple

from nats.aio.client import Client as NATS
from nats.js.kv import KeyValue

from events.bus._kv import open_bucket
from events.bus._kv_watch import watch_all
from events.bus._pipeline import AckPipeline
from events.bus.trace_context import current_trace_headers, trace_headers
from events.errors import EventLogUnavailable, LeaseLost

__all__ = ["CHECKPOINT_KEY", "LEASE_PREFIX", "JetStreamProjectionBus", "ProjectionBatch",
           "ProjectionUpdate"]

BUCKET = "meshlog_projections"
CHECKPOINT_KEY = "meta/checkpoint"
LEASE_PREFIX = "meta/lease/"
_WRONG_LAST_SEQUENCE = 10071
_TIMEOUT_S = 5.0

ProjectionUpdate = tuple[str, bytes | None]
"""(key, value); value None = deleted."""


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

    @classmethod
    async def open(cls, nc: NATS, *, bucket: str = BUCKET, replicas: int = 1
                   ) -> JetStreamProjectionBus:
        kv = await open_bucket(nc, bucket, replicas=replicas, what="projection")
        return cls(nc, kv, bucket)

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
        if self._pipeline is None:
            self._pipeline = await AckPipeline.open(self._nc)
        futures = []
        # the batch's trace context rides on its checkpoint message, never in a row
        traced = current_trace_headers()
        for key, value in updates:
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
            acks = await asyncio.wait_for(asyncio.gather(*futures), timeout=_TIMEOUT_S * 4)
        except TimeoutError as exc:
            raise EventLogUnavailable(f"projection publish not acknowledged: {exc!r}") from exc
        refused = [ack["error"] for ack in acks if "error" in ack]
        if fence and any(e.get("err_code") == _WRONG_LAST_SEQUENCE for e in refused):
            raise LeaseLost(f"projection publish refused, the lease moved on: {refused[0]}")
        if refused:
            raise EventLogUnavailable(f"projection publish refused: {refused[0]}")

    async def current(self) -> dict[str, bytes]:
        """Every live read-model key and its value (leases left out)."""
        values = await self.current_with_leases()
        return {k: v for k, v in values.items() if not k.startswith(LEASE_PREFIX)}

    async def current_with_leases(self) -> dict[str, bytes]:
        """Every live key and its value, the projectors' leases included."""
        values: dict[str, bytes] = {}
        async for batch in self.watch():
            for key, value in batch:
                if value is None:
                    values.pop(key, None)
                else:
                    values[key] = value
            return values
        return values

    async def watch(self) -> AsyncIterator[list[ProjectionUpdate]]:
        """First every current value as one batch (possibly empty), then live updates, each
        batch ending at a checkpoint key."""
        async for batch in self.watch_batches():
            yield batch.updates

    async def watch_batches(self) -> AsyncIterator[ProjectionBatch]:
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
            pending.append((entry.key, entry.value))
            if entry.key == CHECKPOINT_KEY and live:
                yield ProjectionBatch(pending, trace_headers(entry.headers))
                pending = []
